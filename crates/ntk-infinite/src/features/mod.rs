//! Random features for the infinite-width NNGP and NTK of relu MLPs, after Zandieh et al.,
//! "Scaling Neural Tangent Kernels via Sketching and Random Features", NeurIPS 2021
//! (arXiv 2104.00415), in this crate's (neural-tangents') conventions.
//!
//! Explicit maps `φ(x)` (NNGP) and `ψ(x)` (NTK) with `φ(x)·φ(y) ≈ Σ(x, y)` and
//! `ψ(x)·ψ(y) ≈ Θ(x, y)`, so that kernel methods on `N` samples cost `O(N · features)`
//! instead of `O(N²)` kernel entries. Built layer by layer, following the exact recursions
//! ([`crate::dense`], [`crate::activation`]):
//!
//! - input: `φ = x / √d`, `ψ` empty (`Θ = 0`);
//! - dense, `ntk` parameterization: `φ' = [σ_w φ, σ_b]`, `ψ' = [φ', σ_w ψ]` (the exact
//!   `Σ' = σ_w² Σ + σ_b²`, `Θ' = Σ' + σ_w² Θ` in feature form, no randomness);
//!   `standard`: `ψ' = [√n_in φ, σ_w ψ, 1]` (`1` only with a bias parameter);
//! - relu, with `m` Gaussian vectors `w_k` (rows of `W`): `φ' = relu(W φ) / √m` and
//!   `s = step(W φ) / √m` (arc-cosine random features of orders 1 and 0: given `φ`,
//!   `E[φ'(x)·φ'(y)] = E[relu(u) relu(v)]` and `E[s(x)·s(y)] = E[step(u) step(v)]` for
//!   `(u, v)` Gaussian with covariance `φφᵀ`, the closed forms of [`crate::activation`]);
//!   `ψ' = ψ ⊗ s`, the tensor product computed exactly when small and otherwise sketched
//!   to `sketch_dim` columns ([`sketch::tensor_product`]), since `Θ' = Θ · E[step step]`.
//!
//! Each layer's estimate is unbiased given the previous layer's features; overall the
//! error falls like `1/√m` (checked in the tests against [`crate::kernels`]). Same `seed`
//! = same random draws, so features of `x1` and `x2` computed in separate calls are
//! compatible. Differences from the paper: Gaussian (not normalised/orthogonal) arc-cosine
//! features, and a Rademacher tensor sketch instead of TensorSRHT (same expectation,
//! without the FFT speed-up); no leverage-score sampling.
//!
//! Supported: vector inputs; `dense`, `relu`, `identity` layers (the sketched recursion is
//! specific to relu's arc-cosine features). Anything else is
//! [`crate::InfiniteError::Unsupported`] naming the layer.

pub mod sketch;

use crate::error::{InfiniteError, Result, unsupported};
use crate::plan::Plan;
use ntk_nets::{Activation, FeatureShape, HostArray, LayerSpec, NetworkSpec, Parameterization};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use sketch::{FeatureMatrix, tensor_product};

/// Options of [`relu_mlp_features`].
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureOptions {
    /// Random features `m` per relu layer (the NNGP feature dimension grows by `m + 1` per
    /// layer: `m` relu features, one bias column).
    pub relu_features: usize,
    /// Columns of each sketched tensor product (the NTK feature dimension per relu layer).
    pub sketch_dim: usize,
    /// Seed of all random draws.
    pub seed: u64,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions {
            relu_features: 1024,
            sketch_dim: 1024,
            seed: 0,
        }
    }
}

/// Feature maps of a batch: `nngp.row(n) · nngp.row(n') ≈ Σ(x_n, x_n')`, the same for the
/// NTK.
///
/// # Shapes
/// `nngp`: `[N, k_nngp]`, `ntk`: `[N, k_ntk]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NtkFeatures {
    pub nngp: HostArray,
    pub ntk: HostArray,
}

/// The kernel `A Bᵀ` of two feature batches.
///
/// # Shapes
/// `a`: `[N1, k]`, `b`: `[N2, k]`; result `[N1, N2]`.
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
    for i in 0..n1 {
        let ai = &a.data[i * k..(i + 1) * k];
        for j in 0..n2 {
            let bj = &b.data[j * k..(j + 1) * k];
            out[i * n2 + j] = ai.iter().zip(bj).map(|(x, y)| x * y).sum();
        }
    }
    Ok(HostArray::new(vec![n1, n2], out))
}

