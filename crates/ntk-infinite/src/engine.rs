//! The entry point: input checks, the memory bound, per-sample variance chains and the
//! pair loop (parallel over rows with rayon; the upper triangle only when `x2 = x1`).

use crate::error::{InfiniteError, Result};
use crate::plan::{Plan, SampleVariances};
use ntk_nets::{HostArray, NetworkSpec};
use rayon::prelude::*;

/// Options of [`kernels`].
#[derive(Debug, Clone, PartialEq)]
pub struct InfiniteOptions {
    /// Bound on the estimated working memory in bytes (pair blocks in flight, per-sample
    /// variances, output); above it [`kernels`] returns
    /// [`InfiniteError::TooMuchMemory`] with the estimate. Pooling networks keep all pixel
    /// pairs (`(H·W)²` numbers per sample pair), so large images hit it.
    pub max_memory: u64,
    /// Gauss–Hermite points per axis for tanh (the oracle, neural-tangents
    /// `ElementwiseNumerical`, uses 64).
    pub tanh_quadrature_degree: usize,
}

/// Default of [`InfiniteOptions::tanh_quadrature_degree`]: the oracle's `deg=64`.
pub const DEFAULT_TANH_DEGREE: usize = 64;

impl Default for InfiniteOptions {
    fn default() -> Self {
        InfiniteOptions {
            max_memory: 2 << 30,
            tanh_quadrature_degree: DEFAULT_TANH_DEGREE,
        }
    }
}

/// The infinite-width kernels of ONE output.
///
/// # Shapes
/// `nngp`, `ntk`: `[N1, N2]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InfiniteKernels {
    pub nngp: HostArray,
    pub ntk: HostArray,
}

fn check_batch(x: &HostArray, what: &str, input_shape: &[usize]) -> Result<usize> {
    if x.shape.len() != input_shape.len() + 1 || x.shape[1..] != *input_shape {
        return Err(InfiniteError::InputShape {
            what: what.to_string(),
            got: x.shape.clone(),
            expected: input_shape.to_vec(),
        });
    }
    if x.shape[0] == 0 {
        return Err(InfiniteError::NoSamples {
            what: what.to_string(),
        });
    }
    if x.data.len() != x.shape.iter().product::<usize>() {
        return Err(InfiniteError::InputShape {
            what: format!("{what} (data length {})", x.data.len()),
            got: x.shape.clone(),
            expected: input_shape.to_vec(),
        });
    }
    if let Some((index, value)) = x.first_non_finite() {
        return Err(InfiniteError::NonFiniteInput {
            what: what.to_string(),
            index,
            value,
        });
    }
    Ok(x.shape[0])
}

/// The exact infinite-width NNGP and NTK of one output of `spec` between the samples of
/// `x1` and `x2` (`None`: `x2 = x1`; then only the upper triangle is computed and
/// mirrored, unless the network has a tanh, whose quadrature is not exactly symmetric).
///
/// Conventions are neural-tangents `stax` v0.6.5 (`kernel_fn(x1, x2, ("nngp", "ntk"))`):
/// see the crate documentation.
///
/// # Shapes
/// `x1`: `[N1, *input_shape]`, `x2`: `[N2, *input_shape]`; outputs `[N1, N2]`.
///
/// # Errors
/// Bad shapes, empty batches, NaN/Inf inputs, a spec the recursions do not cover (named
/// layer), a working-memory estimate above `options.max_memory`, overflowing kernels.
pub fn kernels(
    spec: &NetworkSpec,
    x1: &HostArray,
    x2: Option<&HostArray>,
    options: &InfiniteOptions,
) -> Result<InfiniteKernels> {
    let plan = Plan::build(spec, options.tanh_quadrature_degree)?;
    run_pairs(&plan, &spec.input_shape, x1, x2, options)
}

