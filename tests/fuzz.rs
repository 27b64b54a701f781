//! Time-boxed mutation fuzzing on stable Rust, run by `cargo test`: the spec parser (and
//! what runs on an accepted spec: shape analysis, the infinite-width plan, the feature
//! map, a forward pass of small networks), the `.npy` and safetensors readers (with the
//! check of weights against a spec), the option parsers of the CLI, and the CLI itself
//! on random argument lists. Seeds are the malformed corpus and the valid base files;
//! each input gets 1–4 random mutations (bit flips, interesting bytes and numbers,
//! insertions, deletions, duplications, splices with another seed, truncation). Every
//! input must return (an `Ok` or an error), not panic, within a bounded time; memory stays
//! bounded (peak RSS checked at the end).
//!
//! `NTK_FUZZ_SECONDS` (default 20) sets the budget of the in-process targets, split
//! evenly; `NTK_FUZZ_SEED` the random stream (default 1). A failing input is written to
//! `target/fuzz-failures/` and named in the failure. The coverage-guided libFuzzer
//! targets of the same functions are in `fuzz/` (cargo-fuzz).

use ntk::nets::array::parse_npy;
use ntk::nets::weights::{check_against, parse_safetensors};
use ntk::nets::{NetworkConfig, NetworkSpec, Precision};
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed")
}

fn seeds(dir: &str, base: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut v: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .filter(|b| b.len() < 1 << 16)
        .collect();
    let base = std::fs::read(corpus().join(base)).unwrap();
    // The valid base is the most useful seed: give it weight.
    for _ in 0..v.len().max(4) / 4 {
        v.push(base.clone());
    }
    v
}

const INTERESTING_BYTES: &[u8] = b"\x00\xff\x7f\x80-09\"[]{},:.eE \n\\";
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "-0",
    "1e308",
    "1e400",
    "-1e400",
    "NaN",
    "4294967296",
    "18446744073709551616",
    "9223372036854775807",
    "0.5",
    "65536",
    "1000000",
    "3.4e38",
    "null",
    "true",
    "\"x\"",
    "[]",
    "{}",
];

/// Applies 1–4 random mutations.
fn mutate(input: &[u8], seeds: &[Vec<u8>], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = v.len();
        match rng.random_range(0..9) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = INTERESTING_BYTES[rng.random_range(0..INTERESTING_BYTES.len())];
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = (i + rng.random_range(1..64)).min(len);
                v.drain(i..j);
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = (i + rng.random_range(1..64)).min(len);
                let chunk = v[i..j].to_vec();
                let at = rng.random_range(0..=v.len());
                v.splice(at..at, chunk);
            }
            5 => {
                // Replace a run of digits (or insert) with an interesting number.
                let num = INTERESTING_NUMBERS[rng.random_range(0..INTERESTING_NUMBERS.len())];
                let digits: Vec<usize> = (0..len).filter(|&i| v[i].is_ascii_digit()).collect();
                if let Some(&i) = digits.choose(rng) {
                    let mut j = i;
                    while j < len && (v[j].is_ascii_digit() || v[j] == b'.') {
                        j += 1;
                    }
                    v.splice(i..j, num.bytes());
                } else {
                    let at = rng.random_range(0..=len);
                    v.splice(at..at, num.bytes());
                }
            }
            6 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let i = rng.random_range(0..=len);
                    let j = rng.random_range(0..other.len());
                    let k = (j + rng.random_range(1..256)).min(other.len());
                    v.truncate(i);
                    v.extend_from_slice(&other[j..k]);
                }
            }
            7 if len > 0 => v.truncate(rng.random_range(0..len)),
            _ if len >= 8 => {
                // A little-endian u64 overwritten (safetensors' header length, npy sizes).
                let i = rng.random_range(0..=len - 8);
                let value: u64 = match rng.random_range(0..4) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => rng.random_range(0..1 << 20),
                    _ => rng.random(),
                };
                v[i..i + 8].copy_from_slice(&value.to_le_bytes());
            }
            _ => {}
        }
    }
    v
}

/// The outcome of a fuzz target on one input.
enum Outcome {
    Accepted,
    Refused,
}

struct Stats {
    tried: usize,
    accepted: usize,
    slowest: Duration,
}