/// Random NNGP/NTK features of a relu MLP spec for the batch `x` `[N, d]` (see the module
/// documentation).
pub fn relu_mlp_features(
    spec: &NetworkSpec,
    x: &HostArray,
    options: &FeatureOptions,
) -> Result<NtkFeatures> {
    // Validation shared with the exact kernels (Gaussian inputs to nonlinearities, ...).
    Plan::build(spec, crate::DEFAULT_TANH_DEGREE)?;
    let geometry = spec.analyse()?;
    let FeatureShape::Flat(d) = spec.input_feature_shape()? else {
        return Err(unsupported(
            0,
            spec.layers.first().map_or("?", |l| l.kind()),
            "random features cover MLPs on vector inputs only",
        ));
    };
    for (name, v) in [
        ("relu_features", options.relu_features),
        ("sketch_dim", options.sketch_dim),
    ] {
        if v == 0 {
            return Err(InfiniteError::Option {
                option: name.into(),
                message: "must be positive".into(),
            });
        }
    }
    if x.shape.len() != 2 || x.shape[1] != d {
        return Err(InfiniteError::InputShape {
            what: "x".into(),
            got: x.shape.clone(),
            expected: vec![d],
        });
    }
    if let Some((index, value)) = x.first_non_finite() {
        return Err(InfiniteError::NonFiniteInput {
            what: "x".into(),
            index,
            value,
        });
    }
    let n = x.shape[0];
    let mut phi = FeatureMatrix {
        rows: n,
        cols: d,
        data: x.data.iter().map(|v| v / (d as f64).sqrt()).collect(),
    };
    let mut psi = FeatureMatrix::empty(n);
    for (layer, geo) in spec.layers.iter().zip(&geometry) {
        match layer {
            LayerSpec::Dense(dense) => {
                let bias = dense.b_std.map(|b| (None, b));
                let mut blocks = vec![(Some(&phi), dense.w_std)];
                blocks.extend(bias);
                let next_phi = FeatureMatrix::concat(n, &blocks);
                psi = match spec.parameterization {
                    Parameterization::Ntk => FeatureMatrix::concat(
                        n,
                        &[(Some(&next_phi), 1.0), (Some(&psi), dense.w_std)],
                    ),
                    Parameterization::Standard => {
                        let mut blocks = vec![
                            (Some(&phi), (geo.fan_in as f64).sqrt()),
                            (Some(&psi), dense.w_std),
                        ];
                        if dense.b_std.is_some() {
                            blocks.push((None, 1.0));
                        }
                        FeatureMatrix::concat(n, &blocks)
                    }
                };
                phi = next_phi;
            }
            LayerSpec::Activation(Activation::Identity) => {}
            LayerSpec::Activation(Activation::Relu) => {
                let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
                rng.set_stream(2 * geo.index as u64);
                let (relu, step) = arc_cosine_features(&phi, options.relu_features, &mut rng);
                let mut sketch_rng = ChaCha8Rng::seed_from_u64(options.seed);
                sketch_rng.set_stream(2 * geo.index as u64 + 1);
                psi = tensor_product(&psi, &step, options.sketch_dim, &mut sketch_rng);
                phi = relu;
            }
            LayerSpec::Flatten if matches!(geo.input, FeatureShape::Flat(_)) => {}
            other => {
                return Err(unsupported(
                    geo.index,
                    other.kind(),
                    "random features cover dense, relu and identity layers only",
                ));
            }
        }
    }
    let to_host = |m: FeatureMatrix| HostArray::new(vec![m.rows, m.cols], m.data);
    Ok(NtkFeatures {
        nngp: to_host(phi),
        ntk: to_host(psi),
    })
}

