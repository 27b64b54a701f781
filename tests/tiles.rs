//! Resumable and sharded tiled runs, end to end through the `ntk` binary:
//! - kill test: a tiled run SIGKILLed at several points, then resumed, gives a kernel
//!   bit-identical to an uninterrupted run, and no finished tile is computed twice;
//! - sharded test: shares 0/3, 1/3, 2/3 as separate processes, merged, equal the single
//!   run bit for bit;
//! - a folder made for another run is refused.

mod common;

use ntk::nets::HostArray;
use ntk::nets::array::{FloatKind, write_npy};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ntk");

/// A small MLP (the spec of the interchange format) and inputs, in a fresh folder.
fn setup(name: &str, n: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ntk-tiles-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = r#"{"input_shape": [16], "parameterization": "ntk", "layers": [
        {"type": "dense", "width": 128, "w_std": 1.5, "b_std": 0.1}, {"type": "relu"},
        {"type": "dense", "width": 128, "w_std": 1.5, "b_std": 0.1}, {"type": "erf"},
        {"type": "dense", "width": 3, "w_std": 1.0, "b_std": 0.0}]}"#;
    std::fs::write(dir.join("spec.json"), spec).unwrap();
    let mut s = 0x9e3779b97f4a7c15u64;
    let x: Vec<f64> = (0..n * 16)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    write_npy(
        dir.join("x.npy"),
        &HostArray::new(vec![n, 16], x),
        FloatKind::F64,
    )
    .unwrap();
    dir
}

fn ntk(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn run_ok(dir: &Path, args: &[&str]) {
    let out = ntk(dir, args).output().unwrap();
    assert!(
        out.status.success(),
        "ntk {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const KERNEL: [&str; 10] = [
    "empirical",
    "--spec",
    "spec.json",
    "--x1",
    "x.npy",
    "--kernel",
    "full",
    "--tile-rows",
    "12",
    "--method=structured",
];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    KERNEL
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

fn tiles_on_disk(t: &Path) -> usize {
    std::fs::read_dir(t).map_or(0, |r| {
        r.filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("tile-") && n.ends_with(".npy")
            })
            .count()
    })
}

