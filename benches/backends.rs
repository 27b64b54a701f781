//! Forward + backward of the perf networks on burn's two CPU backends (flex, ndarray), f32.
//! The faster one is the default backend (`BackendKind::default()`).
//!
//! `cargo bench --bench backends` (prints a table; ratios are from one run).

// The allocator of the `ntk` binary: the kernels' large temporaries would page-fault afresh
// on every call with glibc's (it returns them to the system).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ntk::nets::array::read_npy;
use ntk::nets::{BackendKind, NetworkConfig, NetworkSpec, Precision};
use std::path::Path;
use std::time::Instant;

fn main() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cases");
    println!("| case | flex ms | ndarray ms | ndarray / flex |");
    println!("|---|---|---|---|");
    for name in ["perf-mlp", "perf-cnn", "perf-mlp-deep"] {
        let dir = cases.join(name);
        let spec = NetworkSpec::from_file(dir.join("spec.json")).expect("perf spec");
        let (x, _) = read_npy(dir.join("x1.npy")).expect("perf inputs");
        let mut times = Vec::new();
        for backend in [BackendKind::Flex, BackendKind::Ndarray] {
            let device = backend.device(Precision::F32).unwrap().autodiff();
            let net = NetworkConfig::new(spec.clone())
                .with_precision(Precision::F32)
                .init(&device)
                .unwrap();
            let run = || {
                let y = net.forward(net.input(&x, &device).unwrap());
                let grads = y.sum().backward();
                let mut n = 0usize;
                for l in &net.layers {
                    if let ntk::nets::Layer::Dense(d) = l {
                        n += d.weight.val().grad(&grads).map_or(0, |g| g.dims()[0]);
                    }
                }
                n
            };
            run();
            let reps = 10;
            let t0 = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(run());
            }
            times.push(t0.elapsed().as_secs_f64() / reps as f64 * 1e3);
        }
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            times[0],
            times[1],
            times[1] / times[0]
        );
    }
}
