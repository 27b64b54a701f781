//! `ntk bench`: times the empirical-NTK methods on the perf cases (spec + x1 + x2), f32,
//! full kernel, and compares with neural-tangents' timings when an anchor file is given.

use anyhow::{Context, Result};
use burn::tensor::{Tensor, TensorData};
use ntk_empirical::{EmpiricalOptions, KernelKind, Method, cost, empirical_kernel};
use ntk_nets::array::read_npy;
use ntk_nets::{BackendKind, NetworkConfig, NetworkSpec, Precision};
use std::path::Path;
use std::time::Instant;

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Measured f32 matmul throughput of the backend (GFLOP/s), `n×n` by `n×n`.
pub fn matmul_gflops(backend: BackendKind, n: usize) -> Result<f64> {
    let device = backend.device(Precision::F32)?;
    let data: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let a = Tensor::<2>::from_data(
        TensorData::new(data.clone(), [n, n]),
        (&device, burn::tensor::DType::F32),
    );
    let b = Tensor::<2>::from_data(
        TensorData::new(data, [n, n]),
        (&device, burn::tensor::DType::F32),
    );
    let _ = a.clone().matmul(b.clone()).into_data();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let _ = a.clone().matmul(b.clone()).into_data();
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / median(times) / 1e9)
}

/// Runs the benchmark table.
pub fn run(
    cases_dir: &Path,
    cases: &[String],
    methods: &[Method],
    backend: BackendKind,
    repeats: usize,
    anchor: Option<&Path>,
) -> Result<()> {
    let anchor: Option<serde_json::Value> = match anchor {
        Some(p) => Some(serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?),
        None => None,
    };
    let peak = matmul_gflops(backend, 1024)?;
    println!(
        "backend {}, f32, full kernel [N, N, O, O], median of {repeats}; matmul 1024^3 peak: {peak:.1} GFLOP/s",
        backend.name()
    );
    println!(
        "| case | method | ms | model GFLOP | GFLOP/s | % of matmul peak | NT fastest ms | NT / ours | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for name in cases {
        let dir = cases_dir.join(name);
        let spec = NetworkSpec::from_file(dir.join("spec.json"))?;
        let (x1, _) = read_npy(dir.join("x1.npy"))?;
        let (x2, _) = read_npy(dir.join("x2.npy"))?;
        let device = backend.device(Precision::F32)?;
        let net = NetworkConfig::new(spec)
            .with_precision(Precision::F32)
            .init(&device)?;
        let nt_best = anchor.as_ref().and_then(|a| nt_fastest_ms(a, name));
        for &method in methods {
            let opts = EmpiricalOptions {
                method,
                kind: KernelKind::Full,
                max_memory: 16 << 30,
                ..Default::default()
            };
            let reps = if method == Method::Structured || method == Method::Auto {
                repeats
            } else {
                1
            };
            let mut times = Vec::new();
            let mut used = method;
            // one untimed warm-up
            let _ = empirical_kernel(&net, &x1, Some(&x2), &opts, &mut |_, _| {})?;
            for _ in 0..reps {
                let t0 = Instant::now();
                let k = empirical_kernel(&net, &x1, Some(&x2), &opts, &mut |_, _| {})?;
                times.push(t0.elapsed().as_secs_f64());
                used = k.method;
            }
            let t = median(times);
            let (n1, n2) = (x1.len(), x2.len());
            let flops = match used {
                Method::Jacobian => cost::jacobian_flops(&net, n1, n2, KernelKind::Full),
                Method::NtkVp => cost::ntk_vp_flops(&net, n1, n2, KernelKind::Full),
                _ => cost::structured_flops(&net, n1, n2, KernelKind::Full),
            };
            let label = if method == Method::Auto {
                format!("auto→{}", used.name())
            } else {
                used.name().to_string()
            };
            println!(
                "| {name} | {label} | {:.2} | {:.2} | {:.1} | {:.0}% | {} | {} | {:.0} |",
                t * 1e3,
                flops / 1e9,
                flops / t / 1e9,
                100.0 * flops / t / 1e9 / peak,
                nt_best.map_or("-".into(), |v| format!("{v:.2}")),
                nt_best.map_or("-".into(), |v| format!("{:.2}x", v / (t * 1e3))),
                peak_rss_mib().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}

/// The fastest neural-tangents implementation's median (ms) for a case in `perf-anchor.json`.
fn nt_fastest_ms(anchor: &serde_json::Value, case: &str) -> Option<f64> {
    let mut best: Option<f64> = None;
    let mut visit = |v: &serde_json::Value| {
        if let Some(m) = v.get("median_s").and_then(|m| m.as_f64()) {
            best = Some(best.map_or(m * 1e3, |b: f64| b.min(m * 1e3)));
        }
    };
    let c = anchor.get("cases")?.get(case)?;
    match c.get("neural_tangents").unwrap_or(c) {
        serde_json::Value::Object(m) => m.values().for_each(&mut visit),
        serde_json::Value::Array(a) => a.iter().for_each(&mut visit),
        _ => {}
    }
    best
}
