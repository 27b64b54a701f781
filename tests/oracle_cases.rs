//! End-to-end checks against the neural-tangents reference cases in `shared/cases/`:
//! forward outputs and the empirical NTK (full, trace, diagonal) by every method, f64,
//! to 1e-10 relative; f32 to 1e-5.

mod common;

use common::{npy, oracle_cases, rel_err};
use ntk::empirical::{ConvStrategy, EmpiricalOptions, KernelKind, Method, empirical_kernel};
use ntk::nets::{BackendKind, Network, NetworkSpec, Precision};
use std::path::Path;

fn load(case: &Path, precision: Precision) -> Network {
    let device = BackendKind::Flex.device(precision).unwrap();
    let spec = NetworkSpec::from_file(case.join("spec.json")).unwrap();
    Network::load(spec, case.join("weights.safetensors"), &device, precision).unwrap()
}

#[test]
fn forward_matches_oracle_f64() {
    for case in oracle_cases() {
        let net = load(&case, Precision::F64);
        for (x, f) in [
            ("x1.npy", "expected_f_x1.npy"),
            ("x2.npy", "expected_f_x2.npy"),
        ] {
            let out = net.forward_host(&npy(case.join(x))).unwrap();
            let err = rel_err(&out, &npy(case.join(f)));
            assert!(err < 1e-10, "{}: {f} rel err {err:.3e}", case.display());
        }
    }
}

#[test]
fn forward_matches_oracle_f32() {
    for case in oracle_cases() {
        let net = load(&case, Precision::F32);
        let out = net.forward_host(&npy(case.join("x1.npy"))).unwrap();
        let err = rel_err(&out, &npy(case.join("expected_f_x1.npy")));
        assert!(err < 1e-5, "{}: rel err {err:.3e}", case.display());
    }
}

fn check_kernels(method: Method, conv: ConvStrategy) {
    check_kernels_with(method, conv, false)
}

fn check_kernels_with(method: Method, conv: ConvStrategy, tensor_contraction: bool) {
    for case in oracle_cases() {
        let net = load(&case, Precision::F64);
        let x1 = npy(case.join("x1.npy"));
        let x2 = npy(case.join("x2.npy"));
        for (kind, file) in [
            (KernelKind::Full, "expected_ntk_full.npy"),
            (KernelKind::Trace, "expected_ntk_trace.npy"),
            (KernelKind::Diagonal, "expected_ntk_diag.npy"),
        ] {
            let opts = EmpiricalOptions {
                method,
                kind,
                conv,
                tensor_contraction,
                ..Default::default()
            };
            let k = empirical_kernel(&net, &x1, Some(&x2), &opts, &mut |_, _| {}).unwrap();
            let err = rel_err(&k.kernel, &npy(case.join(file)));
            assert!(
                err < 1e-10,
                "{} {} {:?}: {file} rel err {err:.3e}",
                case.display(),
                method.name(),
                conv
            );
        }
    }
}

#[test]
fn structured_matches_oracle() {
    check_kernels(Method::Structured, ConvStrategy::Auto);
}

/// The burn-tensor contraction (the path GPU backends take) on the CPU.
#[test]
fn structured_tensor_contraction_matches_oracle() {
    check_kernels_with(Method::Structured, ConvStrategy::Im2col, true);
    check_kernels_with(Method::Structured, ConvStrategy::PixelPairs, true);
}

#[test]
fn structured_pixel_pairs_matches_oracle() {
    check_kernels(Method::Structured, ConvStrategy::PixelPairs);
}

#[test]
fn structured_im2col_matches_oracle() {
    check_kernels(Method::Structured, ConvStrategy::Im2col);
}

#[test]
fn jacobian_matches_oracle() {
    check_kernels(Method::Jacobian, ConvStrategy::Auto);
}

#[test]
fn ntk_vp_matches_oracle() {
    check_kernels(Method::NtkVp, ConvStrategy::Auto);
}

#[test]
fn f32_structured_full_matches_oracle() {
    for case in oracle_cases() {
        let net = load(&case, Precision::F32);
        let opts = EmpiricalOptions {
            method: Method::Structured,
            ..Default::default()
        };
        let k = empirical_kernel(
            &net,
            &npy(case.join("x1.npy")),
            Some(&npy(case.join("x2.npy"))),
            &opts,
            &mut |_, _| {},
        )
        .unwrap();
        let err = rel_err(&k.kernel, &npy(case.join("expected_ntk_full.npy")));
        assert!(err < 1e-5, "{}: f32 rel err {err:.3e}", case.display());
    }
}

#[test]
fn cli_forward_matches_oracle() {
    let exe = env!("CARGO_BIN_EXE_ntk");
    let tmp = std::env::temp_dir().join(format!("ntk-cli-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for case in oracle_cases() {
        let out = tmp.join("f.npy");
        let st = std::process::Command::new(exe)
            .args(["forward", "--dtype", "f64", "--spec"])
            .arg(case.join("spec.json"))
            .arg("--weights")
            .arg(case.join("weights.safetensors"))
            .arg("--x")
            .arg(case.join("x1.npy"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&st.stderr)
        );
        let err = rel_err(&npy(&out), &npy(case.join("expected_f_x1.npy")));
        assert!(
            err < 1e-10,
            "{}: CLI forward rel err {err:.3e}",
            case.display()
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn cli_empirical_matches_oracle() {
    let exe = env!("CARGO_BIN_EXE_ntk");
    let tmp = std::env::temp_dir().join(format!("ntk-cli-emp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for case in oracle_cases() {
        let out = tmp.join("k.npy");
        let st = std::process::Command::new(exe)
            .args(["empirical", "--kernel", "trace", "--spec"])
            .arg(case.join("spec.json"))
            .arg("--weights")
            .arg(case.join("weights.safetensors"))
            .arg("--x1")
            .arg(case.join("x1.npy"))
            .arg("--x2")
            .arg(case.join("x2.npy"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&st.stderr)
        );
        let err = rel_err(&npy(&out), &npy(case.join("expected_ntk_trace.npy")));
        assert!(
            err < 1e-10,
            "{}: CLI trace rel err {err:.3e}",
            case.display()
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn weights_save_and_reload_roundtrip() {
    let tmp = std::env::temp_dir().join(format!("ntk-save-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for case in oracle_cases() {
        let net = load(&case, Precision::F64);
        let path = tmp.join("w.safetensors");
        net.save(&path, false).unwrap();
        let device = BackendKind::Flex.device(Precision::F64).unwrap();
        let spec = NetworkSpec::from_file(case.join("spec.json")).unwrap();
        let again = Network::load(spec, &path, &device, Precision::F64).unwrap();
        let x = npy(case.join("x1.npy"));
        let (a, b) = (
            net.forward_host(&x).unwrap(),
            again.forward_host(&x).unwrap(),
        );
        assert_eq!(
            a.data,
            b.data,
            "{}: reloaded network differs",
            case.display()
        );
        assert_eq!(net.params(), again.params());
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
