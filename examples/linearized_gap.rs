//! Real against linearised training (Lee et al. 2019, "Wide neural networks of any depth
//! evolve as linear models under gradient descent") on the bundled digits.
//!
//! An MLP in the NTK parameterization (64 → w → relu → w → relu → 10, f64) is trained by
//! full-batch gradient descent on `L = ‖f − Y‖² / (2·n·O)` (`ntk::train`, burn's SGD) for
//! `steps` steps at half the largest stable learning rate, `η = n·O / λ_max(Θ₀)` (GD on the
//! linearised model diverges above `2·n·O / λ_max`), next to the linearised network
//! `f_lin(θ, x) = f(θ₀, x) + J(θ₀, x)(θ − θ₀)` trained by the same GD in parameter space
//! (`ntk train --linearized`: JVP forward, VJP gradient). The linear run is checked against
//! the function-space recursion `f ← f − (η / (n·O)) Θ₀(·, train)(f_train − Y)` with the
//! full empirical NTK `Θ₀` at initialisation (`[n·O, n·O]`; exact for GD on a model linear
//! in θ): the "parameter vs function space" column. Reported on the test set, as
//! `ntk analyze --checkpoints REAL --linearized LIN` computes it: the relative gap
//! `‖f_T − f_lin,T‖ / ‖f_T − f₀‖` per width, its log-log slope against the width (the gap
//! is `O(1/√width)`), and a plot (`$TMP/ntk-linearized-gap/linearized_gap.png`, beside
//! the run folders).
//!
//! ```sh
//! cargo run --example linearized_gap -- [widths=128,256,512,1024,2048] [steps=200] [n_train=256] [n_test=128]
//! ```

use ntk::empirical::{EmpiricalOptions, KernelKind, Linearized, Method, empirical_kernel};
use ntk::nets::{BackendKind, HostArray, NetworkConfig, NetworkSpec, Precision};
use ntk::plot::{Panel, Series, write_png};
use ntk::train::{OptimizerKind, Split, TrainOptions, digits_split, train};
use ntk::train_cmd::compare_linearized;

