//! Criterion benchmark of the sketched feature maps: time against the number of inputs `N`
//! (NTKSketch and NTKRF on a relu MLP, `d = 32`, `m = 1024`) and against the number of
//! pixels (CNTKSketch on a conv net with global pooling, images 8×8 to 32×32).
//! Both should grow linearly: every position of every sample is an independent row.
//!
//! `cargo bench --bench features` (criterion prints the time per group member; divide by
//! `N` or by the pixels to see the constant).

// The allocator of the `ntk` binary: the kernels' large temporaries would page-fault afresh
// on every call with glibc's (it returns them to the system).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ntk::infinite::features::{FeatureMap, FeatureMethod, FeatureOptions};
use ntk::nets::{HostArray, NetworkSpec};
use std::time::Duration;

fn inputs(n: usize, per: usize) -> HostArray {
    HostArray::new(
        vec![n, per],
        (0..n * per)
            .map(|i| ((i * 31 + 7) as f64 * 0.173).sin())
            .collect(),
    )
}

fn by_samples(c: &mut Criterion) {
    let spec = NetworkSpec::from_json(
        r#"{"input_shape":[32],"layers":[
        {"type":"dense","width":512,"w_std":1.4142135623730951,"b_std":0.1},{"type":"relu"},
        {"type":"dense","width":512,"w_std":1.4142135623730951,"b_std":0.1},{"type":"relu"},
        {"type":"dense","width":1,"w_std":1.0,"b_std":0.0}]}"#,
    )
    .unwrap();
    let mut group = c.benchmark_group("mlp-features-by-N");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for method in [FeatureMethod::NtkSketch, FeatureMethod::Ntkrf] {
        let map = FeatureMap::new(
            &spec,
            &FeatureOptions {
                method,
                dim: 1024,
                ..Default::default()
            },
        )
        .unwrap();
        for n in [250, 500, 1000, 2000] {
            let x = inputs(n, 32);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(method.name(), n), &x, |b, x| {
                b.iter(|| map.apply(x).unwrap())
            });
        }
    }
    group.finish();
}

fn by_pixels(c: &mut Criterion) {
    let mut group = c.benchmark_group("cntksketch-by-pixels");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for side in [8, 16, 32] {
        let spec = NetworkSpec::from_json(&format!(
            r#"{{"input_shape":[3,{side},{side}],"layers":[
            {{"type":"conv2d","channels":16,"kernel":[3,3],"padding":"same","w_std":1.4142135623730951,"b_std":0.1}},{{"type":"relu"}},
            {{"type":"conv2d","channels":16,"kernel":[3,3],"padding":"same","w_std":1.4142135623730951,"b_std":0.1}},{{"type":"relu"}},
            {{"type":"global_avg_pool"}},{{"type":"dense","width":1,"w_std":1.0,"b_std":0.0}}]}}"#
        ))
        .unwrap();
        let map = FeatureMap::new(
            &spec,
            &FeatureOptions {
                method: FeatureMethod::CntkSketch,
                dim: 256,
                ..Default::default()
            },
        )
        .unwrap();
        let mut x = inputs(8, 3 * side * side);
        x.shape = vec![8, 3, side, side];
        group.throughput(Throughput::Elements((8 * side * side) as u64));
        group.bench_with_input(BenchmarkId::new("pixels", side * side), &x, |b, x| {
            b.iter(|| map.apply(x).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, by_samples, by_pixels);
criterion_main!(benches);