/// A compiled network as the pair loop sees it: per-sample variance chains and the
/// `(NNGP, NTK)` of one pair (the sequential [`Plan`] and the graph
/// [`crate::graph::GraphPlan`]).
pub trait PairKernel: Sync {
    /// Numbers per sample.
    fn sample_len(&self) -> usize;
    /// Per-sample variances wherever the rules need them (nonlinearities, norms).
    fn sample_variances(&self, x: &[f64]) -> SampleVariances;
    /// `(NNGP, NTK)` of one output for the pair `(x, y)`.
    fn pair(&self, x: &[f64], y: &[f64], vx: &SampleVariances, vy: &SampleVariances) -> (f64, f64);
    /// Whether `pair(x, y) = pair(y, x)` exactly (false with tanh's quadrature).
    fn is_symmetric(&self) -> bool;
    /// Estimated working memory for `n1 × n2` pairs on `threads` threads, with a breakdown.
    fn memory_estimate(&self, n1: usize, n2: usize, threads: usize) -> (u128, String);
}

impl PairKernel for Plan {
    fn sample_len(&self) -> usize {
        self.input.numel()
    }
    fn sample_variances(&self, x: &[f64]) -> SampleVariances {
        Plan::sample_variances(self, x)
    }
    fn pair(&self, x: &[f64], y: &[f64], vx: &SampleVariances, vy: &SampleVariances) -> (f64, f64) {
        Plan::pair(self, x, y, vx, vy)
    }
    fn is_symmetric(&self) -> bool {
        Plan::is_symmetric(self)
    }
    fn memory_estimate(&self, n1: usize, n2: usize, threads: usize) -> (u128, String) {
        Plan::memory_estimate(self, n1, n2, threads)
    }
}