/// `relu(W φ) / √m` and `step(W φ) / √m` with `W` `[m, cols]` standard normal, drawn one
/// row at a time.
fn arc_cosine_features(
    phi: &FeatureMatrix,
    m: usize,
    rng: &mut ChaCha8Rng,
) -> (FeatureMatrix, FeatureMatrix) {
    let n = phi.rows;
    let norm = 1.0 / (m as f64).sqrt();
    let mut relu = vec![0.0; n * m];
    let mut step = vec![0.0; n * m];
    let mut w = vec![0.0; phi.cols];
    for k in 0..m {
        w.iter_mut().for_each(|v| *v = StandardNormal.sample(rng));
        for s in 0..n {
            let u: f64 = w.iter().zip(phi.row(s)).map(|(a, b)| a * b).sum();
            if u > 0.0 {
                relu[s * m + k] = norm * u;
                step[s * m + k] = norm;
            }
        }
    }
    let mk = |data| FeatureMatrix {
        rows: n,
        cols: m,
        data,
    };
    (mk(relu), mk(step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InfiniteOptions, kernels};

    const MLP: &str = r#"{"input_shape":[6],"layers":[
        {"type":"dense","width":64,"w_std":1.4142135,"b_std":0.1},{"type":"relu"},
        {"type":"dense","width":64,"w_std":1.4142135,"b_std":0.1},{"type":"relu"},
        {"type":"dense","width":1,"w_std":1.0,"b_std":0.0}]}"#;

    fn inputs(n: usize, d: usize) -> HostArray {
        HostArray::new(
            vec![n, d],
            (0..n * d)
                .map(|i| ((i * 37 + 11) as f64 * 0.61).sin() * 1.3)
                .collect(),
        )
    }

    fn rel_frobenius(a: &HostArray, b: &HostArray) -> f64 {
        let num: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).powi(2))
            .sum();
        let den: f64 = b.data.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    /// Mean relative Frobenius errors (NNGP, NTK) over `seeds` at `m` features.
    fn errors(spec: &NetworkSpec, x: &HostArray, m: usize, seeds: u64) -> (f64, f64) {
        let exact = kernels(spec, x, None, &InfiniteOptions::default()).unwrap();
        let mut acc = (0.0, 0.0);
        for seed in 0..seeds {
            let f = relu_mlp_features(
                spec,
                x,
                &FeatureOptions {
                    relu_features: m,
                    sketch_dim: m,
                    seed,
                },
            )
            .unwrap();
            acc.0 += rel_frobenius(&feature_kernel(&f.nngp, &f.nngp).unwrap(), &exact.nngp);
            acc.1 += rel_frobenius(&feature_kernel(&f.ntk, &f.ntk).unwrap(), &exact.ntk);
        }
        (acc.0 / seeds as f64, acc.1 / seeds as f64)
    }

    #[test]
    fn feature_kernels_converge_to_the_exact_ones_like_one_over_sqrt_m() {
        let spec = NetworkSpec::from_json(MLP).unwrap();
        let x = inputs(8, 6);
        let (s_small, t_small) = errors(&spec, &x, 64, 6);
        let (s_large, t_large) = errors(&spec, &x, 1024, 6);
        // 16× the features: errors ÷ 4 expected; allow 2.5 .. 6.5 for the randomness.
        eprintln!("NNGP {s_small:.4} -> {s_large:.4}, NTK {t_small:.4} -> {t_large:.4}");
        for (small, large) in [(s_small, s_large), (t_small, t_large)] {
            let ratio = small / large;
            assert!((2.5..6.5).contains(&ratio), "{small} -> {large} (÷{ratio})");
        }
        // Like a width-1024 network (whose empirical NTK is ~0.07 off, see
        // tests/infinite_oracle.rs): measured 0.089 (NNGP) and 0.089 (NTK).
        assert!(s_large < 0.15, "NNGP rel error {s_large} at m = 1024");
        assert!(t_large < 0.15, "NTK rel error {t_large} at m = 1024");
    }

    #[test]
    fn standard_parameterization_and_no_bias_are_covered() {
        let spec = NetworkSpec::from_json(
            r#"{"input_shape":[5],"parameterization":"standard","layers":[
            {"type":"dense","width":8,"w_std":1.3,"b_std":null},{"type":"relu"},{"type":"identity"},
            {"type":"dense","width":2,"w_std":1.0,"b_std":0.2}]}"#,
        )
        .unwrap();
        let x = inputs(6, 5);
        let (s, t) = errors(&spec, &x, 2048, 3);
        assert!(s < 0.05 && t < 0.05, "{s} {t}");
    }

    #[test]
    fn same_seed_gives_compatible_features_across_calls() {
        let spec = NetworkSpec::from_json(MLP).unwrap();
        let x = inputs(5, 6);
        let o = FeatureOptions {
            relu_features: 32,
            sketch_dim: 32,
            seed: 7,
        };
        let all = relu_mlp_features(&spec, &x, &o).unwrap();
        let first = relu_mlp_features(&spec, &x.rows(0, 2), &o).unwrap();
        assert_eq!(first.ntk.data[..], all.ntk.data[..first.ntk.data.len()]);
    }

    #[test]
    fn unsupported_layers_and_options_are_errors() {
        let x = inputs(2, 4);
        let erf = NetworkSpec::from_json(
            r#"{"input_shape":[4],"layers":[{"type":"dense","width":3},{"type":"erf"},{"type":"dense","width":1}]}"#,
        )
        .unwrap();
        let e = relu_mlp_features(&erf, &x, &FeatureOptions::default()).unwrap_err();
        assert!(
            matches!(e, InfiniteError::Unsupported { index: 1, .. }),
            "{e}"
        );
        let relu = NetworkSpec::from_json(
            r#"{"input_shape":[4],"layers":[{"type":"dense","width":3},{"type":"relu"},{"type":"dense","width":1}]}"#,
        )
        .unwrap();
        let bad = FeatureOptions {
            sketch_dim: 0,
            ..Default::default()
        };
        assert!(matches!(
            relu_mlp_features(&relu, &x, &bad),
            Err(InfiniteError::Option { .. })
        ));
        assert!(matches!(
            relu_mlp_features(&relu, &inputs(2, 5), &FeatureOptions::default()),
            Err(InfiniteError::InputShape { .. })
        ));
    }
}
