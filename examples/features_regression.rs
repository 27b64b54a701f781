//! Learning with sketched NTK features, as in the regression/classification experiments of
//! Zandieh et al. (2021): a linear ridge regressor on NTKSketch / NTKRF features of the
//! bundled 8×8 digits (10 classes, one-hot targets, argmax prediction) against exact kernel
//! ridge regression with the infinite-width NTK of the same relu MLP.
//!
//! `cargo run --release --example features_regression` (the same as
//! `ntk regress --data digits --features ntksketch:1024,ntksketch:4096,ntkrf:1024,ntkrf:4096`).

// The allocator of the `ntk` binary (the feature maps and kernels allocate many temporaries).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ntk::features_cmd::{DEFAULT_REGRESSION_SPEC, regress};
use ntk::nets::NetworkSpec;
use ntk::train::builtin;

fn main() -> anyhow::Result<()> {
    let split = builtin("digits")?;
    let spec = NetworkSpec::from_json(&DEFAULT_REGRESSION_SPEC.replace("INPUT", "64"))?;
    let features: Vec<(String, usize)> = [
        "ntksketch:1024",
        "ntksketch:4096",
        "ntkrf:1024",
        "ntkrf:4096",
    ]
    .iter()
    .map(|t| {
        let (m, d) = t.split_once(':').unwrap();
        (m.to_string(), d.parse().unwrap())
    })
    .collect();
    println!(
        "digits: {} train / {} test; relu MLP 64-512-512-1 (ntk parameterization, b_std 0.1); ridge 1e-3 × mean diagonal",
        split.train.x.len(),
        split.test.as_ref().map_or(0, |t| t.x.len())
    );
    let results = regress(&spec, &split, &features, 1e-3, 0, true, 2 << 30)?;
    println!("| model | m | test accuracy | test MSE | seconds |");
    println!("|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {:.2}% | {:.5} | {:.2} |",
            r.model,
            r.dim.map_or("-".into(), |d| d.to_string()),
            100.0 * r.test_accuracy.unwrap_or(f64::NAN),
            r.test_mse,
            r.seconds
        );
    }
    Ok(())
}