/// The checks, the memory bound and the pair loop shared by every network kind.
///
/// # Shapes
/// `x1`: `[N1, *input_shape]`, `x2`: `[N2, *input_shape]`; outputs `[N1, N2]`.
pub fn run_pairs(
    plan: &impl PairKernel,
    input_shape: &[usize],
    x1: &HostArray,
    x2: Option<&HostArray>,
    options: &InfiniteOptions,
) -> Result<InfiniteKernels> {
    let n1 = check_batch(x1, "x1", input_shape)?;
    let n2 = match x2 {
        Some(x2) => check_batch(x2, "x2", input_shape)?,
        None => n1,
    };
    let threads = rayon::current_num_threads().max(1);
    let (needed, detail) = plan.memory_estimate(n1, n2, threads);
    if needed > options.max_memory as u128 {
        return Err(InfiniteError::TooMuchMemory {
            needed: u64::try_from(needed).unwrap_or(u64::MAX),
            limit: options.max_memory,
            detail,
        });
    }
    let len = plan.sample_len();
    let sample =
        |x: &'_ HostArray, i: usize| -> Vec<f64> { x.data[i * len..(i + 1) * len].to_vec() };
    let variances = |x: &HostArray, n: usize| -> Vec<SampleVariances> {
        (0..n)
            .into_par_iter()
            .map(|i| plan.sample_variances(&x.data[i * len..(i + 1) * len]))
            .collect()
    };
    let v1 = variances(x1, n1);
    let v2_owned = x2.map(|x| variances(x, n2));
    let (x2r, v2) = match (x2, &v2_owned) {
        (Some(x), Some(v)) => (x, v),
        _ => (x1, &v1),
    };
    // Mirror only where the pair rule is symmetric (not with tanh's quadrature).
    let symmetric = x2.is_none() && plan.is_symmetric();
    let rows: Vec<Vec<(f64, f64)>> = (0..n1)
        .into_par_iter()
        .map(|i| {
            let xi = sample(x1, i);
            let start = if symmetric { i } else { 0 };
            (start..n2)
                .map(|j| plan.pair(&xi, &x2r.data[j * len..(j + 1) * len], &v1[i], &v2[j]))
                .collect()
        })
        .collect();
    let mut nngp = vec![0.0; n1 * n2];
    let mut ntk = vec![0.0; n1 * n2];
    for (i, row) in rows.iter().enumerate() {
        let start = if symmetric { i } else { 0 };
        for (k, &(s, t)) in row.iter().enumerate() {
            let j = start + k;
            nngp[i * n2 + j] = s;
            ntk[i * n2 + j] = t;
            if symmetric {
                nngp[j * n2 + i] = s;
                ntk[j * n2 + i] = t;
            }
        }
    }
    for (kernel, data) in [("NNGP", &nngp), ("NTK", &ntk)] {
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(InfiniteError::NonFiniteKernel {
                kernel,
                row: pos / n2,
                col: pos % n2,
                value: data[pos],
            });
        }
    }
    Ok(InfiniteKernels {
        nngp: HostArray::new(vec![n1, n2], nngp),
        ntk: HostArray::new(vec![n1, n2], ntk),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> NetworkSpec {
        NetworkSpec::from_json(json).unwrap()
    }

    /// Deterministic pseudo-random inputs in [-1.5, 1.5).
    fn inputs(shape: Vec<usize>, seed: u64) -> HostArray {
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 3.0 - 1.5
            })
            .collect();
        HostArray::new(shape, data)
    }

    const CNN: &str = r#"{"input_shape":[2,5,5],"layers":[
        {"type":"conv2d","channels":3,"kernel":[3,3],"w_std":1.4,"b_std":0.1},{"type":"relu"},
        {"type":"conv2d","channels":3,"kernel":[3,3],"w_std":1.3,"b_std":0.0},
        {"type":"avg_pool2d","window":[2,2],"stride":[1,1]},{"type":"erf"},
        {"type":"conv2d","channels":3,"kernel":[2,2],"w_std":1.2,"b_std":0.2},{"type":"gelu"},
        {"type":"global_avg_pool"},{"type":"dense","width":2}]}"#;

    /// Cholesky of `k + jitter I` succeeds iff positive definite.
    fn is_positive_definite(k: &HostArray, jitter: f64) -> bool {
        let n = k.shape[0];
        let mut l = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let mut s = k.data[i * n + j] + if i == j { jitter } else { 0.0 };
                for p in 0..j {
                    s -= l[i * n + p] * l[j * n + p];
                }
                if i == j {
                    if s <= 0.0 {
                        return false;
                    }
                    l[i * n + i] = s.sqrt();
                } else {
                    l[i * n + j] = s / l[j * n + j];
                }
            }
        }
        true
    }

    #[test]
    fn kernels_are_symmetric_and_positive_definite() {
        let s = spec(CNN);
        let x = inputs(vec![6, 2, 5, 5], 1);
        let k = kernels(&s, &x, None, &InfiniteOptions::default()).unwrap();
        let full = kernels(&s, &x, Some(&x), &InfiniteOptions::default()).unwrap();
        for m in [&k.nngp, &k.ntk] {
            let scale = m.data.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(is_positive_definite(m, 1e-12 * scale));
        }
        // The explicit x2 = x1 call computes the lower triangle too: symmetric to rounding.
        for i in 0..6 {
            for j in 0..6 {
                let (a, b) = (full.ntk.data[i * 6 + j], full.ntk.data[j * 6 + i]);
                assert!((a - b).abs() <= 1e-14 * a.abs());
                assert!((k.ntk.data[i * 6 + j] - a).abs() <= 1e-14 * a.abs());
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let s = spec(CNN);
        let o = InfiniteOptions::default();
        let wrong = inputs(vec![2, 2, 5, 4], 2);
        assert!(matches!(
            kernels(&s, &wrong, None, &o),
            Err(InfiniteError::InputShape { .. })
        ));
        let empty = HostArray::new(vec![0, 2, 5, 5], vec![]);
        assert!(matches!(
            kernels(&s, &empty, None, &o),
            Err(InfiniteError::NoSamples { .. })
        ));
        let mut nan = inputs(vec![2, 2, 5, 5], 3);
        nan.data[7] = f64::NAN;
        let x1 = inputs(vec![1, 2, 5, 5], 4);
        let e = kernels(&s, &x1, Some(&nan), &o).unwrap_err();
        assert!(
            matches!(e, InfiniteError::NonFiniteInput { index: 7, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("x2"));
        let e = kernels(
            &s,
            &x1,
            None,
            &InfiniteOptions {
                tanh_quadrature_degree: 0,
                ..o.clone()
            },
        );
        // No tanh in this network: the degree is not used.
        assert!(e.is_ok());
    }

    #[test]
    fn unsupported_layers_name_the_layer() {
        let x = inputs(vec![2, 4], 5);
        for (json, index) in [
            (
                r#"{"input_shape":[4],"layers":[{"type":"relu"},{"type":"dense","width":1}]}"#,
                0,
            ),
            (
                r#"{"input_shape":[4],"layers":[{"type":"dense","width":3},{"type":"tanh"},{"type":"identity"},{"type":"gelu"},{"type":"dense","width":1}]}"#,
                3,
            ),
        ] {
            let e = kernels(&spec(json), &x, None, &InfiniteOptions::default()).unwrap_err();
            match &e {
                InfiniteError::Unsupported { index: i, .. } => assert_eq!(*i, index, "{e}"),
                other => panic!("{other}"),
            }
            assert!(e.to_string().contains(&format!("layer {index}")));
        }
        // A flatten between conv and a nonlinearity loses the per-position structure.
        let x = inputs(vec![2, 1, 3, 3], 6);
        let json = r#"{"input_shape":[1,3,3],"layers":[{"type":"conv2d","channels":2,"kernel":[3,3]},{"type":"flatten"},{"type":"relu"},{"type":"dense","width":1}]}"#;
        let e = kernels(&spec(json), &x, None, &InfiniteOptions::default()).unwrap_err();
        assert!(
            matches!(e, InfiniteError::Unsupported { index: 2, .. }),
            "{e}"
        );
        // A tanh with a bad quadrature degree is an option error.
        let json = r#"{"input_shape":[4],"layers":[{"type":"dense","width":3},{"type":"tanh"},{"type":"dense","width":1}]}"#;
        let e = kernels(
            &spec(json),
            &inputs(vec![2, 4], 7),
            None,
            &InfiniteOptions {
                tanh_quadrature_degree: 0,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, InfiniteError::Option { .. }), "{e}");
    }

    #[test]
    fn pooling_networks_on_large_images_hit_the_memory_bound() {
        let json = r#"{"input_shape":[3,64,64],"layers":[{"type":"conv2d","channels":8,"kernel":[3,3]},{"type":"relu"},{"type":"global_avg_pool"},{"type":"dense","width":1}]}"#;
        let x = inputs(vec![2, 3, 64, 64], 8);
        let bound = InfiniteOptions {
            max_memory: 256 << 20,
            ..Default::default()
        };
        let e = kernels(&spec(json), &x, None, &bound).unwrap_err();
        match &e {
            InfiniteError::TooMuchMemory { needed, limit, .. } => {
                // (64·64)² position pairs × 8 bytes × (input + output) × (NNGP + NTK) per thread.
                assert!(*needed >= 4096u64 * 4096 * 8 * 2 * 2, "{e}");
                assert_eq!(*limit, 256 << 20);
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("max_memory"));
        // Without pooling the same-position layout is small.
        let json = r#"{"input_shape":[3,64,64],"layers":[{"type":"conv2d","channels":8,"kernel":[3,3]},{"type":"relu"},{"type":"flatten"},{"type":"dense","width":1}]}"#;
        let (needed, _) = Plan::build(&spec(json), 64)
            .unwrap()
            .memory_estimate(2, 2, 2);
        assert!(needed < 1 << 20);
    }

    #[test]
    fn overflowing_inputs_are_an_error_not_a_nan_kernel() {
        let json = r#"{"input_shape":[2],"layers":[{"type":"dense","width":3,"w_std":1e200},{"type":"relu"},{"type":"dense","width":1,"w_std":1e200}]}"#;
        let x = HostArray::new(vec![1, 2], vec![1e100, 1e100]);
        let e = kernels(&spec(json), &x, None, &InfiniteOptions::default()).unwrap_err();
        assert!(matches!(e, InfiniteError::NonFiniteKernel { .. }), "{e}");
    }
}
