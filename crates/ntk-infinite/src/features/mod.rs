//! Explicit feature maps of the infinite-width NNGP and NTK of relu networks, after Zandieh,
//! Han, Avron, Shoham, Kim, Shin, "Scaling Neural Tangent Kernels via Sketching and Random
//! Features", NeurIPS 2021 (arXiv 2104.00415 and 2104.01351), in this crate's
//! (neural-tangents') conventions.
//!
//! A [`FeatureMap`] sends a sample `x` to `φ(x) ∈ ℝ^m` (NNGP) and `ψ(x) ∈ ℝ^m` (NTK) with
//! `φ(x)·φ(y) ≈ Σ(x, y)` and `ψ(x)·ψ(y) ≈ Θ(x, y)` of [`crate::kernels`], so that kernel
//! methods on `N` samples cost `O(N·m)` memory and time instead of `O(N²)` kernel entries.
//! Three methods ([`FeatureMethod`]):
//!
//! - `ntkrf`: NTK random features (Gaussian arc-cosine features of orders 1 and 0 per relu
//!   layer, a tensor sketch for the NTK's product term);
//! - `ntksketch`: PolySketch of the polynomial expansions of the arc-cosine kernels, layer
//!   by layer (so biases are handled, unlike the authors' one-shot polynomial);
//! - `cntksketch`: the same per pixel for conv nets with pooling, linear in the pixels.
//!
//! The algebra is in [`map`]; the building blocks in [`hadamard`] (SRHT, TensorSRHT),
//! [`polysketch`] and [`arccos`]. Supported layers: dense, conv2d (same/valid, strides),
//! relu, identity, avg_pool2d, global_avg_pool, flatten; ntk and standard
//! parameterization. Other nonlinearities are refused naming the layer.

pub mod arccos;
pub mod budget;
pub mod graph;
pub mod hadamard;
pub mod map;
pub mod polysketch;

pub use graph::GraphFeatureMap;
pub use map::{DEFAULT_DEGREE, FeatureMap, FeatureMethod, FeatureOptions, NtkFeatures};

use crate::error::{InfiniteError, Result};
use ntk_nets::HostArray;
use rayon::prelude::*;

/// The kernel `A Bᵀ` of two feature batches.
///
/// # Shapes
/// `a`: `[N1, m]`, `b`: `[N2, m]`; result `[N1, N2]`.
///
/// # Errors
/// [`InfiniteError::InputShape`] when the feature dimensions differ.
pub fn feature_kernel(a: &HostArray, b: &HostArray) -> Result<HostArray> {
    if a.shape.len() != 2 || b.shape.len() != 2 || a.shape[1] != b.shape[1] {
        return Err(InfiniteError::InputShape {
            what: "feature batches".into(),
            got: b.shape.clone(),
            expected: a.shape[1..].to_vec(),
        });
    }
    let (n1, n2, k) = (a.shape[0], b.shape[0], a.shape[1]);
    let mut out = vec![0.0; n1 * n2];
    out.par_chunks_mut(n2.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            let ai = &a.data[i * k..(i + 1) * k];
            for (j, o) in row.iter_mut().enumerate() {
                let bj = &b.data[j * k..(j + 1) * k];
                *o = ai.iter().zip(bj).map(|(x, y)| x * y).sum();
            }
        });
    Ok(HostArray::new(vec![n1, n2], out))
}

