//! The malformed-input corpus (`tests/malformed/`, made by `make_corpus.py`): every file
//! must make `ntk forward` fail with exit code 1 and an `error:` message naming the
//! problem — never a panic, never a hang.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed")
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn run(spec: &Path, weights: Option<&Path>, x: &Path) -> (i32, String, Duration) {
    let out = std::env::temp_dir().join(format!("ntk-malformed-{}.npy", std::process::id()));
    let mut c = Command::new(env!("CARGO_BIN_EXE_ntk"));
    c.arg("forward")
        .arg("--spec")
        .arg(spec)
        .arg("--x")
        .arg(x)
        .arg("--out")
        .arg(&out);
    if let Some(w) = weights {
        c.arg("--weights").arg(w);
    }
    let t0 = Instant::now();
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        t0.elapsed(),
    )
}

fn assert_clean_failure(file: &Path, (code, stderr, took): (i32, String, Duration)) {
    assert_eq!(
        code,
        1,
        "{}: exit code {code}, stderr: {stderr}",
        file.display()
    );
    assert!(stderr.starts_with("error:"), "{}: {stderr}", file.display());
    assert!(
        !stderr.contains("panicked"),
        "{}: panicked: {stderr}",
        file.display()
    );
    assert!(
        took < Duration::from_secs(20),
        "{}: took {took:?}",
        file.display()
    );
}

#[test]
fn base_inputs_are_valid() {
    let c = corpus();
    let (code, stderr, _) = run(
        &c.join("base_spec.json"),
        Some(&c.join("base_weights.safetensors")),
        &c.join("base_x.npy"),
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn corpus_is_large_enough() {
    let n: usize = ["spec", "weights", "npy"]
        .iter()
        .map(|d| files(d).len())
        .sum();
    assert!(n >= 200, "only {n} malformed files");
}

#[test]
fn bad_specs_fail_cleanly() {
    let c = corpus();
    for f in files("spec") {
        let r = run(&f, None, &c.join("base_x.npy"));
        assert_clean_failure(&f, r);
    }
}

#[test]
fn bad_weights_fail_cleanly_and_name_the_key_or_file() {
    let c = corpus();
    for f in files("weights") {
        let r = run(&c.join("base_spec.json"), Some(&f), &c.join("base_x.npy"));
        assert!(
            r.1.contains(f.file_name().unwrap().to_str().unwrap()),
            "{}: {}",
            f.display(),
            r.1
        );
        assert_clean_failure(&f, r);
    }
}

#[test]
fn bad_inputs_fail_cleanly() {
    let c = corpus();
    for f in files("npy") {
        let r = run(&c.join("base_spec.json"), None, &f);
        assert_clean_failure(&f, r);
    }
}

#[test]
fn spec_errors_name_layer_and_field() {
    let c = corpus();
    for (file, words) in [
        ("unknown_type.json", vec!["layer 1", "softmax"]),
        ("missing_width.json", vec!["layer 0", "width", "missing"]),
        ("kernel_too_large_valid.json", vec!["layer 0", "kernel"]),
        ("dense_on_image.json", vec!["layer 0", "flatten"]),
    ] {
        let (_, stderr, _) = run(&c.join("spec").join(file), None, &c.join("base_x.npy"));
        for w in words {
            assert!(stderr.contains(w), "{file}: {stderr:?} lacks {w:?}");
        }
    }
    let (_, stderr, _) = run(
        &c.join("base_spec.json"),
        Some(&c.join("weights/missing_key.safetensors")),
        &c.join("base_x.npy"),
    );
    assert!(stderr.contains("2.bias"), "{stderr}");
    let (_, stderr, _) = run(
        &c.join("base_spec.json"),
        Some(&c.join("weights/wrong_shape.safetensors")),
        &c.join("base_x.npy"),
    );
    assert!(stderr.contains("0.weight"), "{stderr}");
    let (_, stderr, _) = run(&c.join("base_spec.json"), None, &c.join("npy/nan.npy"));
    assert!(
        stderr.contains("nan.npy") && stderr.contains("index 9"),
        "{stderr}"
    );
}

#[test]
fn a_million_layer_spec_is_refused_in_bounded_time() {
    // 10⁶ layers (16 MB of JSON) is too large to keep in the repository: written here.
    let dir = std::env::temp_dir().join(format!("ntk-million-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("million.json");
    let mut text = String::from(r#"{"input_shape":[4],"layers":["#);
    text.push_str(&r#"{"type":"identity"},"#.repeat(1_000_000));
    text.push_str(r#"{"type":"dense","width":2}]}"#);
    std::fs::write(&spec, text).unwrap();
    let r = run(&spec, None, &corpus().join("base_x.npy"));
    assert!(r.1.contains("layers"), "{}", r.1);
    assert!(r.2 < Duration::from_secs(10), "took {:?}", r.2);
    assert_clean_failure(&spec, r);
    std::fs::remove_dir_all(&dir).unwrap();
}
