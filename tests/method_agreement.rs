//! Property tests: on random networks of every layer type, the three methods (and both conv
//! contractions) agree — f64 to 1e-10, f32 to 1e-4 — and Θ(x, x) is symmetric and PSD.

mod common;

use common::inputs;
use faer::Mat;
use ntk::empirical::{ConvStrategy, EmpiricalOptions, KernelKind, Method, empirical_kernel};
use ntk::nets::{
    BackendKind, HostArray, LayerSpec, Network, NetworkConfig, NetworkSpec, Precision,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn act() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("relu"),
        Just("erf"),
        Just("tanh"),
        Just("gelu"),
        Just("identity")
    ]
}

fn bias() -> impl Strategy<Value = Value> {
    prop_oneof![Just(Value::Null), (0.0f64..0.5).prop_map(|b| json!(b))]
}

fn mlp() -> impl Strategy<Value = Value> {
    (1usize..5, prop::collection::vec((1usize..7, act(), bias(), 0.5f64..2.0), 1..3), 1usize..4, bias(), any::<bool>())
        .prop_map(|(d, hidden, o, last_b, std)| {
            let mut layers = Vec::new();
            for (w, a, b, ws) in hidden {
                layers.push(json!({"type": "dense", "width": w, "w_std": ws, "b_std": b}));
                layers.push(json!({"type": a}));
            }
            layers.push(json!({"type": "dense", "width": o, "b_std": last_b}));
            json!({"input_shape": [d], "parameterization": if std {"standard"} else {"ntk"}, "layers": layers})
        })
}

fn cnn() -> impl Strategy<Value = Value> {
    (
        1usize..3,
        3usize..7,
        3usize..7,
        prop::collection::vec((1usize..4, 1usize..4, 1usize..4, 1usize..3, any::<bool>(), act(), bias()), 1..3),
        any::<bool>(),
        any::<bool>(),
        1usize..4,
    )
        .prop_map(|(c, h, w, convs, pool, gap, o)| {
            let (mut ch, mut hh, mut ww) = (c, h, w);
            let mut layers = Vec::new();
            for (i, (cout, kh, kw, s, same, a, b)) in convs.into_iter().enumerate() {
                let valid_fits = kh <= hh && kw <= ww;
                let same = same || !valid_fits;
                layers.push(json!({"type": "conv2d", "channels": cout, "kernel": [kh, kw], "stride": [s, s],
                                   "padding": if same {"same"} else {"valid"}, "w_std": 1.3, "b_std": b}));
                let (nh, nw) = if same { (hh.div_ceil(s), ww.div_ceil(s)) } else { ((hh - kh) / s + 1, (ww - kw) / s + 1) };
                ch = cout; hh = nh; ww = nw;
                layers.push(json!({"type": a}));
                if pool && i == 0 && hh >= 2 && ww >= 2 {
                    layers.push(json!({"type": "avg_pool2d", "window": [2, 2], "stride": [1, 2]}));
                    hh -= 1; ww = (ww - 2) / 2 + 1;
                }
            }
            let _ = ch;
            layers.push(json!({"type": if gap {"global_avg_pool"} else {"flatten"}}));
            layers.push(json!({"type": "dense", "width": o, "b_std": 0.1}));
            json!({"input_shape": [c, h, w], "parameterization": "ntk", "layers": layers})
        })
}

fn kernel(
    net: &Network,
    x1: &HostArray,
    x2: Option<&HostArray>,
    method: Method,
    conv: ConvStrategy,
    kind: KernelKind,
) -> HostArray {
    let opts = EmpiricalOptions {
        method,
        kind,
        conv,
        ..Default::default()
    };
    empirical_kernel(net, x1, x2, &opts, &mut |_, _| {})
        .unwrap()
        .kernel
}