/// Runs `target` on mutated seeds for `budget`; panics (after saving the input) on a
/// panic inside the target or an input slower than `max_per_input`.
fn fuzz(
    name: &str,
    seeds: &[Vec<u8>],
    budget: Duration,
    rng: &mut ChaCha8Rng,
    target: impl Fn(&[u8]) -> Outcome,
) -> Stats {
    let max_per_input = Duration::from_secs(5);
    let t0 = Instant::now();
    let mut stats = Stats {
        tried: 0,
        accepted: 0,
        slowest: Duration::ZERO,
    };
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while t0.elapsed() < budget {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(seed, seeds, rng);
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| target(&input)));
        let took = t.elapsed();
        stats.tried += 1;
        stats.slowest = stats.slowest.max(took);
        let failure = match &result {
            Err(p) => Some(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
            Ok(_) if took > max_per_input => Some(format!("took {took:?}")),
            Ok(Outcome::Accepted) => {
                stats.accepted += 1;
                None
            }
            Ok(Outcome::Refused) => None,
        };
        if let Some(why) = failure {
            std::panic::set_hook(quiet);
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("{name}-{}.bin", stats.tried));
            std::fs::write(&file, &input).unwrap();
            panic!(
                "fuzz {name}: input {} {why}; saved to {}",
                stats.tried,
                file.display()
            );
        }
    }
    std::panic::set_hook(quiet);
    println!(
        "fuzz {name}: {} inputs in {:.1} s ({} accepted, {} refused with an error), slowest {:.1} ms",
        stats.tried,
        t0.elapsed().as_secs_f64(),
        stats.accepted,
        stats.tried - stats.accepted,
        stats.slowest.as_secs_f64() * 1e3
    );
    stats
}

fn budget() -> (Duration, ChaCha8Rng) {
    let secs: f64 = std::env::var("NTK_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let seed: u64 = std::env::var("NTK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    (
        Duration::from_secs_f64(secs / 4.0),
        ChaCha8Rng::seed_from_u64(seed),
    )
}

fn peak_rss_mib() -> f64 {
    ntk::bench::peak_rss_mib().unwrap_or(0.0)
}

/// Everything that runs on an accepted spec, on small inputs.
fn spec_target(bytes: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Outcome::Refused;
    };
    let Ok(spec) = NetworkSpec::from_json(text) else {
        return Outcome::Refused;
    };
    let (Ok(_), Ok(params)) = (spec.analyse(), spec.n_params()) else {
        return Outcome::Refused;
    };
    let _ = ntk::infinite::plan::Plan::build(&spec, 8);
    let _ = ntk::infinite::features::FeatureMap::new(
        &spec,
        &ntk::infinite::features::FeatureOptions {
            dim: 16,
            ..Default::default()
        },
    );
    let per_sample: usize = spec.input_shape.iter().product();
    if params <= 20_000 && per_sample <= 4096 {
        let device = ntk::nets::BackendKind::Flex.device(Precision::F64).unwrap();
        if let Ok(net) = NetworkConfig::new(spec.clone()).init(&device) {
            let mut shape = vec![2];
            shape.extend_from_slice(&spec.input_shape);
            let x = ntk::nets::HostArray::new(shape, vec![0.5; 2 * per_sample]);
            let _ = net.forward_host(&x);
        }
    }
    Outcome::Accepted
}