/// `λ_max` of a symmetric positive semi-definite `[m, m]` matrix by power iteration.
fn largest_eigenvalue(a: &[f64], m: usize) -> f64 {
    let mut v = vec![1.0 / (m as f64).sqrt(); m];
    let mut lambda = 0.0;
    for _ in 0..500 {
        let w: Vec<f64> = (0..m)
            .map(|i| (0..m).map(|j| a[i * m + j] * v[j]).sum())
            .collect();
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        let next: f64 = v.iter().zip(&w).map(|(x, y)| x * y).sum();
        v = w.iter().map(|x| x / norm).collect();
        if (next - lambda).abs() <= 1e-12 * next.abs() {
            return next;
        }
        lambda = next;
    }
    lambda
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let widths: Vec<usize> = args
        .first()
        .map_or("128,256,512,1024,2048", |s| s.as_str())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let steps: usize = args.get(1).map_or(Ok(200), |s| s.parse())?;
    let n: usize = args.get(2).map_or(Ok(256), |s| s.parse())?;
    let m: usize = args.get(3).map_or(Ok(128), |s| s.parse())?;
    let digits = digits_split();
    let train_set = digits.train.select(&(0..n).collect::<Vec<_>>());
    let test_set = digits
        .test
        .as_ref()
        .ok_or("the digits have a test split")?
        .select(&(0..m).collect::<Vec<_>>());
    let o = 10;
    let y = train_set.y.matrix(o)?;
    // Train and test inputs together: one kernel, one forward pass.
    let mut all = train_set.x.data.clone();
    all.extend_from_slice(&test_set.x.data);
    let x = HostArray::new(vec![n + m, 64], all);
    let device = BackendKind::Flex.device(Precision::F64)?;
    println!(
        "digits: {n} train / {m} test, {steps} full-batch GD steps at half the largest stable \
         learning rate, NTK parameterization, f64"
    );
    println!(
        "| width | η | train loss real | train loss linearised | test gap ‖f − f_lin‖/‖f − f0‖ | parameter vs function space | s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let out = std::env::temp_dir().join("ntk-linearized-gap");
    std::fs::create_dir_all(&out)?;
    let mut points = Vec::new();
    let mut series = Vec::new();
    for &w in &widths {
        let t0 = std::time::Instant::now();
        let spec = NetworkSpec::from_json(&format!(
            r#"{{"input_shape":[64],"parameterization":"ntk","layers":[
              {{"type":"dense","width":{w},"w_std":1.4142135623730951,"b_std":0.1}},{{"type":"relu"}},
              {{"type":"dense","width":{w},"w_std":1.4142135623730951,"b_std":0.1}},{{"type":"relu"}},
              {{"type":"dense","width":{o},"w_std":1.0,"b_std":0.1}}]}}"#
        ))?;
        let net = NetworkConfig::new(spec.clone())
            .with_seed(0)
            .with_precision(Precision::F64)
            .init(&device)?;
        let f0 = net.forward_host(&x)?.data; // [(n + m)·O]
        let full = empirical_kernel(
            &net,
            &x,
            None,
            &EmpiricalOptions {
                method: Method::Structured,
                kind: KernelKind::Full,
                ..Default::default()
            },
            &mut |_, _| {},
        )?
        .kernel; // [N, N, O, O]
        let big = n + m;
        // Θ as a [(n+m)·O, n·O] matrix: rows (sample, output), columns train (sample, output).
        let cols = n * o;
        let mut theta = vec![0.0; big * o * cols];
        for i in 0..big {
            for j in 0..n {
                for a in 0..o {
                    for b in 0..o {
                        theta[(i * o + a) * cols + j * o + b] =
                            full.data[((i * big + j) * o + a) * o + b];
                    }
                }
            }
        }
        let lambda = largest_eigenvalue(&theta[..cols * cols], cols);
        let lr = cols as f64 / lambda;
        // Linearised GD in function space.
        let mut f_lin = f0.clone();
        for _ in 0..steps {
            let r: Vec<f64> = (0..cols).map(|k| f_lin[k] - y[k]).collect();
            for (row, f) in f_lin.iter_mut().enumerate() {
                let t = &theta[row * cols..(row + 1) * cols];
                let g: f64 = t.iter().zip(&r).map(|(a, b)| a * b).sum();
                *f -= lr / cols as f64 * g;
            }
        }
        // Real GD and GD on the linearised network in parameter space (`ntk train` and
        // `ntk train --linearized`), same loss, data and steps, checkpoints at 0 and T.
        let split = Split {
            train: train_set.clone(),
            test: Some(test_set.clone()),
        };
        let run = |linearized: bool| -> Result<ntk::nets::Network, Box<dyn std::error::Error>> {
            let dir = out.join(format!("{}-{w}", if linearized { "lin" } else { "real" }));
            let _ = std::fs::remove_dir_all(&dir);
            Ok(train(
                &net,
                &split,
                &TrainOptions {
                    optimizer: OptimizerKind::Sgd,
                    lr,
                    epochs: steps,
                    batch_size: None,
                    checkpoint_every: 0,
                    out_dir: Some(dir),
                    linearized,
                    ..Default::default()
                },
                &mut |_, _, _| {},
            )?
            .0)
        };
        let trained = run(false)?;
        let lin_trained = run(true)?;
        let f_t = trained.forward_host(&x)?.data;
        // The parameter-space linear model against the function-space recursion.
        let f_param = Linearized::new(net.clone())
            .forward_host(&lin_trained, &x)?
            .data;
        let scale = f_lin.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let agree = f_param
            .iter()
            .zip(&f_lin)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        // The gap as `ntk analyze --checkpoints REAL --linearized LIN` computes it.
        let cmp = compare_linearized(
            &out.join(format!("real-{w}")),
            &out.join(format!("lin-{w}")),
            &spec,
            &test_set.x,
            &device,
            Precision::F64,
        )?;
        let last = cmp.last().ok_or("a common checkpoint")?;
        let gap = last.output_gap.ok_or("the network moved")?;
        let loss = |f: &[f64]| {
            f[..cols]
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                / (2.0 * cols as f64)
        };
        println!(
            "| {w} | {lr:.3} | {:.4e} | {:.4e} | {:.2}% | {agree:.1e} | {:.1} |",
            loss(&f_t),
            last.train_loss_linearized,
            100.0 * gap,
            t0.elapsed().as_secs_f64()
        );
        points.push(((w as f64).ln(), gap.ln()));
        series.push((w as f64, gap));
    }
    write_png(
        &out.join("linearized_gap.png"),
        &[Panel {
            log_x: false,
            log_y: false,
            title: format!("digits, {steps} GD steps: network vs its linearisation (test set)"),
            x_label: "width".into(),
            y_label: "‖f − f_lin‖ / ‖f − f0‖".into(),
            series: vec![Series {
                y_err: Vec::new(),
                label: "output gap".into(),
                points: series,
            }],
        }],
        (640, 480),
    )?;
    println!("wrote {}", out.join("linearized_gap.png").display());
    if points.len() >= 2 {
        let k = points.len() as f64;
        let (mx, my) = (
            points.iter().map(|p| p.0).sum::<f64>() / k,
            points.iter().map(|p| p.1).sum::<f64>() / k,
        );
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        println!(
            "log-log slope of the gap against the width: {:.3}",
            sxy / sxx
        );
    }
    Ok(())
}
