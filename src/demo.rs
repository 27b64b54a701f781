//! The demo `ntk` runs without arguments: the empirical NTK of a random MLP on the bundled
//! digits, NTK regression with it, and a cross-check of the methods.

use anyhow::{Context, Result};
use faer::Mat;
use faer::linalg::solvers::Solve;
use ntk_empirical::{EmpiricalOptions, KernelKind, Method, empirical_kernel};
use ntk_nets::{BackendKind, NetworkConfig, NetworkSpec, Precision};
use std::time::Instant;

/// Runs the demo on `backend` in `dtype`, printing what it computes.
pub fn run(backend: &str, dtype: &str) -> Result<()> {
    let precision = Precision::parse(dtype).context("--dtype")?;
    let device = BackendKind::parse(backend)
        .context("--backend")?
        .device(precision)?;
    let (x, labels) = crate::data::digits();
    let (n_train, n_test) = (1000, 797);
    let train = x.rows(0, n_train);
    let test = x.rows(n_train, n_test);
    println!(
        "ntk demo: bundled 8x8 digits, {n_train} train / {n_test} test samples, backend {backend}, {dtype}"
    );

    let spec = NetworkSpec::builder(&[64])
        .dense(512, 2f64.sqrt(), Some(0.1))
        .relu()
        .dense(512, 2f64.sqrt(), Some(0.1))
        .relu()
        .dense(10, 1.0, Some(0.0))
        .build()?;
    let net = NetworkConfig::new(spec.clone())
        .with_seed(0)
        .with_precision(precision)
        .init(&device)?;
    println!(
        "network: MLP 64-512-512-10, relu, NTK parameterization, {} parameters, seed 0",
        spec.n_params()?
    );

    // Cross-check of the three methods on a few samples.
    let few = x.rows(0, 4);
    let mut kernels = Vec::new();
    for method in [Method::Jacobian, Method::Structured, Method::NtkVp] {
        let t0 = Instant::now();
        let opts = EmpiricalOptions {
            method,
            ..Default::default()
        };
        let k = empirical_kernel(&net, &few, None, &opts, &mut |_, _| {})?.kernel;
        println!(
            "  full NTK [4, 4, 10, 10] by {:<10} {:>8.1} ms",
            method.name(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        kernels.push(k);
    }
    let scale = kernels[0].data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (name, k) in [("structured", &kernels[1]), ("ntk-vp", &kernels[2])] {
        let diff = k
            .data
            .iter()
            .zip(&kernels[0].data)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "  max |{name} - jacobian| / max |jacobian| = {:.2e}",
            diff / scale
        );
    }

    // The traced NTK on the training set and between test and train.
    let opts = EmpiricalOptions {
        kind: KernelKind::Trace,
        ..Default::default()
    };
    let t0 = Instant::now();
    let k_train = empirical_kernel(&net, &train, None, &opts, &mut |_, _| {})?;
    let t_train = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let k_test = empirical_kernel(&net, &test, Some(&train), &opts, &mut |_, _| {})?;
    let t_test = t0.elapsed().as_secs_f64();
    println!(
        "trace NTK (mean over outputs): train [{n_train}, {n_train}] in {t_train:.2} s, test [{n_test}, {n_train}] in {t_test:.2} s ({} method)",
        k_train.method.name()
    );

    // Spectrum of the training kernel.
    let kt = Mat::<f64>::from_fn(n_train, n_train, |i, j| {
        k_train.kernel.data[i * n_train + j]
    });
    let eig = kt
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .map_err(|e| anyhow::anyhow!("eigendecomposition failed: {e:?}"))?;
    let (lmin, lmax) = (eig[0], eig[n_train - 1]);
    let trace: f64 = eig.iter().sum();
    println!(
        "  spectrum: lambda_max {lmax:.4}, lambda_min {lmin:.3e}, condition number {:.3e}, trace {trace:.2}",
        lmax / lmin.max(f64::MIN_POSITIVE)
    );

    // NTK regression (kernel ridge regression on one-hot targets, the t = inf prediction of
    // gradient flow on the linearised network).
    let ridge = 1e-3 * trace / n_train as f64;
    let a = Mat::<f64>::from_fn(n_train, n_train, |i, j| {
        kt[(i, j)] + if i == j { ridge } else { 0.0 }
    });
    let y = Mat::<f64>::from_fn(n_train, 10, |i, c| if labels[i] == c { 0.9 } else { -0.1 });
    let llt = a
        .llt(faer::Side::Lower)
        .map_err(|e| anyhow::anyhow!("Cholesky failed: {e:?}"))?;
    let alpha = llt.solve(&y);
    let mut correct = 0;
    for t in 0..n_test {
        let mut best = (f64::NEG_INFINITY, 0);
        for c in 0..10 {
            let s: f64 = (0..n_train)
                .map(|j| k_test.kernel.data[t * n_train + j] * alpha[(j, c)])
                .sum();
            if s > best.0 {
                best = (s, c);
            }
        }
        if best.1 == labels[n_train + t] {
            correct += 1;
        }
    }
    println!(
        "NTK regression (ridge {ridge:.2e}): test accuracy {:.1}% ({correct}/{n_test})",
        100.0 * correct as f64 / n_test as f64
    );

    // Infinite width: the exact NTK of the same architecture, and sketched features of it.
    let t0 = Instant::now();
    let opts = ntk_infinite::InfiniteOptions::default();
    let exact_train = ntk_infinite::kernels(&spec, &train, None, &opts)?.ntk;
    let exact_test = ntk_infinite::kernels(&spec, &test, Some(&train), &opts)?.ntk;
    let gap =
        ntk_infinite::features::relative_frobenius_error(&k_train.kernel.data, &exact_train.data);
    println!(
        "infinite-width NTK: train and test kernels in {:.2} s; the width-512 empirical NTK is {:.3} off it (relative Frobenius)",
        t0.elapsed().as_secs_f64(),
        gap
    );
    let one_hot: Vec<f64> = labels[..n_train]
        .iter()
        .flat_map(|&l| (0..10).map(move |c| if l == c { 0.9 } else { -0.1 }))
        .collect();
    let ym = ntk_analysis::Matrix::new("one-hot targets", &one_hot, n_train, 10)?;
    let test_labels = &labels[n_train..n_train + n_test];
    let gp = ntk_analysis::predict::GpInference::new(
        ntk_analysis::Matrix::square("exact NTK", &exact_train.data, n_train)?,
        ym,
        ntk_analysis::predict::DiagReg::relative(1e-3),
    )?;
    let pred = gp
        .posterior(
            ntk_analysis::Matrix::new("exact NTK test-train", &exact_test.data, n_test, n_train)?,
            None,
        )?
        .mean;
    println!(
        "  exact NTK regression: test accuracy {:.1}%",
        100.0 * crate::studies::trained_vs_init::accuracy(&pred, 10, test_labels)
    );
    let t0 = Instant::now();
    let map = ntk_infinite::features::FeatureMap::new(
        &spec,
        &ntk_infinite::features::FeatureOptions {
            dim: 2048,
            ..Default::default()
        },
    )?;
    let (f_train, f_test) = (map.apply(&train)?.ntk, map.apply(&test)?.ntk);
    let fit = ntk_analysis::ridge::FeatureRidge::relative(
        ntk_analysis::Matrix::new("features", &f_train.data, n_train, 2048)?,
        ym,
        1e-3,
    )?;
    let pred = fit.predict(ntk_analysis::Matrix::new(
        "test features",
        &f_test.data,
        n_test,
        2048,
    )?)?;
    println!(
        "  NTKSketch features (m = 2048) + linear ridge: test accuracy {:.1}% ({:.2} s)",
        100.0 * crate::studies::trained_vs_init::accuracy(&pred, 10, test_labels),
        t0.elapsed().as_secs_f64()
    );
    println!(
        "next: `ntk --help`; `ntk empirical --spec S.json --x1 X.npy --out K.npy`; `ntk compare`, `ntk features`, `ntk train`, `ntk score`"
    );
    Ok(())
}
