//! `ntk bench`: times the empirical-NTK methods on the perf cases (spec + x1 + x2), f32,
//! full kernel, and compares with neural-tangents' timings when an anchor file is given.

use anyhow::{Context, Result};
use burn::tensor::{Tensor, TensorData};
use ntk_empirical::structured::StructuredOptions;
use ntk_empirical::structured::host_gram::{contraction_stats, reset_contraction_stats};
use ntk_empirical::{EmpiricalOptions, KernelKind, Method, empirical_kernel, tile_kernel};
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

/// One timed configuration of the empirical engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// A method through [`empirical_kernel`] with `x2` passed (equal to `x1` on the perf
    /// cases, which the engine detects: symmetric schedule).
    Method(Method),
    /// Structured, `x2` treated as distinct (no symmetry): one tile via `tile_kernel`.
    StructuredNoSymmetry,
    /// Structured with burn tensor ops for the contraction (the GPU path) on the CPU.
    StructuredTensorOps,
}

impl Variant {
    /// Names accepted by [`Variant::parse`].
    pub const NAMES: [&'static str; 6] = [
        "jacobian",
        "ntk-vp",
        "structured",
        "auto",
        "structured-nosym",
        "structured-tensor",
    ];

    pub fn parse(name: &str) -> Result<Variant> {
        Ok(match name {
            "structured-nosym" => Variant::StructuredNoSymmetry,
            "structured-tensor" => Variant::StructuredTensorOps,
            other => Variant::Method(Method::parse(other).map_err(|_| {
                anyhow::anyhow!(
                    "--methods: unknown {other:?} (known: {})",
                    Variant::NAMES.join(", ")
                )
            })?),
        })
    }

    fn label(self) -> &'static str {
        match self {
            Variant::Method(m) => m.name(),
            Variant::StructuredNoSymmetry => "structured, x2 as distinct",
            Variant::StructuredTensorOps => "structured, burn tensor ops",
        }
    }
}

/// Runs the benchmark table.
pub fn run(
    cases_dir: &Path,
    cases: &[String],
    variants: &[Variant],
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
    let burn_peak = matmul_gflops(backend, 1024)?;
    let gemm_peak = ntk_empirical::structured::host_gram::host_gemm_gflops(1024);
    let peak = gemm_peak.max(burn_peak);
    println!(
        "backend {}, f32, full kernel [N, N, O, O], median of {repeats}; f32 matmul 1024^3: gemm crate {gemm_peak:.1} GFLOP/s, through burn {burn_peak:.1} GFLOP/s (the larger is the peak below)",
        backend.name()
    );
    println!(
        "| case | method | ms (median) | ms (min) | NT fastest ms (median) | NT / ours (median) | NT / ours (min / min) | contraction ms | contraction GFLOP | contraction GFLOP/s | % of matmul peak | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for name in cases {
        let dir = cases_dir.join(name);
        let spec = NetworkSpec::from_file(dir.join("spec.json"))?;
        let (x1, _) = read_npy(dir.join("x1.npy"))?;
        let (x2, _) = read_npy(dir.join("x2.npy"))?;
        let device = backend.device(Precision::F32)?;
        let net = NetworkConfig::new(spec)
            .with_precision(Precision::F32)
            .init(&device)?;
        let nt_best = anchor
            .as_ref()
            .and_then(|a| nt_fastest_ms(a, name, "median_s"));
        let nt_best_min = anchor
            .as_ref()
            .and_then(|a| nt_fastest_ms(a, name, "min_s"));
        for &variant in variants {
            let method = match variant {
                Variant::Method(m) => m,
                _ => Method::Structured,
            };
            let opts = EmpiricalOptions {
                method,
                kind: KernelKind::Full,
                max_memory: 16 << 30,
                tensor_contraction: variant == Variant::StructuredTensorOps,
                ..Default::default()
            };
            let fast = matches!(method, Method::Structured | Method::Auto);
            let reps = if fast { repeats } else { 1 };
            let once = || -> Result<Method> {
                Ok(match variant {
                    Variant::StructuredNoSymmetry => {
                        let so = StructuredOptions::default();
                        tile_kernel(&net, &x1, Some(&x2), KernelKind::Full, method, so)?;
                        Method::Structured
                    }
                    _ => empirical_kernel(&net, &x1, Some(&x2), &opts, &mut |_, _| {})?.method,
                })
            };
            let mut used = once()?; // untimed warm-up
            let mut times = Vec::new();
            let mut contraction = Vec::new();
            for _ in 0..reps {
                reset_contraction_stats();
                let t0 = Instant::now();
                used = once()?;
                times.push(t0.elapsed().as_secs_f64());
                contraction.push(contraction_stats());
            }
            let t_min = times.iter().copied().fold(f64::INFINITY, f64::min);
            let t = median(times);
            let (cf, cs) = {
                let mut c = contraction;
                c.sort_by(|a, b| a.1.total_cmp(&b.1));
                c[c.len() / 2]
            };
            let label = if variant == Variant::Method(Method::Auto) {
                format!("auto→{}", used.name())
            } else {
                variant.label().to_string()
            };
            let (c_ms, c_gf, c_rate, c_pct) = if cf > 0.0 {
                (
                    format!("{:.2}", cs * 1e3),
                    format!("{:.2}", cf / 1e9),
                    format!("{:.1}", cf / cs / 1e9),
                    format!("{:.0}%", 100.0 * cf / cs / 1e9 / peak),
                )
            } else {
                ("-".into(), "-".into(), "-".into(), "-".into())
            };
            println!(
                "| {name} | {label} | {:.2} | {:.2} | {} | {} | {} | {c_ms} | {c_gf} | {c_rate} | {c_pct} | {:.0} |",
                t * 1e3,
                t_min * 1e3,
                nt_best.map_or("-".into(), |v| format!("{v:.2}")),
                nt_best.map_or("-".into(), |v| format!("{:.2}x", v / (t * 1e3))),
                nt_best_min.map_or("-".into(), |v| format!("{:.2}x", v / (t_min * 1e3))),
                peak_rss_mib().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}

/// The fastest neural-tangents implementation's `statistic` (`median_s` or `min_s`, in
/// ms) for a case in `perf-anchor.json`.
fn nt_fastest_ms(anchor: &serde_json::Value, case: &str, statistic: &str) -> Option<f64> {
    let mut best: Option<f64> = None;
    let mut visit = |v: &serde_json::Value| {
        if let Some(m) = v.get(statistic).and_then(|m| m.as_f64()) {
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
