//! The NTK at initialisation vs after training, on the bundled 8×8 digits: a wide MLP
//! trained by full-batch gradient descent against its NTK-linearised prediction, then a
//! narrower MLP trained by SGD with the kernel distance from init over the epochs, its
//! spectrum, and test accuracy against NTK kernel ridge regression. Writes a PNG.
//!
//! `cargo run --release --example trained_vs_init [OUT_DIR]`

// The allocator of the `ntk` binary (the feature maps and kernels allocate many temporaries).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ntk::studies::trained_vs_init::{Config, run};

fn main() -> anyhow::Result<()> {
    let mut cfg = Config::default();
    if let Some(dir) = std::env::args().nth(1) {
        cfg.out_dir = dir.into();
    }
    let r = run(&cfg, &mut |what| eprintln!("… {what}"))?;
    let l = &r.lazy;
    println!(
        "lazy regime: width {}, {} full-batch GD steps at lr {:.3} (max stable 2N/λmax = {:.3})",
        l.width, l.steps, l.lr, l.max_stable_lr
    );
    println!(
        "  trained outputs vs NTK-linearised prediction: relative deviation {:.4} (test), {:.4} (train)",
        l.test_relative_deviation, l.train_relative_deviation
    );
    println!(
        "  test accuracy: trained {:.1}%, NTK prediction {:.1}%",
        100.0 * l.trained_test_accuracy,
        100.0 * l.ntk_test_accuracy
    );
    println!("SGD training, width {} ({} epochs):", cfg.width, cfg.epochs);
    println!("| epoch | kernel distance from init | trace | effective rank | test accuracy |");
    println!("|---|---|---|---|---|");
    for c in &r.checkpoints.checkpoints {
        let acc = r
            .test_accuracy
            .iter()
            .find(|(e, _)| *e == c.epoch)
            .map(|p| p.1);
        println!(
            "| {} | {:.4} | {:.3e} | {:.2} | {} |",
            c.epoch,
            c.distance_from_init,
            c.trace,
            c.effective_rank,
            acc.map_or("-".into(), |a| format!("{:.1}%", 100.0 * a))
        );
    }
    println!(
        "test accuracy: trained network {:.2}%, NTK regression with the NTK at init {:.2}%, with the trained NTK {:.2}%",
        100.0 * r.trained_test_accuracy,
        100.0 * r.ntk_init_test_accuracy,
        100.0 * r.ntk_trained_test_accuracy
    );
    println!("plot: {}", r.plot.display());
    Ok(())
}