#[test]
fn killed_and_resumed_run_is_bit_identical_and_recomputes_nothing() {
    let dir = setup("kill", 420);
    run_ok(&dir, &with(&["--out", "direct.npy"]));
    // 35 row blocks → 630 tiles on and above the diagonal.
    let total = 35 * 36 / 2;
    let mut partial_kills = 0;
    // Kill points spread over the run; deterministic, different every round.
    for (round, wait_ms) in [60u64, 170, 90, 260, 130, 40].into_iter().enumerate() {
        let before = tiles_on_disk(&dir.join("T"));
        if before == total {
            break;
        }
        let mut child = ntk(&dir, &with(&["--tiles", "T"])).spawn().unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(wait_ms) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let after = tiles_on_disk(&dir.join("T"));
        eprintln!("round {round}: killed after {wait_ms} ms, tiles {before} -> {after}");
        if after > before && after < total {
            partial_kills += 1;
        }
    }
    assert!(
        partial_kills >= 1,
        "no kill landed in the middle of a run; the test proved nothing"
    );
    run_ok(&dir, &with(&["--tiles", "T", "--out", "resumed.npy"]));
    let direct = std::fs::read(dir.join("direct.npy")).unwrap();
    let resumed = std::fs::read(dir.join("resumed.npy")).unwrap();
    assert!(
        direct == resumed,
        "resumed kernel differs from the direct run"
    );
    // No tile computed twice: every line of the log names a distinct tile.
    let log = std::fs::read_to_string(dir.join("T/computed.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let distinct: HashSet<&str> = lines.iter().copied().collect();
    assert_eq!(
        lines.len(),
        distinct.len(),
        "a finished tile was recomputed"
    );
    // A kill between a tile's rename and its log line loses the line, never the tile.
    assert!(lines.len() <= total && lines.len() + 6 >= total);
    assert_eq!(tiles_on_disk(&dir.join("T")), total);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shares_merged_equal_the_single_run_bit_for_bit() {
    let dir = setup("shares", 100);
    run_ok(&dir, &with(&["--out", "direct.npy", "--out-dtype", "f32"]));
    // A merge before all shares are done names the missing tiles.
    run_ok(&dir, &with(&["--tiles", "S", "--tile", "1/3"]));
    let early = ntk(&dir, &["merge", "S", "--out", "early.npy"])
        .output()
        .unwrap();
    assert!(!early.status.success());
    assert!(String::from_utf8_lossy(&early.stderr).contains("not finished"));
    assert!(!dir.join("early.npy").exists());
    for share in ["0/3", "2/3"] {
        run_ok(&dir, &with(&["--tiles", "S", "--tile", share]));
    }
    run_ok(
        &dir,
        &["merge", "S", "--out", "merged.npy", "--out-dtype", "f32"],
    );
    let a = std::fs::read(dir.join("direct.npy")).unwrap();
    let b = std::fs::read(dir.join("merged.npy")).unwrap();
    assert!(a == b, "merged shares differ from the single run");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_folder_of_another_run_is_refused() {
    let dir = setup("mismatch", 30);
    run_ok(&dir, &with(&["--tiles", "M"]));
    let mut other: Vec<&str> = with(&["--tiles", "M"]);
    other[6] = "trace";
    let out = ntk(&dir, &other).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("differs in: kind"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Graph networks (here a pre-norm residual block, weights from its seed) run tiled like
/// sequential ones: shares merged equal the in-memory kernel (to rounding: the tiles group
/// the sums differently), for x2 = x1 and x2 ≠ x1; a folder made with other parameters
/// counted (`--params`) is refused.
#[test]
fn graph_tiles_equal_the_in_memory_kernel() {
    let dir = setup("graph", 1);
    let stax = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graph-stax/prenorm-mlp-block");
    std::fs::copy(stax.join("spec.json"), dir.join("graph.json")).unwrap();
    // 11 samples of [5, 6]: tiles of 4 rows leave a short last block.
    let g1 = common::inputs(&[5, 6], 11, 7);
    write_npy(dir.join("g1.npy"), &g1, FloatKind::F64).unwrap();
    write_npy(
        dir.join("g2.npy"),
        &common::inputs(&[5, 6], 7, 8),
        FloatKind::F64,
    )
    .unwrap();
    let base = [
        "empirical",
        "--spec",
        "graph.json",
        "--x1",
        "g1.npy",
        "--kernel",
        "full",
    ];
    for (x2, name) in [(None, "sym"), (Some("g2.npy"), "cross")] {
        let mut args: Vec<&str> = base.to_vec();
        if let Some(x2) = x2 {
            args.extend(["--x2", x2]);
        }
        let direct = format!("{name}-direct.npy");
        let mut d = args.clone();
        d.extend(["--out", &direct]);
        run_ok(&dir, &d);
        let folder = format!("G-{name}");
        for share in ["0/2", "1/2"] {
            let mut t = args.clone();
            t.extend(["--tile-rows", "4", "--tiles", &folder, "--tile", share]);
            run_ok(&dir, &t);
        }
        // 3 row blocks: 6 tiles on and above the diagonal, or 3 × 2 of x1 against x2.
        assert_eq!(tiles_on_disk(&dir.join(&folder)), 6, "{name}");
        let merged = format!("{name}-merged.npy");
        run_ok(&dir, &["merge", &folder, "--out", &merged]);
        let (a, b) = (
            common::npy(dir.join(&direct)),
            common::npy(dir.join(&merged)),
        );
        // Relative to the in-memory kernel (shapes checked).
        let err = common::rel_err(&b, &a);
        // Tiles of 4 rows against one tile of 11: the same sums, grouped differently.
        assert!(
            err < 1e-12,
            "{name}: merged tiles differ from the in-memory kernel by {err:e}"
        );
    }
    let mut other: Vec<&str> = base.to_vec();
    other.extend(["--tile-rows", "4", "--tiles", "G-sym", "--params", "head"]);
    let out = ntk(&dir, &other).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("differs in: network_sha256"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