#[test]
fn parsers_and_validators_survive_mutated_inputs() {
    let (per_target, mut rng) = budget();
    let mut total = 0;
    total += fuzz(
        "spec",
        &seeds("spec", "base_spec.json"),
        per_target,
        &mut rng,
        spec_target,
    )
    .tried;
    total += fuzz(
        "npy",
        &seeds("npy", "base_x.npy"),
        per_target,
        &mut rng,
        |b| match parse_npy(b) {
            Ok(_) => Outcome::Accepted,
            Err(_) => Outcome::Refused,
        },
    )
    .tried;
    let base = NetworkSpec::from_file(corpus().join("base_spec.json")).unwrap();
    let geometry = base.analyse().unwrap();
    total += fuzz(
        "safetensors",
        &seeds("weights", "base_weights.safetensors"),
        per_target,
        &mut rng,
        |b| match parse_safetensors(b) {
            Ok(params) => match check_against(Path::new("fuzz"), &params, &geometry) {
                Ok(()) => Outcome::Accepted,
                Err(_) => Outcome::Refused,
            },
            Err(_) => Outcome::Refused,
        },
    )
    .tried;
    let options: Vec<Vec<u8>> = [
        "2GiB",
        "512MiB",
        "0/3",
        "2/3",
        "ntksketch:4096,ntkrf:1024",
        "64,256,1024",
        "structured",
        "auto",
        "full",
        "trace",
        "sum-of-logits",
        "f32",
        "flex",
        "cntksketch",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    total += fuzz("options", &options, per_target, &mut rng, |b| {
        let s = String::from_utf8_lossy(b);
        let ok = [
            ntk::infinite_cmd::parse_bytes(&s).is_ok(),
            ntk::empirical::tiles::parse_share(&s).is_ok(),
            ntk::features_cmd::parse_feature_list(&s).is_ok(),
            ntk::compare_cmd::parse_widths(&s).is_ok(),
            ntk::empirical::Method::parse(&s).is_ok(),
            ntk::empirical::KernelKind::parse(&s).is_ok(),
            ntk::infinite::features::FeatureMethod::parse(&s).is_ok(),
            Precision::parse(&s).is_ok(),
            ntk::nets::BackendKind::parse(&s).is_ok(),
        ];
        if ok.iter().any(|&o| o) {
            Outcome::Accepted
        } else {
            Outcome::Refused
        }
    })
    .tried;
    let rss = peak_rss_mib();
    println!("fuzz: {total} inputs in all, peak RSS {rss:.0} MiB");
    assert!(total > 1000, "only {total} inputs tried");
    assert!(rss < 4096.0, "peak RSS {rss} MiB");
}

/// Random argument lists for the CLI: subcommands with flags drawn from every
/// subcommand's vocabulary and hostile values. Exit code 0 (it ran), 1 (an error on the
/// data) or 2 (a usage error) and no panic, in bounded time; output paths in missing
/// folders or on the inputs, tiny memory bounds and inputs whose kernels pass them are
/// among the values, and no run's peak RSS passes 3 GiB.
#[test]
fn the_cli_survives_random_argument_lists() {
    let c = corpus();
    let p = |f: &str| c.join(f).to_string_lossy().into_owned();
    let commands = [
        "forward",
        "empirical",
        "infinite",
        "features",
        "compare",
        "regress",
        "merge",
        "analyze",
        "predict",
        "train",
        "score",
        "bench",
        "demo",
        "nonsense",
    ];
    let flags = [
        "--spec",
        "--x",
        "--x1",
        "--x2",
        "--weights",
        "--out",
        "--method",
        "--kernel",
        "--dtype",
        "--dim",
        "--seed",
        "--max-memory",
        "--tile",
        "--tiles",
        "--tile-rows",
        "--widths",
        "--seeds",
        "--features",
        "--batch",
        "--degree",
        "--epochs",
        "--lr",
        "--data",
        "--y",
        "--n",
        "--specs",
        "--t",
        "--diag-reg",
        "--k-train",
        "--backend",
        "--out-dtype",
        "--checkpoints",
        "--per-layer",
        "--out-other",
        "--plot",
        "--params",
    ];
    let tmp = std::env::temp_dir().join(format!("ntk-fuzz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let out = tmp.join("out.npy").to_string_lossy().into_owned();
    // 1500 inputs of the base spec: a full kernel of 72 MB, above the small bounds below.
    let big = tmp.join("big_x.npy");
    ntk::nets::array::write_npy(
        &big,
        &ntk::nets::HostArray::new(
            vec![1500, 4],
            (0..6000)
                .map(|i| ((i * 37) % 23) as f64 / 11.0 - 1.0)
                .collect(),
        ),
        ntk::nets::FloatKind::F32,
    )
    .unwrap();
    let values: Vec<String> = vec![
        big.to_string_lossy().into_owned(),
        tmp.join("nodir/K.npy").to_string_lossy().into_owned(),
        "1KiB".into(),
        "16MiB".into(),
        p("base_spec.json"),
        p("base_x.npy"),
        p("base_weights.safetensors"),
        p("spec/truncated.json"),
        p("npy/nan.npy"),
        p("weights/garbage.safetensors"),
        out.clone(),
        "-1".into(),
        "0".into(),
        "1e400".into(),
        "NaN".into(),
        "99999999999999999999".into(),
        "0/0".into(),
        "3/2".into(),
        "ntksketch:0".into(),
        "\u{feff}".into(),
        "".into(),
        "/nonexistent/x.npy".into(),
        "1TiB".into(),
        "inf".into(),
        "f16".into(),
        "digits".into(),
        "2".into(),
        "x".repeat(5000),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let budget = Duration::from_secs(8);
    let t0 = Instant::now();
    let mut runs = 0;
    while t0.elapsed() < budget {
        let mut args: Vec<String> = vec![commands[rng.random_range(0..commands.len())].into()];
        for _ in 0..rng.random_range(0..7) {
            args.push(flags[rng.random_range(0..flags.len())].into());
            if rng.random_bool(0.9) {
                args.push(values[rng.random_range(0..values.len())].clone());
            }
        }
        if args[0] == "demo" || args[0] == "bench" || args[0] == "regress" || args[0] == "score" {
            // Valid runs of these do real work: keep them to usage errors.
            args.push("--no-such-flag".into());
        }
        let t = Instant::now();
        // stderr to a file: a pipe read only after exit could fill and block the child.
        let err_path = tmp.join("stderr.txt");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ntk"))
            .args(&args)
            .current_dir(&tmp)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("ntk {args:?} did not finish in 60 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let stderr = String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()).into_owned();
        let code = status.code().unwrap_or(-1);
        assert!(
            matches!(code, 0..=2) && !stderr.contains("panicked"),
            "ntk {args:?}: exit {code}\n{stderr}"
        );
        runs += 1;
    }
    // SAFETY: getrusage fills the struct it is given.
    let children_rss_kib = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    };
    println!(
        "fuzz cli: {runs} argument lists in {:.1} s, largest child peak RSS {} MiB",
        t0.elapsed().as_secs_f64(),
        children_rss_kib / 1024
    );
    assert!(runs > 20, "only {runs} runs");
    assert!(
        children_rss_kib < 3 << 20,
        "a run peaked at {children_rss_kib} KiB"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Mutated ONNX files (the shared onnx cases) and graph specs (docs/graph-specs): import,
/// build and one forward pass, or an error — never a panic, a hang or a huge allocation.
#[test]
fn graph_networks_survive_mutated_files() {
    let (per_target, mut rng) = budget();
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cases");
    let cases = std::env::var("NTK_CASES_DIR")
        .map(PathBuf::from)
        .unwrap_or(cases);
    let onnx: Vec<Vec<u8>> = [
        "onnx-preact-resnet/model.onnx",
        "onnx-tiny-encoder/model_b1.onnx",
    ]
    .iter()
    .map(|f| std::fs::read(cases.join(f)).unwrap())
    .collect();
    let device = ntk::nets::BackendKind::Flex.device(Precision::F64).unwrap();
    let run = |net: ntk::nets::graph::GraphNetwork| {
        let mut shape = vec![2];
        shape.extend(net.input_shape());
        let n: usize = shape.iter().product();
        match net.forward_host(&ntk::nets::HostArray::new(shape, vec![0.25; n])) {
            Ok(_) => Outcome::Accepted,
            Err(_) => Outcome::Refused,
        }
    };
    let mut total =
        fuzz(
            "onnx",
            &onnx,
            per_target,
            &mut rng,
            |b| match ntk::nets::graph::onnx::parse(b, Path::new("fuzz.onnx")) {
                Ok(m) if m.graph.n_params() < 1 << 20 => {
                    match ntk::nets::graph::GraphNetwork::from_params(
                        m.graph,
                        &m.params,
                        &device,
                        Precision::F64,
                    ) {
                        Ok(net) => run(net),
                        Err(_) => Outcome::Refused,
                    }
                }
                _ => Outcome::Refused,
            },
        )
        .tried;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/graph-specs");
    let specs: Vec<Vec<u8>> = std::fs::read_dir(docs)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    total += fuzz("graph-spec", &specs, per_target, &mut rng, |b| {
        let Ok(text) = std::str::from_utf8(b) else {
            return Outcome::Refused;
        };
        // Valid but large networks are real work, not a failure: keep inputs small.
        fn max_number(v: &serde_json::Value) -> f64 {
            match v {
                serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::INFINITY).abs(),
                serde_json::Value::Array(a) => a.iter().map(max_number).fold(0.0, f64::max),
                serde_json::Value::Object(o) => o.values().map(max_number).fold(0.0, f64::max),
                _ => 0.0,
            }
        }
        let small = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                let sizes_ok = max_number(&v["nodes"]) <= 64.0;
                v["input_shape"].as_array().map(|a| {
                    sizes_ok
                        && a.iter()
                            .map(|d| d.as_u64().unwrap_or(u64::MAX))
                            .fold(1u64, |p, d| p.saturating_mul(d))
                            <= 4096
                })
            });
        if small != Some(true) {
            return Outcome::Refused;
        }
        match ntk::nets::graph::spec::parse(text, "fuzz") {
            Ok(s) if s.graph.n_params() < 1 << 20 => match s.random_params(0) {
                Ok(p) => match ntk::nets::graph::GraphNetwork::from_params(
                    s.graph,
                    &p,
                    &device,
                    Precision::F64,
                ) {
                    Ok(net) => run(net),
                    Err(_) => Outcome::Refused,
                },
                Err(_) => Outcome::Refused,
            },
            _ => Outcome::Refused,
        }
    })
    .tried;
    let rss = peak_rss_mib();
    println!("fuzz graphs: {total} inputs, peak RSS {rss:.0} MiB");
    assert!(total > 100, "only {total} inputs tried");
    assert!(rss < 4096.0, "peak RSS {rss} MiB");
}
