//! Sketch quality: relative Frobenius error of `⟨ψ(x), ψ(y)⟩` against the exact
//! infinite-width NTK on random unit vectors, for relu MLPs of `L` hidden layers, at several
//! feature dimensions, with the time per input of each feature map (applying a built map
//! to the batch, after a warm-up).
//!
//! `cargo run --release --example sketch_quality -- [N] [d] [dims] [depths] [methods] [seeds]`
//! (defaults `500 32 1024,4096,16384 1,3 ntkrf,ntksketch 1`), then the polynomial degree.

// The allocator of the `ntk` binary (the feature maps and kernels allocate many temporaries).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ntk::infinite::features::{
    FeatureMap, FeatureMethod, FeatureOptions, feature_kernel, relative_frobenius_error,
};
use ntk::infinite::{InfiniteOptions, kernels};
use ntk::nets::{HostArray, NetworkSpec};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Instant;

fn spec(d: usize, depth: usize) -> NetworkSpec {
    let mut layers = Vec::new();
    for _ in 0..depth {
        layers.push(r#"{"type":"dense","width":512,"w_std":1.4142135623730951,"b_std":null},{"type":"relu"}"#.to_string());
    }
    layers.push(r#"{"type":"dense","width":1,"w_std":1.0,"b_std":null}"#.to_string());
    NetworkSpec::from_json(&format!(
        r#"{{"input_shape":[{d}],"layers":[{}]}}"#,
        layers.join(",")
    ))
    .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let n: usize = arg(0, "500").parse().unwrap();
    let d: usize = arg(1, "32").parse().unwrap();
    let list = |s: String| -> Vec<String> { s.split(',').map(|t| t.to_string()).collect() };
    let dims: Vec<usize> = list(arg(2, "1024,4096,16384"))
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let depths: Vec<usize> = list(arg(3, "1,3"))
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let methods: Vec<FeatureMethod> = list(arg(4, "ntkrf,ntksketch"))
        .iter()
        .map(|t| FeatureMethod::parse(t).unwrap())
        .collect();
    let seeds: u64 = arg(5, "1").parse().unwrap();
    let degree: usize = arg(6, &ntk::infinite::features::DEFAULT_DEGREE.to_string())
        .parse()
        .unwrap();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2021);
    let mut data = vec![0.0; n * d];
    for row in data.chunks_mut(d) {
        row.iter_mut()
            .for_each(|v| *v = StandardNormal.sample(&mut rng));
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let x = HostArray::new(vec![n, d], data);
    println!(
        "{n} random unit vectors in d = {d}; relu MLP, no biases, ntk parameterization; mean over {seeds} seed(s)"
    );
    println!("| L | method | m | NTK rel. Frobenius error | NNGP rel. error | ms per input |");
    println!("|---|---|---|---|---|---|");
    for &depth in &depths {
        let s = spec(d, depth);
        let exact = kernels(&s, &x, None, &InfiniteOptions::default()).unwrap();
        for &method in &methods {
            for &dim in &dims {
                let (mut e_ntk, mut e_nngp, mut secs) = (0.0, 0.0, 0.0);
                for seed in 0..seeds {
                    let map = FeatureMap::new(
                        &s,
                        &FeatureOptions {
                            method,
                            dim,
                            seed,
                            degree,
                        },
                    )
                    .unwrap();
                    // Time the map on the inputs, after a warm-up (the random parameters
                    // are drawn once per map and shared by every batch).
                    map.apply(&x.rows(0, 16)).unwrap();
                    let t0 = Instant::now();
                    let f = map.apply(&x).unwrap();
                    secs += t0.elapsed().as_secs_f64();
                    let k = |a: &HostArray| feature_kernel(a, a).unwrap().data;
                    e_ntk += relative_frobenius_error(&k(&f.ntk), &exact.ntk.data);
                    e_nngp += relative_frobenius_error(&k(&f.nngp), &exact.nngp.data);
                }
                let k = seeds as f64;
                println!(
                    "| {depth} | {} | {dim} | {:.4} | {:.4} | {:.3} |",
                    method.name(),
                    e_ntk / k,
                    e_nngp / k,
                    secs / k / n as f64 * 1e3
                );
            }
        }
    }
}
