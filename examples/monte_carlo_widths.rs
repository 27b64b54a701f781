//! Monte Carlo kernels against the exact infinite-width NTK on a residual graph spec.
//!
//! A pre-activation residual MLP with a layer norm (NTK parameterization, graph spec) is
//! drawn K times at each width; the relative Frobenius error of the mean of the first K
//! empirical NTKs (`ntk_empirical::monte_carlo_kernel`, traced over outputs) against the
//! exact NTK (`ntk_infinite::graph_kernels`) is tabulated for K = 1, 2, 4, …. While
//! K ≪ width the error is the Monte Carlo noise, `∝ K^(-1/2)`; it levels off at the
//! finite-width bias `‖E[Θ_w] − Θ∞‖ ∝ 1/width`. Both slopes are fitted (least squares in
//! log-log): the noise slope over K ≤ width/16 at the largest width, the bias slope from
//! the largest K at each width, where the noise left is below the bias. The bias itself
//! is also estimated without the noise: split the K kernels into 16 groups; the mean over
//! pairs of groups of `⟨mean_g − Θ∞, mean_h − Θ∞⟩` is unbiased for `‖E[Θ_w] − Θ∞‖²` (the
//! groups are independent), with a jackknife standard error; its slope is fitted over the
//! widths where it is resolved (≥ 3 standard errors).
//!
//! ```sh
//! cargo run --example monte_carlo_widths -- [widths=64,128,256,512,1024] [K=256] [N=6]
//! ```

use ntk::empirical::{EmpiricalOptions, KernelKind, Method, monte_carlo_kernel};
use ntk::infinite::graph_kernels;
use ntk::nets::graph::spec::parse;
use ntk::nets::{BackendKind, HostArray, Precision};
use rayon::prelude::*;

fn residual(w: usize) -> String {
    format!(
        r#"{{"input_shape":[4],"parameterization":"ntk","nodes":[
  {{"name":"fc0","type":"linear","out_features":{w},"w_std":1.2,"b_std":0.1}},
  {{"name":"relu1","type":"relu"}},
  {{"name":"fc1","type":"linear","out_features":{w},"w_std":1.4,"b_std":0.1}},
  {{"name":"relu2","type":"relu"}},
  {{"name":"fc2","type":"linear","out_features":{w},"w_std":1.4,"b_std":0.0}},
  {{"name":"add","type":"add","inputs":["fc2","fc0"]}},
  {{"name":"norm","type":"layer_norm","elementwise_affine":false}},
  {{"name":"relu3","type":"relu"}},
  {{"name":"head","type":"linear","out_features":1,"w_std":1.0,"b_std":0.2}}]}}"#
    )
}

fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}

/// Groups of seeds for the bias estimate.
const GROUPS: usize = 16;