fn rel(a: &HostArray, b: &HostArray) -> f64 {
    let scale = b.data.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    a.data
        .iter()
        .zip(&b.data)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn check(spec_json: Value, n1: usize, n2: usize, seed: u64) -> Result<(), TestCaseError> {
    let spec = NetworkSpec::from_value(&spec_json).unwrap();
    spec.analyse().unwrap();
    let has_conv = spec
        .layers
        .iter()
        .any(|l| matches!(l, LayerSpec::Conv2d(_)));
    let x1 = inputs(&spec.input_shape, n1, seed);
    let x2 = inputs(&spec.input_shape, n2, seed + 1);
    for precision in [Precision::F64, Precision::F32] {
        let tol = if precision == Precision::F64 {
            1e-10
        } else {
            1e-4
        };
        let device = BackendKind::Flex.device(precision).unwrap();
        let net = NetworkConfig::new(spec.clone())
            .with_seed(seed)
            .with_precision(precision)
            .init(&device)
            .unwrap();
        for kind in [
            KernelKind::Full,
            KernelKind::Trace,
            KernelKind::Diagonal,
            KernelKind::SumOfLogits,
        ] {
            let reference = kernel(
                &net,
                &x1,
                Some(&x2),
                Method::Jacobian,
                ConvStrategy::Auto,
                kind,
            );
            let mut others = vec![
                (
                    "structured",
                    kernel(
                        &net,
                        &x1,
                        Some(&x2),
                        Method::Structured,
                        ConvStrategy::Im2col,
                        kind,
                    ),
                ),
                (
                    "ntk-vp",
                    kernel(
                        &net,
                        &x1,
                        Some(&x2),
                        Method::NtkVp,
                        ConvStrategy::Auto,
                        kind,
                    ),
                ),
            ];
            if has_conv {
                others.push((
                    "pixel-pairs",
                    kernel(
                        &net,
                        &x1,
                        Some(&x2),
                        Method::Structured,
                        ConvStrategy::PixelPairs,
                        kind,
                    ),
                ));
            }
            for (name, k) in others {
                let e = rel(&k, &reference);
                prop_assert!(
                    e < tol,
                    "{} {:?} {}: rel err {:.3e} for {}",
                    name,
                    precision,
                    kind.name(),
                    e,
                    spec_json
                );
            }
        }
    }
    // Θ(x, x): symmetric and PSD (f64).
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let net = NetworkConfig::new(spec)
        .with_seed(seed)
        .init(&device)
        .unwrap();
    let k = kernel(
        &net,
        &x1,
        None,
        Method::Structured,
        ConvStrategy::Auto,
        KernelKind::Full,
    );
    // The symmetric schedule (upper blocks + mirror) against the Jacobian method.
    let kj = kernel(
        &net,
        &x1,
        None,
        Method::Jacobian,
        ConvStrategy::Auto,
        KernelKind::Full,
    );
    let e = rel(&k, &kj);
    prop_assert!(e < 1e-10, "x2 = x1: structured vs jacobian {e:.3e}");
    let o = net.n_outputs();
    let m = n1 * o;
    let at = |i: usize, j: usize| k.data[(((i / o) * n1 + j / o) * o + i % o) * o + j % o];
    let mat = Mat::<f64>::from_fn(m, m, at);
    let scale = k.data.iter().fold(1e-300f64, |a, v| a.max(v.abs()));
    for i in 0..m {
        for j in 0..m {
            prop_assert!(
                (mat[(i, j)] - mat[(j, i)]).abs() <= 1e-12 * scale,
                "not symmetric"
            );
        }
    }
    let eig = mat.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
    prop_assert!(
        eig[0] >= -1e-10 * scale,
        "not PSD: min eigenvalue {}",
        eig[0]
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    #[test]
    fn methods_agree_on_random_mlps(spec in mlp(), n1 in 1usize..4, n2 in 1usize..4, seed in 0u64..1000) {
        check(spec, n1, n2, seed)?;
    }

    #[test]
    fn methods_agree_on_random_cnns(spec in cnn(), n1 in 1usize..3, n2 in 1usize..3, seed in 0u64..1000) {
        check(spec, n1, n2, seed)?;
    }
}

#[test]
fn tiling_and_symmetry_give_the_untiled_kernel() {
    let spec = NetworkSpec::builder(&[2, 5, 5])
        .conv2d(3, [3, 3], [1, 1], ntk::nets::Padding::Same, 1.4, Some(0.1))
        .relu()
        .flatten()
        .dense(2, 1.0, Some(0.0))
        .build()
        .unwrap();
    let device = BackendKind::Flex.device(Precision::F64).unwrap();
    let net = NetworkConfig::new(spec).with_seed(3).init(&device).unwrap();
    let x = inputs(&[2, 5, 5], 7, 11);
    for kind in [
        KernelKind::Full,
        KernelKind::Diagonal,
        KernelKind::Trace,
        KernelKind::Nngp,
    ] {
        let whole = kernel(
            &net,
            &x,
            Some(&x),
            Method::Structured,
            ConvStrategy::Auto,
            kind,
        );
        let opts = EmpiricalOptions {
            kind,
            tile_rows: Some(3),
            ..Default::default()
        };
        let tiled = empirical_kernel(&net, &x, None, &opts, &mut |_, _| {}).unwrap();
        assert_eq!(tiled.tiles, 6, "3 row blocks, upper triangle");
        assert!(rel(&tiled.kernel, &whole) < 1e-12, "{}", kind.name());
    }
}

/// An overflow during the computation is reported with the layer where it appeared.
#[test]
fn overflow_names_the_layer_where_it_appeared() {
    let spec = NetworkSpec::from_value(&json!({
        "input_shape": [4], "parameterization": "ntk",
        "layers": [{"type": "dense", "width": 8, "w_std": 1.0, "b_std": 0.0}, {"type": "relu"},
                   {"type": "dense", "width": 2, "w_std": 1.0, "b_std": 0.0}]}))
    .unwrap();
    let device = BackendKind::Flex.device(Precision::F32).unwrap();
    let net = NetworkConfig::new(spec)
        .with_seed(3)
        .with_precision(Precision::F32)
        .init(&device)
        .unwrap();
    // Finite in f64, but 3e38 overflows f32 in the first dense layer.
    let x = HostArray::new(vec![2, 4], vec![3e38, -3e38, 3e38, 1.0, 0.5, 0.1, 0.2, 0.3]);
    let err = empirical_kernel(
        &net,
        &x,
        None,
        &EmpiricalOptions {
            method: Method::Structured,
            kind: KernelKind::Trace,
            ..Default::default()
        },
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("non-finite"), "{err}");
    assert!(err.contains("layer 0 (dense)"), "{err}");
}
