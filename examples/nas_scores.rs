//! Training-free NAS scores vs short-training accuracy: 50 random MLP/CNN specs on the
//! bundled digits (and one broken spec, which must come back as an error row), scored at
//! initialisation (TE-NAS condition number, NASI trace norm, label alignment, pNTK
//! statistics) and trained for 3 epochs; Spearman's ρ of each score with the accuracy.
//!
//! `cargo run --release --example nas_scores [OUT_DIR]`

// The allocator of the `ntk` binary (the feature maps and kernels allocate many temporaries).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ntk::studies::nas_scores::{Config, run};

fn main() -> anyhow::Result<()> {
    let mut cfg = Config::default();
    if let Some(dir) = std::env::args().nth(1) {
        cfg.out_dir = dir.into();
    }
    let t0 = std::time::Instant::now();
    let r = run(&cfg, &|done, total| {
        if done % 10 == 0 || done == total {
            eprintln!("… trained {done}/{total}");
        }
    })?;
    let failed: Vec<&str> = r
        .rows
        .iter()
        .filter(|row| row.error.is_some())
        .map(|row| row.name.as_str())
        .collect();
    println!(
        "{} candidates scored ({} failed: {}) and trained {} epochs in {:.1} s; CSV: {}",
        r.rows.len(),
        failed.len(),
        failed.join(", "),
        cfg.epochs,
        t0.elapsed().as_secs_f64(),
        r.csv.display()
    );
    let accs: Vec<f64> = r
        .accuracy
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .copied()
        .collect();
    for (row, a) in r.rows.iter().zip(&r.accuracy) {
        if let (None, Err(e)) = (&row.error, a) {
            eprintln!("{}: {e}", row.name);
        }
    }
    let mean = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
    println!(
        "short-training test accuracy: mean {:.1}% over {} candidates",
        100.0 * mean,
        accs.len()
    );
    println!("| score | Spearman ρ with accuracy |");
    println!("|---|---|");
    for (name, rho) in &r.spearman {
        println!("| {name} | {rho:+.3} |");
    }
    Ok(())
}