/// An unbiased estimate of `‖E[Θ] − Θ∞‖²` and its jackknife standard error, from the
/// deviations `d_g = mean_g − Θ∞` of independent groups of kernels: the mean over pairs
/// `g < h` of `⟨d_g, d_h⟩` (the noise of independent groups cancels in expectation, unlike
/// in `‖d‖²`, which carries `tr Cov / K` on top of the bias).
fn bias_u_statistic(dev: &[Vec<f64>]) -> (f64, f64) {
    let g = dev.len();
    let dot = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
    let mut c = vec![vec![0.0; g]; g];
    for i in 0..g {
        for j in i + 1..g {
            c[i][j] = dot(&dev[i], &dev[j]);
            c[j][i] = c[i][j];
        }
    }
    let u = |skip: Option<usize>| -> f64 {
        let (mut s, mut m) = (0.0, 0.0);
        for i in 0..g {
            for j in i + 1..g {
                if Some(i) != skip && Some(j) != skip {
                    s += c[i][j];
                    m += 1.0;
                }
            }
        }
        s / m
    };
    let all = u(None);
    let loo: Vec<f64> = (0..g).map(|k| u(Some(k))).collect();
    let mean = loo.iter().sum::<f64>() / g as f64;
    let var = (g as f64 - 1.0) / g as f64 * loo.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
    (all, var.sqrt())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let widths: Vec<usize> = args
        .first()
        .map_or("64,128,256,512,1024", |s| s.as_str())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let k_max: usize = args.get(1).map_or(Ok(256), |s| s.parse())?;
    let n: usize = args.get(2).map_or(Ok(6), |s| s.parse())?;
    // Deterministic inputs on the sphere of radius √d (unit per-feature variance).
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut x: Vec<f64> = (0..n * 4)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    for row in x.chunks_mut(4) {
        let norm = (row.iter().map(|v| v * v).sum::<f64>() / 4.0).sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let x = HostArray::new(vec![n, 4], x);
    let exact = graph_kernels(
        &parse(&residual(8), "residual")?,
        &x,
        None,
        &Default::default(),
    )?;
    let norm: f64 = exact.ntk.data.iter().map(|v| v * v).sum::<f64>().sqrt();
    let device = BackendKind::Flex.device(Precision::F64)?;
    let options = EmpiricalOptions {
        method: Method::Structured,
        kind: KernelKind::Trace,
        ..Default::default()
    };
    let ks: Vec<usize> = (0..)
        .map(|i| 1usize << i)
        .take_while(|&k| k <= k_max)
        .collect();
    println!(
        "relative Frobenius error of the mean of K empirical NTKs vs the exact NTK (N = {n}, f64)"
    );
    print!("{:>7}", "width");
    for k in &ks {
        print!(" {:>9}", format!("K={k}"));
    }
    println!("  seconds   bias (U-statistic, K = {k_max})");
    let mut table = Vec::new();
    // Per width: (bias estimate, its standard error), relative to ‖Θ∞‖.
    let mut biases = Vec::new();
    for &w in &widths {
        let spec = parse(&residual(w), "residual")?;
        let t0 = std::time::Instant::now();
        // Prefix means: the kernels are kept a block at a time; running sums are enough.
        let mut sum = vec![0.0; n * n];
        // Per group g = seed mod GROUPS: the sum of its kernels (for the bias U-statistic).
        let mut groups = vec![vec![0.0; n * n]; GROUPS];
        let mut counts = [0usize; GROUPS];
        let mut errors = Vec::new();
        let seeds: Vec<u64> = (0..k_max as u64).collect();
        for block in seeds.chunks(64) {
            let kernels: Vec<ntk::empirical::Result<HostArray>> = block
                .par_iter()
                .map(|&seed| {
                    let mc = monte_carlo_kernel(
                        &[seed],
                        1,
                        |seed| -> ntk::empirical::Result<HostArray> {
                            let net = ntk::nets::graph::from_spec(
                                spec.clone(),
                                None,
                                seed,
                                &device,
                                Precision::F64,
                            )?;
                            Ok(ntk::empirical::graph::empirical_kernel(
                                &net,
                                &x,
                                None,
                                &options,
                                &mut |_, _| {},
                            )?
                            .kernel)
                        },
                        &mut |_, _| {},
                    )?;
                    Ok(mc.mean)
                })
                .collect();
            for (&seed, k) in block.iter().zip(kernels) {
                let k = k?;
                for (a, b) in sum.iter_mut().zip(&k.data) {
                    *a += b;
                }
                for (a, b) in groups[seed as usize % GROUPS].iter_mut().zip(&k.data) {
                    *a += b;
                }
                counts[seed as usize % GROUPS] += 1;
                let done = seed as usize + 1;
                if ks.contains(&done) {
                    let d: f64 = sum
                        .iter()
                        .zip(&exact.ntk.data)
                        .map(|(s, e)| (s / done as f64 - e).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    errors.push(d / norm);
                }
            }
        }
        print!("{w:>7}");
        for e in &errors {
            print!(" {e:>9.3e}");
        }
        let dev: Vec<Vec<f64>> = groups
            .iter()
            .zip(&counts)
            .filter(|(_, c)| **c > 0)
            .map(|(g, &c)| {
                g.iter()
                    .zip(&exact.ntk.data)
                    .map(|(s, e)| s / c as f64 - e)
                    .collect()
            })
            .collect();
        let (b2, se) = bias_u_statistic(&dev);
        println!(
            "  {:.1}   bias {:.3e} ± {:.1e}",
            t0.elapsed().as_secs_f64(),
            b2.max(0.0).sqrt() / norm,
            se / (2.0 * b2.abs().sqrt().max(f64::MIN_POSITIVE)) / norm
        );
        table.push(errors);
        biases.push((b2, se));
    }
    // Noise slope: at the largest width, K ≤ width/16.
    let (w_last, e_last) = (widths[widths.len() - 1], &table[table.len() - 1]);
    let small: Vec<usize> = (0..ks.len()).filter(|&i| ks[i] * 16 <= w_last).collect();
    if small.len() >= 2 {
        let lx: Vec<f64> = small.iter().map(|&i| (ks[i] as f64).ln()).collect();
        let ly: Vec<f64> = small.iter().map(|&i| e_last[i].ln()).collect();
        println!(
            "noise: slope of log error vs log K at width {w_last}, K ≤ {}: {:.3} (expected -0.5)",
            ks[small[small.len() - 1]],
            slope(&lx, &ly)
        );
    }
    // The bias from the U-statistic, at the widths where it is resolved (≥ 3 standard
    // errors above zero).
    let resolved: Vec<usize> = (0..widths.len())
        .filter(|&i| biases[i].0 > 3.0 * biases[i].1)
        .collect();
    if resolved.len() >= 2 {
        let lx: Vec<f64> = resolved.iter().map(|&i| (widths[i] as f64).ln()).collect();
        let ly: Vec<f64> = resolved
            .iter()
            .map(|&i| 0.5 * biases[i].0.ln() - norm.ln())
            .collect();
        println!(
            "bias ‖E[Θ_w] − Θ∞‖/‖Θ∞‖ (U-statistic over {GROUPS} groups of K/{GROUPS}): slope vs \
             log width over widths {:?}: {:.3} (expected -1)",
            resolved.iter().map(|&i| widths[i]).collect::<Vec<_>>(),
            slope(&lx, &ly)
        );
    } else {
        println!("bias: resolved (≥ 3 standard errors) at fewer than two widths; raise K");
    }
    if widths.len() >= 2 {
        let lx: Vec<f64> = widths.iter().map(|&w| (w as f64).ln()).collect();
        let ly: Vec<f64> = table.iter().map(|e| e[e.len() - 1].ln()).collect();
        println!(
            "bias: slope of log error at K = {} vs log width: {:.3} (expected -1 where the bias \
             dominates the remaining noise)",
            ks[ks.len() - 1],
            slope(&lx, &ly)
        );
    }
    Ok(())
}
