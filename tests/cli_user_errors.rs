//! What a new user hits, through the binary: output paths checked before any work (every
//! command that writes a file), I/O errors said once and naming the missing folder,
//! negative numbers reaching the value parsers, a closed pipe ending the command quietly.

mod common;

use common::cases_dir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn dir(name: &str) -> PathBuf {
    common::scratch("ntk-user-errors", name)
}

/// Deterministic inputs `[n, width]` in [-1, 1) ([`common::inputs`]), written as f32 to
/// `d/x.npy`.
fn write_inputs(d: &Path, n: usize, width: usize) -> PathBuf {
    let xp = d.join("x.npy");
    let x = common::inputs(&[width], n, 0);
    ntk::nets::array::write_npy(&xp, &x, ntk::nets::FloatKind::F32).unwrap();
    xp
}

fn ntk(args: &[&str]) -> Output {
    common::run_ntk(args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The f64 trace kernel of the mlp-relu case on its x1, written to `out`.
fn trace_kernel(out: &Path) {
    let case = cases_dir().join("mlp-relu");
    let o = ntk(&[
        "empirical",
        "--spec",
        s(&case.join("spec.json")),
        "--x1",
        s(&case.join("x1.npy")),
        "--kernel",
        "trace",
        "--out",
        s(out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every command that writes a file refuses a missing folder and an output that is one of
/// its inputs before it computes anything (the kernel below would take minutes), and leaves
/// no file behind.
#[test]
fn every_output_path_is_checked_before_the_work() {
    let case = cases_dir().join("mlp-relu");
    let spec = case.join("spec.json");
    let x = case.join("x1.npy");
    let d = dir("paths");
    let missing = d.join("no-such-folder/out.npy");
    let k = d.join("K.npy");
    trace_kernel(&k);
    let y = d.join("y.npy");
    ntk::nets::array::write_npy(
        &y,
        &ntk::nets::HostArray::new(vec![6], vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]),
        ntk::nets::FloatKind::F64,
    )
    .unwrap();
    let tiles = d.join("tiles");
    std::fs::create_dir_all(&tiles).unwrap();
    // (command line with OUT where the output goes, the input it could overwrite)
    let commands: Vec<(Vec<&str>, &Path)> = vec![
        (
            vec!["forward", "--spec", s(&spec), "--x", s(&x), "--out", "OUT"],
            &x,
        ),
        (
            vec![
                "empirical",
                "--spec",
                s(&spec),
                "--x1",
                s(&x),
                "--out",
                "OUT",
            ],
            &x,
        ),
        (
            vec![
                "infinite",
                "--spec",
                s(&spec),
                "--x1",
                s(&x),
                "--out",
                "OUT",
            ],
            &spec,
        ),
        (
            vec!["features", "--spec", s(&spec), "--x", s(&x), "--out", "OUT"],
            &x,
        ),
        (
            vec!["compare", "--spec", s(&spec), "--x1", s(&x), "--out", "OUT"],
            &spec,
        ),
        (
            vec![
                "predict",
                "--k-train",
                s(&k),
                "--k-test",
                s(&k),
                "--y",
                s(&y),
                "--out",
                "OUT",
            ],
            &k,
        ),
        (vec!["analyze", "--kernel", s(&k), "--json", "OUT"], &k),
        (vec!["analyze", "--kernel", s(&k), "--plot", "OUT"], &k),
        (vec!["merge", s(&tiles), "--out", "OUT"], &k),
    ];
    for (args, input) in commands {
        let with = |out: &Path| -> Vec<String> {
            args.iter()
                .map(|a| {
                    if *a == "OUT" {
                        s(out).to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect()
        };
        let run = |out: &Path| {
            let a = with(out);
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            ntk(&refs)
        };
        let o = run(&missing);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no-such-folder does not exist"),
            "{args:?}: {}",
            stderr(&o)
        );
        if args[0] != "merge" {
            let before = std::fs::read(input).unwrap();
            let o = run(input);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains("would overwrite"),
                "{args:?}: {}",
                stderr(&o)
            );
            assert_eq!(std::fs::read(input).unwrap(), before, "{args:?}");
        }
        let o = run(&d);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("is a folder"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

/// A missing input file is reported once, with its path (not "… (os error 2): … (os error
/// 2)").
#[test]
fn io_errors_are_said_once() {
    let case = cases_dir().join("mlp-relu");
    let d = dir("io");
    let out = d.join("K.npy");
    for args in [
        vec![
            "empirical",
            "--spec",
            s(&case.join("spec.json")),
            "--x1",
            "missing-x.npy",
            "--out",
            s(&out),
        ],
        vec!["analyze", "--kernel", "missing-k.npy"],
    ] {
        let o = ntk(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(e.contains("missing-"), "{e}");
        assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    }
    std::fs::remove_dir_all(&d).ok();
}

/// `--dim -5`, `--t -1`: the value parsers say what is wrong (not "unexpected argument").
#[test]
fn negative_numbers_reach_the_value_parsers() {
    let o = ntk(&[
        "features", "--spec", "s.json", "--x", "x.npy", "--dim", "-5", "--out", "f.npy",
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("invalid value '-5' for '--dim"), "{e}");
    assert!(!e.contains("unexpected argument"), "{e}");
}

/// `ntk analyze … | head -1`: the reader going away ends the command without a panic.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let d = dir("pipe");
    let k = d.join("K.npy");
    trace_kernel(&k);
    for _ in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ntk"))
            .args(["analyze", "--kernel", s(&k), "--top-k", "6"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before the first line
        let o = child.wait_with_output().unwrap();
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{e}");
        assert_ne!(o.status.code(), Some(101), "{e}");
    }
    std::fs::remove_dir_all(&d).ok();
}

/// `ntk train` with default flags learns the bundled digits (≥ 90 % test accuracy within
/// its default 20 epochs) for an MLP and a small CNN, and refuses a folder that holds an
/// earlier run unless --overwrite (then only the new run's checkpoints remain).
#[test]
fn train_defaults_learn_digits_and_runs_do_not_mix() {
    let d = dir("train");
    let specs = [
        r#"{"input_shape":[64],"layers":[{"type":"dense","width":128},{"type":"relu"},{"type":"dense","width":10}]}"#,
        r#"{"input_shape":[1,8,8],"layers":[{"type":"conv2d","channels":8,"kernel":[3,3],"padding":"same"},{"type":"relu"},{"type":"flatten"},{"type":"dense","width":10}]}"#,
    ];
    for (i, spec) in specs.iter().enumerate() {
        let sp = d.join(format!("spec{i}.json"));
        std::fs::write(&sp, spec).unwrap();
        let out = d.join(format!("run{i}"));
        let o = ntk(&[
            "train",
            "--spec",
            s(&sp),
            "--data",
            "digits",
            "--out",
            s(&out),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
        assert_eq!(last["epoch"], 20);
        let acc = last["test_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.9, "spec {i}: test accuracy {acc}");
    }
    let sp = d.join("spec0.json");
    let out = d.join("run0");
    let o = ntk(&[
        "train",
        "--spec",
        s(&sp),
        "--data",
        "digits",
        "--epochs",
        "2",
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("holds an earlier run"),
        "{}",
        stderr(&o)
    );
    let o = ntk(&[
        "train",
        "--spec",
        s(&sp),
        "--data",
        "digits",
        "--epochs",
        "2",
        "--overwrite",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let n = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("epoch-")
        })
        .count();
    assert_eq!(n, 3, "epochs 0, 1, 2 only");
    std::fs::remove_dir_all(&d).ok();
}

fn write_i64_npy(path: &Path, data: &[i64]) {
    let mut header = format!(
        "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
        data.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in data {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// One rule for labels: `[n]` class ids (int64, or whole floats) mean the same as their
/// one-hot `[n, C]` in `analyze --kernel` and `predict`, as in train/score.
#[test]
fn class_ids_mean_one_hot_everywhere() {
    use ntk::nets::{FloatKind, HostArray, array::write_npy};
    let d = dir("labels");
    let k = d.join("K.npy");
    trace_kernel(&k);
    let ids = [0i64, 2, 1, 2, 0, 1];
    let ints = d.join("ids.npy");
    write_i64_npy(&ints, &ids);
    let floats = d.join("ids_f.npy");
    write_npy(
        &floats,
        &HostArray::new(vec![6], ids.iter().map(|&v| v as f64).collect()),
        FloatKind::F64,
    )
    .unwrap();
    let onehot = d.join("onehot.npy");
    let mut m = vec![0.0; 18];
    for (i, &c) in ids.iter().enumerate() {
        m[i * 3 + c as usize] = 1.0;
    }
    write_npy(&onehot, &HostArray::new(vec![6, 3], m), FloatKind::F64).unwrap();
    let alignment = |y: &Path| -> serde_json::Value {
        let j = d.join("a.json");
        let o = ntk(&["analyze", "--kernel", s(&k), "--y", s(y), "--json", s(&j)]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        v["alignment"].clone()
    };
    let reference = alignment(&onehot);
    assert!(!reference.is_null());
    assert_eq!(alignment(&ints), reference);
    assert_eq!(alignment(&floats), reference);
    let predict = |y: &Path| -> Vec<u8> {
        let out = d.join("p.npy");
        let o = ntk(&[
            "predict",
            "--k-train",
            s(&k),
            "--k-test",
            s(&k),
            "--y",
            s(y),
            "--out",
            s(&out),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(&out).unwrap()
    };
    let p = predict(&onehot);
    assert_eq!(predict(&ints), p);
    assert_eq!(predict(&floats), p);
    std::fs::remove_dir_all(&d).ok();
}

/// Weights saved from a wrapper module (`net.0.weight`): the error lists the keys found and
/// names the prefix.
#[test]
fn prefixed_weight_keys_are_explained() {
    let case = cases_dir().join("mlp-relu");
    let d = dir("prefix");
    let w = ntk::nets::weights::read_safetensors_floats(&case.join("weights.safetensors")).unwrap();
    let prefixed: std::collections::BTreeMap<String, ntk::nets::HostArray> = w
        .into_iter()
        .map(|(k, v)| (format!("net.{k}"), v))
        .collect();
    let file = d.join("w.safetensors");
    ntk::nets::weights::write_safetensors(&file, &prefixed, false).unwrap();
    let o = ntk(&[
        "forward",
        "--spec",
        s(&case.join("spec.json")),
        "--weights",
        s(&file),
        "--x",
        s(&case.join("x1.npy")),
        "--out",
        s(&d.join("f.npy")),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("net.0.weight") && e.contains("prefix \"net.\""),
        "{e}"
    );
    std::fs::remove_dir_all(&d).ok();
}

/// The f32 conditioning check: a kernel of repeated samples (singular) warns; an NNGP
/// (rank ≤ O by construction) never does.
#[test]
fn f32_conditioning_check_warns_only_when_it_should() {
    use ntk::nets::{FloatKind, HostArray, array::write_npy};
    let case = cases_dir().join("mlp-relu");
    let d = dir("cond");
    let x = common::npy(case.join("x1.npy"));
    let per = x.data.len() / x.len();
    // Each sample twice: Θ has a zero eigenvalue per pair.
    let mut data = Vec::new();
    for i in 0..x.len() {
        for _ in 0..2 {
            data.extend_from_slice(&x.data[i * per..(i + 1) * per]);
        }
    }
    let mut shape = x.shape.clone();
    shape[0] *= 2;
    let xd = d.join("x.npy");
    write_npy(&xd, &HostArray::new(shape, data), FloatKind::F64).unwrap();
    let run = |kernel: &str| {
        let o = ntk(&[
            "empirical",
            "--spec",
            s(&case.join("spec.json")),
            "--x1",
            s(&xd),
            "--kernel",
            kernel,
            "--dtype",
            "f32",
            "--out",
            s(&d.join("K.npy")),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    assert!(run("trace").contains("ill-conditioned"));
    // NNGP kernels are never checked (rank ≤ O by construction).
    assert!(!run("nngp").contains("ill-conditioned"));
    // Distinct samples: a well-conditioned kernel, no warning.
    let o = ntk(&[
        "empirical",
        "--spec",
        s(&case.join("spec.json")),
        "--x1",
        s(&case.join("x1.npy")),
        "--kernel",
        "trace",
        "--dtype",
        "f32",
        "--out",
        s(&d.join("K.npy")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("ill-conditioned"), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).ok();
}

/// A kernel that cannot fit in memory (N = 60 000, O = 3 full: 259 GB) is refused before
/// any work, with its size and the way out.
#[test]
fn a_kernel_too_large_for_memory_is_refused_up_front() {
    use ntk::nets::{FloatKind, HostArray, array::write_npy};
    let case = cases_dir().join("mlp-relu");
    let d = dir("huge");
    let n = 60_000;
    let x = HostArray::new(vec![n, 16], (0..n * 16).map(|i| (i % 7) as f64).collect());
    let xp = d.join("x.npy");
    write_npy(&xp, &x, FloatKind::F32).unwrap();
    let t0 = std::time::Instant::now();
    let o = ntk(&[
        "empirical",
        "--spec",
        s(&case.join("spec.json")),
        "--x1",
        s(&xp),
        "--kernel",
        "full",
        "--out",
        s(&d.join("K.npy")),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("[60000, 60000, 3, 3]") && e.contains("--tiles"),
        "{e}"
    );
    assert!(
        t0.elapsed().as_secs() < 20,
        "refused after {:?}",
        t0.elapsed()
    );
    assert!(!d.join("K.npy").exists());
    std::fs::remove_dir_all(&d).ok();
}

/// `ntk analyze` and `ntk predict` refuse, before reading them, kernels whose analysis
/// cannot fit in memory (a sparse 160 GB file of a [200000, 200000] f32 kernel: 1.3 TB
/// with the eigendecomposition's workspace), naming the sizes and the way out.
#[test]
fn kernels_too_large_to_analyse_are_refused_before_reading() {
    use ntk::nets::array::{FloatKind, npy_header};
    let d = dir("huge-kernel");
    let k = d.join("K.npy");
    let header = npy_header(&[200_000, 200_000], FloatKind::F32);
    let f = std::fs::File::create(&k).unwrap();
    std::io::Write::write_all(&mut &f, &header).unwrap();
    f.set_len(header.len() as u64 + 200_000u64 * 200_000 * 4)
        .unwrap();
    drop(f);
    let y = d.join("y.npy");
    ntk::nets::array::write_npy(
        &y,
        &ntk::nets::HostArray::new(vec![3], vec![0.0, 1.0, 2.0]),
        FloatKind::F64,
    )
    .unwrap();
    let p = d.join("P.npy");
    for args in [
        vec!["analyze", "--kernel", s(&k)],
        vec![
            "predict",
            "--k-train",
            s(&k),
            "--k-test",
            s(&k),
            "--y",
            s(&y),
            "--out",
            s(&p),
        ],
    ] {
        let o = ntk(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {e}", args[0]);
        assert!(
            e.contains("200000×200000") && e.contains("GiB of memory are available"),
            "{}: {e}",
            args[0]
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

/// `--max-memory` bounds the whole run, the kernel held for `--out` included: a kernel
/// that fits the machine but not the bound (N = 2000, O = 3 full: 288 MB against 256 MiB)
/// is refused before any work with the size it needs and the ways out; with room for it the
/// same run works, and `--tiles` (which never holds the kernel) works within the small bound.
#[test]
fn max_memory_counts_the_kernel_held() {
    let case = cases_dir().join("mlp-relu");
    let d = dir("max-memory-kernel");
    let xp = write_inputs(&d, 2000, 16);
    let run = |mem: &str, extra: &[&str]| {
        let spec = case.join("spec.json");
        let out = d.join("K.npy");
        let mut args = vec![
            "empirical",
            "--spec",
            s(&spec),
            "--x1",
            s(&xp),
            "--kernel",
            "full",
            "--max-memory",
            mem,
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        ntk(&args)
    };
    let o = run("256MiB", &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("[2000, 2000, 3, 3] takes 275 MiB")
            && e.contains("raise --max-memory to")
            && e.contains("--tiles DIR"),
        "{e}"
    );
    assert!(!d.join("K.npy").exists());
    let o = run("1GiB", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let whole = std::fs::read(d.join("K.npy")).unwrap();
    std::fs::remove_file(d.join("K.npy")).unwrap();
    let t = d.join("T");
    let o = run("256MiB", &["--tiles", s(&t)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(d.join("K.npy")).unwrap().len(), whole.len());
    std::fs::remove_dir_all(&d).ok();
}

/// SIGTERM during a run: exit code 130, and no partial or hidden temporary file is left
/// beside the outputs.
#[cfg(unix)]
#[test]
fn sigterm_leaves_no_partial_files() {
    let case = cases_dir().join("perf-mlp");
    let d = dir("sigterm");
    let xp = write_inputs(&d, 4000, 64);
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ntk"))
        .args([
            "empirical",
            "--spec",
            s(&case.join("spec.json")),
            "--x1",
            s(&xp),
            "--kernel",
            "trace",
            "--dtype",
            "f64",
            "--out",
            s(&out.join("K.npy")),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    if o.status.success() {
        // Finished before the signal (a fast machine): the output is whole, nothing else.
        assert_eq!(left.len(), 1, "{left:?}");
    } else {
        // 130 from the handler; a signal death only if it came before the handler was
        // installed (a loaded machine), when nothing had been written yet.
        use std::os::unix::process::ExitStatusExt;
        assert!(
            o.status.code() == Some(130) || o.status.signal() == Some(libc::SIGTERM),
            "{:?}: {e}",
            o.status
        );
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    std::fs::remove_dir_all(&d).ok();
}

/// `ntk analyze --kernel K --plot P.png` writes the spectrum plot (it used to write nothing).
#[test]
fn analyze_kernel_plot_is_written() {
    let d = dir("plot");
    let k = d.join("K.npy");
    trace_kernel(&k);
    let png = d.join("spectrum.png");
    let o = ntk(&["analyze", "--kernel", s(&k), "--plot", s(&png)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 1000);
    std::fs::remove_dir_all(&d).ok();
}

/// `ntk features` honours `--max-memory` before any work: a map whose random transforms
/// alone pass the bound, or whose transforms plus one input do, is refused with the sizes
/// and a way out (it used to run past a 256 MiB bound to 1.5 GB, and `--dim 16777216`
/// failed after 12 s and 3 GB with an allocation error); a map that fits runs.
#[test]
fn features_memory_is_checked_before_the_work() {
    let case = cases_dir().join("mlp-relu");
    let spec = case.join("spec.json");
    let d = dir("features-memory");
    let xp = case.join("x1.npy");
    let x = ntk::nets::array::read_npy(&xp).unwrap().0;
    let out = d.join("F.npy");
    let run = |method: &str, dim: &str, mem: &str| {
        ntk(&[
            "features",
            "--spec",
            s(&spec),
            "--x",
            s(&xp),
            "--method",
            method,
            "--dim",
            dim,
            "--max-memory",
            mem,
            "--out",
            s(&out),
        ])
    };
    for (method, dim, mem, says) in [
        (
            "ntksketch",
            "4000000",
            "256MiB",
            "random transforms alone need more than",
        ),
        ("ntkrf", "4000000", "256MiB", "random transforms"),
        (
            "ntksketch",
            "16777216",
            "1GiB",
            "random transforms alone need more than",
        ),
    ] {
        let o = run(method, dim, mem);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{method} {dim}: {e}");
        assert!(
            e.contains(&format!("--max-memory {mem}")) && e.contains(says) && e.contains("--dim"),
            "{method} {dim}: {e}"
        );
        assert!(!out.exists(), "{method} {dim}: an output was left");
    }
    // compare and regress check their feature maps the same way, before any other work.
    let report = d.join("report.json");
    for args in [
        vec![
            "compare",
            "--spec",
            s(&spec),
            "--x1",
            s(&xp),
            "--widths",
            "8",
            "--seeds",
            "1",
            "--features",
            "ntksketch:64,ntksketch:16777216",
            "--max-memory",
            "256MiB",
            "--out",
            s(&report),
        ],
        vec![
            "regress",
            "--data",
            "diabetes",
            "--features",
            "ntkrf:64,ntksketch:16777216",
            "--max-memory",
            "256MiB",
            "--no-exact",
            "--json",
            s(&report),
        ],
    ] {
        let o = ntk(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{}: {e}", args[0]);
        assert!(
            e.contains("--features ntksketch:16777216") && e.contains("random transforms"),
            "{}: {e}",
            args[0]
        );
        assert!(!report.exists(), "{}: a report was written", args[0]);
    }
    // A --batch above N is N.
    let o = ntk(&[
        "features",
        "--spec",
        s(&spec),
        "--x",
        s(&xp),
        "--dim",
        "256",
        "--batch",
        "4096",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "--batch 4096: {}", stderr(&o));
    std::fs::remove_file(&out).unwrap();
    for (method, dim) in [("ntkrf", 20000), ("ntksketch", 4096)] {
        let o = run(method, &dim.to_string(), "64MiB");
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        let f = ntk::nets::array::read_npy(&out).unwrap().0;
        assert_eq!(f.shape, vec![x.shape[0], dim], "{method}");
        std::fs::remove_file(&out).unwrap();
    }
    std::fs::remove_dir_all(&d).ok();
}
