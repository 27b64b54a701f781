//! Monte Carlo kernels: the empirical NNGP/NTK averaged over random initialisations
//! (neural-tangents' `monte_carlo_kernel_fn`), how a finite-width network approaches its
//! infinite-width limit.
//!
//! For seeds `s_1 … s_K`, `K̄ = (1/K) Σ_k K(θ_{s_k})` with the per-entry standard error
//! `√(Σ_k (K_k − K̄)² / (K (K − 1)))` (Welford's update, so only the running mean and sum
//! of squares are held). Initialisations are computed `parallel` at a time (each builds
//! its own network, so at most `parallel` networks are in memory) and folded in seed
//! order, so the result does not depend on `parallel`.

use crate::error::EmpiricalError;
#[cfg(test)]
use crate::error::Result;
use ntk_nets::HostArray;
use rayon::prelude::*;

/// The mean kernel over initialisations and its per-entry standard error.
///
/// # Shapes
/// `mean`, `std_error`: the shape of one kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct MonteCarlo {
    pub mean: HostArray,
    /// `None` with a single initialisation (the standard error needs two).
    pub std_error: Option<HostArray>,
    pub samples: usize,
}

/// Averages `kernel_of(seed)` over `seeds`, `parallel` initialisations at a time, calling
/// `progress(done, total)` after each batch.
///
/// # Errors
/// No seeds; kernels of different shapes; a kernel with NaN/Inf (named by seed); the first
/// error of `kernel_of`.
pub fn monte_carlo_kernel<E: From<EmpiricalError> + Send>(
    seeds: &[u64],
    parallel: usize,
    kernel_of: impl Fn(u64) -> std::result::Result<HostArray, E> + Sync,
    progress: &mut dyn FnMut(usize, usize),
) -> std::result::Result<MonteCarlo, E> {
    if seeds.is_empty() {
        return Err(E::from(EmpiricalError::Option {
            option: "monte-carlo".into(),
            message: "needs at least one initialisation".into(),
        }));
    }
    let parallel = parallel.max(1);
    let mut mean: Option<HostArray> = None;
    let mut m2: Vec<f64> = Vec::new();
    let mut count = 0usize;
    progress(0, seeds.len());
    for batch in seeds.chunks(parallel) {
        let kernels: Vec<std::result::Result<HostArray, E>> = if batch.len() == 1 {
            vec![kernel_of(batch[0])]
        } else {
            batch.par_iter().map(|&s| kernel_of(s)).collect()
        };
        for (k, &seed) in kernels.into_iter().zip(batch) {
            let k = k?;
            if let Some((i, v)) = k.first_non_finite() {
                return Err(E::from(EmpiricalError::NonFinite {
                    place: format!("the kernel of seed {seed} (value {v} at flat index {i})"),
                }));
            }
            count += 1;
            match &mut mean {
                None => {
                    m2 = vec![0.0; k.data.len()];
                    mean = Some(k);
                }
                Some(m) => {
                    if m.shape != k.shape {
                        return Err(E::from(EmpiricalError::Option {
                            option: "monte-carlo".into(),
                            message: format!(
                                "the kernel of seed {seed} has shape {:?}, the first {:?}",
                                k.shape, m.shape
                            ),
                        }));
                    }
                    let n = count as f64;
                    for ((mu, s), x) in m.data.iter_mut().zip(m2.iter_mut()).zip(&k.data) {
                        let d = x - *mu;
                        *mu += d / n;
                        *s += d * (x - *mu);
                    }
                }
            }
        }
        progress(count, seeds.len());
    }
    let mean = mean.expect("at least one seed");
    let std_error = (count > 1).then(|| {
        let k = count as f64;
        HostArray::new(
            mean.shape.clone(),
            m2.iter().map(|s| (s / (k * (k - 1.0))).sqrt()).collect(),
        )
    });
    Ok(MonteCarlo {
        mean,
        std_error,
        samples: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(seed: u64) -> Result<HostArray> {
        let v = seed as f64;
        Ok(HostArray::new(vec![2], vec![v, 2.0 * v * v]))
    }

    #[test]
    fn mean_and_standard_error_match_the_two_pass_formulas() {
        let seeds: Vec<u64> = (1..=7).collect();
        let mut calls = Vec::new();
        let mc = monte_carlo_kernel(&seeds, 3, fake, &mut |d, t| calls.push((d, t))).unwrap();
        assert_eq!(calls, vec![(0, 7), (3, 7), (6, 7), (7, 7)]);
        let xs: Vec<[f64; 2]> = seeds
            .iter()
            .map(|&s| [s as f64, 2.0 * (s * s) as f64])
            .collect();
        for e in 0..2 {
            let m = xs.iter().map(|x| x[e]).sum::<f64>() / 7.0;
            let var = xs.iter().map(|x| (x[e] - m).powi(2)).sum::<f64>() / 6.0;
            let se = (var / 7.0).sqrt();
            assert!((mc.mean.data[e] - m).abs() < 1e-12 * m);
            assert!((mc.std_error.as_ref().unwrap().data[e] - se).abs() < 1e-12 * se);
        }
        // The batch size does not change the result.
        let one = monte_carlo_kernel(&seeds, 1, fake, &mut |_, _| {}).unwrap();
        assert_eq!(one, mc);
    }

    #[test]
    fn errors_are_named() {
        assert!(monte_carlo_kernel(&[], 1, fake, &mut |_, _| {}).is_err());
        let single = monte_carlo_kernel(&[4], 1, fake, &mut |_, _| {}).unwrap();
        assert!(single.std_error.is_none());
        let nan = |s: u64| -> Result<HostArray> {
            Ok(HostArray::new(
                vec![1],
                vec![if s == 2 { f64::NAN } else { 1.0 }],
            ))
        };
        let e = monte_carlo_kernel(&[1, 2, 3], 2, nan, &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("seed 2"), "{e}");
    }
}
