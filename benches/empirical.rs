//! Criterion benchmark of the empirical NTK on the three perf networks of
//! `../shared/cases/perf-*` (spec + x1 + x2, f32, full kernel `[N, N, O, O]`), the work
//! neural-tangents' timings in `perf-anchor.json` measure.
//!
//! `cargo bench --bench empirical` — and `ntk bench --anchor ...` for the table with the
//! neural-tangents ratios, the other methods and the contraction phase's GFLOP/s.
//!
//! Groups: `structured` (x2 = x1 detected: symmetric schedule), `structured-nosym` (x2
//! treated as distinct), `auto`.

// The allocator of the `ntk` binary: the kernels' large temporaries would page-fault afresh
// on every call with glibc's (it returns them to the system).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, criterion_group, criterion_main};
use ntk::empirical::structured::StructuredOptions;
use ntk::empirical::{EmpiricalOptions, KernelKind, Method, empirical_kernel, tile_kernel};
use ntk::nets::array::read_npy;
use ntk::nets::{BackendKind, NetworkConfig, NetworkSpec, Precision};
use std::path::Path;
use std::time::Duration;

fn perf_cases(c: &mut Criterion) {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cases");
    for name in ["perf-mlp", "perf-cnn", "perf-mlp-deep"] {
        let dir = cases.join(name);
        let Ok(spec) = NetworkSpec::from_file(dir.join("spec.json")) else {
            eprintln!("skipping {name}: no {}", dir.display());
            continue;
        };
        let (x1, _) = read_npy(dir.join("x1.npy")).expect("perf inputs");
        let (x2, _) = read_npy(dir.join("x2.npy")).expect("perf inputs");
        let device = BackendKind::Flex.device(Precision::F32).unwrap();
        let net = NetworkConfig::new(spec)
            .with_precision(Precision::F32)
            .init(&device)
            .unwrap();
        let mut group = c.benchmark_group(name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for method in [Method::Structured, Method::Auto] {
            let opts = EmpiricalOptions {
                method,
                kind: KernelKind::Full,
                ..Default::default()
            };
            group.bench_function(method.name(), |b| {
                b.iter(|| empirical_kernel(&net, &x1, Some(&x2), &opts, &mut |_, _| {}).unwrap())
            });
        }
        group.bench_function("structured-nosym", |b| {
            b.iter(|| {
                tile_kernel(
                    &net,
                    &x1,
                    Some(&x2),
                    KernelKind::Full,
                    Method::Structured,
                    StructuredOptions::default(),
                )
                .unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, perf_cases);
criterion_main!(benches);