/// Relative Frobenius distance `‖A − B‖_F / ‖B‖_F` of two arrays of the same length.
pub fn relative_frobenius_error(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InfiniteOptions, kernels};
    use ntk_nets::NetworkSpec;

    const MLP: &str = r#"{"input_shape":[6],"layers":[
        {"type":"dense","width":64,"w_std":1.4142135,"b_std":0.1},{"type":"relu"},
        {"type":"dense","width":64,"w_std":1.4142135,"b_std":0.1},{"type":"relu"},
        {"type":"dense","width":1,"w_std":1.0,"b_std":0.0}]}"#;

    fn inputs(n: usize, shape: &[usize]) -> HostArray {
        let per: usize = shape.iter().product();
        let mut dims = vec![n];
        dims.extend_from_slice(shape);
        HostArray::new(
            dims,
            (0..n * per)
                .map(|i| ((i * 37 + 11) as f64 * 0.61).sin() * 1.3)
                .collect(),
        )
    }

    /// Mean relative Frobenius errors (NNGP, NTK) over `seeds`.
    fn errors(
        spec: &NetworkSpec,
        x: &HostArray,
        method: FeatureMethod,
        dim: usize,
        seeds: u64,
    ) -> (f64, f64) {
        let exact = kernels(spec, x, None, &InfiniteOptions::default()).unwrap();
        let mut acc = (0.0, 0.0);
        for seed in 0..seeds {
            let map = FeatureMap::new(
                spec,
                &FeatureOptions {
                    method,
                    dim,
                    seed,
                    ..Default::default()
                },
            )
            .unwrap();
            let f = map.apply(x).unwrap();
            let k = |a: &HostArray| feature_kernel(a, a).unwrap().data;
            acc.0 += relative_frobenius_error(&k(&f.nngp), &exact.nngp.data);
            acc.1 += relative_frobenius_error(&k(&f.ntk), &exact.ntk.data);
        }
        (acc.0 / seeds as f64, acc.1 / seeds as f64)
    }

    #[test]
    fn random_features_converge_like_one_over_sqrt_m() {
        let spec = NetworkSpec::from_json(MLP).unwrap();
        let x = inputs(8, &[6]);
        let (s_small, t_small) = errors(&spec, &x, FeatureMethod::Ntkrf, 64, 6);
        let (s_large, t_large) = errors(&spec, &x, FeatureMethod::Ntkrf, 1024, 6);
        // 16× the features: errors ÷ 4 expected; allow 2.5 .. 6.5 for the randomness.
        eprintln!("NTKRF NNGP {s_small:.4} -> {s_large:.4}, NTK {t_small:.4} -> {t_large:.4}");
        for (small, large) in [(s_small, s_large), (t_small, t_large)] {
            let ratio = small / large;
            assert!((2.5..6.5).contains(&ratio), "{small} -> {large} (÷{ratio})");
        }
        // Measured: NNGP 0.098, NTK 0.131 at m = 1024 (8 correlated inputs, biases).
        assert!(s_large < 0.15 && t_large < 0.2, "{s_large} {t_large}");
    }

    #[test]
    fn sketches_converge_with_biases_and_both_parameterizations() {
        let x = inputs(8, &[6]);
        for json in [
            MLP,
            r#"{"input_shape":[6],"parameterization":"standard","layers":[
            {"type":"dense","width":8,"w_std":1.3,"b_std":null},{"type":"relu"},{"type":"identity"},
            {"type":"dense","width":5,"w_std":1.1,"b_std":0.3},{"type":"relu"},
            {"type":"dense","width":2,"w_std":1.0,"b_std":0.2}]}"#,
        ] {
            let spec = NetworkSpec::from_json(json).unwrap();
            let (s_small, t_small) = errors(&spec, &x, FeatureMethod::NtkSketch, 64, 6);
            let (s_large, t_large) = errors(&spec, &x, FeatureMethod::NtkSketch, 2048, 6);
            eprintln!(
                "NTKSketch NNGP {s_small:.4} -> {s_large:.4}, NTK {t_small:.4} -> {t_large:.4}"
            );
            // Measured: NNGP 0.056, NTK 0.072 (first spec) at m = 2048.
            assert!(s_large < 0.1 && t_large < 0.12, "{s_large} {t_large}");
            assert!(s_large < s_small / 2.5 && t_large < t_small / 2.5);
        }
    }

    #[test]
    fn cntk_sketch_matches_the_exact_conv_kernels() {
        for json in [
            // conv → relu → conv (stride 2, valid) → relu → global pooling → dense
            r#"{"input_shape":[2,6,6],"layers":[
            {"type":"conv2d","channels":4,"kernel":[3,3],"padding":"same","w_std":1.4,"b_std":0.2},
            {"type":"relu"},
            {"type":"conv2d","channels":4,"kernel":[2,2],"stride":[2,2],"padding":"valid","w_std":1.4,"b_std":0.1},
            {"type":"relu"},{"type":"global_avg_pool"},
            {"type":"dense","width":2,"w_std":1.0,"b_std":0.0}]}"#,
            // average pooling and flatten
            r#"{"input_shape":[1,6,6],"parameterization":"standard","layers":[
            {"type":"conv2d","channels":3,"kernel":[3,3],"padding":"same","w_std":1.4,"b_std":0.2},
            {"type":"relu"},{"type":"avg_pool2d","window":[2,2]},
            {"type":"conv2d","channels":3,"kernel":[2,2],"padding":"valid","w_std":1.4,"b_std":null},
            {"type":"relu"},{"type":"flatten"},
            {"type":"dense","width":2,"w_std":1.0,"b_std":0.1}]}"#,
        ] {
            let spec = NetworkSpec::from_json(json).unwrap();
            let x = inputs(5, &spec.input_shape);
            let (s, t) = errors(&spec, &x, FeatureMethod::CntkSketch, 2048, 4);
            eprintln!("CNTKSketch NNGP {s:.4} NTK {t:.4}");
            assert!(s < 0.08 && t < 0.08, "{s} {t}");
        }
    }

    #[test]
    fn the_same_seed_gives_compatible_features_across_calls() {
        let spec = NetworkSpec::from_json(MLP).unwrap();
        let x = inputs(5, &[6]);
        for method in [FeatureMethod::Ntkrf, FeatureMethod::NtkSketch] {
            let o = FeatureOptions {
                method,
                dim: 32,
                seed: 7,
                ..Default::default()
            };
            let all = FeatureMap::new(&spec, &o).unwrap().apply(&x).unwrap();
            let first = FeatureMap::new(&spec, &o)
                .unwrap()
                .apply(&x.rows(0, 2))
                .unwrap();
            assert_eq!(first.ntk.data[..], all.ntk.data[..first.ntk.data.len()]);
            assert_eq!(first.nngp.data[..], all.nngp.data[..first.nngp.data.len()]);
        }
    }

    #[test]
    fn unsupported_layers_methods_and_options_are_errors() {
        let erf = NetworkSpec::from_json(
            r#"{"input_shape":[4],"layers":[{"type":"dense","width":3},{"type":"erf"},{"type":"dense","width":1}]}"#,
        )
        .unwrap();
        let e = FeatureMap::new(&erf, &FeatureOptions::default()).unwrap_err();
        assert!(
            matches!(e, InfiniteError::Unsupported { index: 1, .. }),
            "{e}"
        );
        let relu = NetworkSpec::from_json(
            r#"{"input_shape":[4],"layers":[{"type":"dense","width":3},{"type":"relu"},{"type":"dense","width":1}]}"#,
        )
        .unwrap();
        for bad in [
            FeatureOptions {
                dim: 0,
                ..Default::default()
            },
            FeatureOptions {
                degree: 1,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                FeatureMap::new(&relu, &bad),
                Err(InfiniteError::Option { .. })
            ));
        }
        let cntk = FeatureOptions {
            method: FeatureMethod::CntkSketch,
            ..Default::default()
        };
        assert!(matches!(
            FeatureMap::new(&relu, &cntk),
            Err(InfiniteError::Unsupported { .. })
        ));
        let map = FeatureMap::new(&relu, &FeatureOptions::default()).unwrap();
        assert!(matches!(
            map.apply(&inputs(2, &[5])),
            Err(InfiniteError::InputShape { .. })
        ));
        let mut nan = inputs(2, &[4]);
        nan.data[3] = f64::NAN;
        assert!(matches!(
            map.apply(&nan),
            Err(InfiniteError::NonFiniteInput { index: 3, .. })
        ));
    }
}
