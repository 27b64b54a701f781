//! Randomised Hadamard sketches: the SRHT (a fast Johnson–Lindenstrauss map) and the
//! TensorSRHT of two vectors (a fast sketch of their tensor product).
//!
//! Reference: Ailon & Chazelle 2009 (SRHT); Ahle et al. 2020 and Zandieh et al. 2021,
//! arXiv 2104.00415, Definition of TensorSRHT. Both are unbiased: for fixed random signs,
//! the expectation over the sampled coordinates of `S(x)·S(y)` is `x·y` (SRHT), and of
//! `T(a, b)·T(a', b')` is `(a·a')(b·b')` (TensorSRHT), because `H D / √n` is orthogonal.

use rand::Rng;
use rand::seq::index;

/// In-place unnormalised fast Walsh–Hadamard transform, `x ← H x` with `H` the `n × n`
/// Sylvester–Hadamard matrix (`H Hᵀ = n I`).
///
/// # Shapes
/// `x`: `[n]`, `n` a power of two (or 0).
pub fn fwht(x: &mut [f64]) {
    let n = x.len();
    debug_assert!(n == 0 || n.is_power_of_two(), "fwht length {n}");
    let mut h = 1;
    while h < n {
        for block in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (u, v) = (*a, *b);
                *a = u + v;
                *b = u - v;
            }
        }
        h *= 2;
    }
}

fn random_signs(n: usize, rng: &mut impl Rng) -> Vec<f64> {
    (0..n)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect()
}

/// Bytes `rand::seq::index::sample(length, amount)` allocates at its peak, its result as
/// `usize` included: rand 0.9 shuffles a table of `length` u32 in place when
/// `length < 270·amount` (fewer for small amounts), and otherwise fills a hash set of
/// `amount` entries (counted at 32 bytes each).
pub fn sample_bytes(length: u64, amount: u64) -> u64 {
    let table = if length < 270 * amount {
        4 * length
    } else {
        32 * amount
    };
    table + 16 * amount
}

/// A subsampled randomised Hadamard transform `ℝ^input → ℝ^output`:
/// `S(x)_k = (H D x̃)_{r_k} / √output`, with `x̃` the input zero-padded to the next power
/// of two `n`, `D` random signs and `r` `output` distinct coordinates of `0..n` drawn
/// uniformly. When `output ≥ n` every coordinate is kept (`output = n`) and `S` is the
/// orthogonal map `H D / √n`: inner products are then exact.
///
/// Cost per vector: `O(n log n)`.
#[derive(Debug, Clone)]
pub struct Srht {
    input: usize,
    padded: usize,
    signs: Vec<f64>,
    /// Sampled coordinates; empty when all are kept.
    rows: Vec<usize>,
    scale: f64,
}

impl Srht {
    /// Bytes that drawing `Srht::new(input, output, ..)` allocates at its peak (an upper
    /// bound): signs of the padded length, and the sampling of the rows
    /// ([`sample_bytes`]).
    pub fn bytes_for(input: usize, output: usize) -> u64 {
        let padded = input.max(1).next_power_of_two() as u64;
        let out = output.max(1) as u64;
        if out >= padded {
            8 * padded
        } else {
            8 * padded + sample_bytes(padded, out)
        }
    }

    /// Draws an SRHT from `input` to (at most) `output` dimensions.
    pub fn new(input: usize, output: usize, rng: &mut impl Rng) -> Self {
        let padded = input.max(1).next_power_of_two();
        let signs = random_signs(padded, rng);
        let (rows, out) = if output >= padded {
            (Vec::new(), padded)
        } else {
            let mut r = index::sample(rng, padded, output.max(1)).into_vec();
            r.sort_unstable();
            let len = r.len();
            (r, len)
        };
        Srht {
            input,
            padded,
            signs,
            rows,
            scale: 1.0 / (out as f64).sqrt(),
        }
    }

    /// Bytes held (signs and sampled rows).
    pub fn heap_bytes(&self) -> u64 {
        (8 * self.signs.len() + std::mem::size_of::<usize>() * self.rows.len()) as u64
    }

    /// Input dimension.
    pub fn input_dim(&self) -> usize {
        self.input
    }

    /// Output dimension: `min(output, padded input)`.
    pub fn output_dim(&self) -> usize {
        if self.rows.is_empty() {
            self.padded
        } else {
            self.rows.len()
        }
    }

    /// `out = S(x)`, with `work` as scratch (resized to the padded length).
    ///
    /// # Shapes
    /// `x`: `[input_dim]`, `out`: `[output_dim]`.
    pub fn apply(&self, x: &[f64], work: &mut Vec<f64>, out: &mut [f64]) {
        debug_assert_eq!(x.len(), self.input);
        debug_assert_eq!(out.len(), self.output_dim());
        work.clear();
        work.extend(x.iter().zip(&self.signs).map(|(v, s)| v * s));
        work.resize(self.padded, 0.0);
        fwht(work);
        if self.rows.is_empty() {
            for (o, w) in out.iter_mut().zip(work.iter()) {
                *o = w * self.scale;
            }
        } else {
            for (o, &r) in out.iter_mut().zip(&self.rows) {
                *o = work[r] * self.scale;
            }
        }
    }
}

/// A TensorSRHT `ℝ^p × ℝ^q → ℝ^output`, a sketch of the tensor product `a ⊗ b`:
/// `T(a, b)_k = (H D₁ ã)_{i_k} (H D₂ b̃)_{j_k} / √output`, with `(i_k, j_k)` `output`
/// distinct index pairs drawn uniformly. When `p·q ≤ output` the exact Kronecker product
/// `a ⊗ b` is returned instead (no randomness, dimension `p·q`).
///
/// Cost per pair of vectors: `O(n₁ log n₁ + n₂ log n₂ + output)`.
#[derive(Debug, Clone)]
pub struct TensorSrht {
    p: usize,
    q: usize,
    pad_p: usize,
    pad_q: usize,
    signs_p: Vec<f64>,
    signs_q: Vec<f64>,
    /// Sampled pairs `(i, j)`; empty for the exact product.
    pairs: Vec<(u32, u32)>,
    scale: f64,
}

impl TensorSrht {
    /// Bytes that drawing `TensorSrht::new(p, q, output, ..)` allocates at its peak (an
    /// upper bound; nothing for the exact product): the signs, the sampling of the pairs
    /// from the padded grid ([`sample_bytes`]) and the pairs.
    pub fn bytes_for(p: usize, q: usize, output: usize) -> u64 {
        let output = output.max(1) as u64;
        if (p as u64)
            .checked_mul(q as u64)
            .is_some_and(|pq| pq <= output)
        {
            return 0;
        }
        let (pad_p, pad_q) = (
            p.max(1).next_power_of_two() as u64,
            q.max(1).next_power_of_two() as u64,
        );
        let sampling = match pad_p.checked_mul(pad_q) {
            Some(grid) => sample_bytes(grid, output),
            None => 0,
        };
        8 * (pad_p + pad_q) + sampling + 8 * output
    }

    /// Draws a TensorSRHT of `p`- and `q`-dimensional vectors to `output` dimensions.
    pub fn new(p: usize, q: usize, output: usize, rng: &mut impl Rng) -> Self {
        let output = output.max(1);
        let exact = p.checked_mul(q).is_some_and(|pq| pq <= output);
        let pad_p = p.max(1).next_power_of_two();
        let pad_q = q.max(1).next_power_of_two();
        if exact {
            return TensorSrht {
                p,
                q,
                pad_p,
                pad_q,
                signs_p: Vec::new(),
                signs_q: Vec::new(),
                pairs: Vec::new(),
                scale: 1.0,
            };
        }
        let signs_p = random_signs(pad_p, rng);
        let signs_q = random_signs(pad_q, rng);
        let grid = pad_p as u128 * pad_q as u128;
        let pairs: Vec<(u32, u32)> = if grid <= usize::MAX as u128 {
            let mut flat = index::sample(rng, grid as usize, output).into_vec();
            flat.sort_unstable();
            flat.into_iter()
                .map(|f| ((f / pad_q) as u32, (f % pad_q) as u32))
                .collect()
        } else {
            (0..output)
                .map(|_| {
                    (
                        rng.random_range(0..pad_p) as u32,
                        rng.random_range(0..pad_q) as u32,
                    )
                })
                .collect()
        };
        TensorSrht {
            p,
            q,
            pad_p,
            pad_q,
            signs_p,
            signs_q,
            scale: 1.0 / (pairs.len() as f64).sqrt(),
            pairs,
        }
    }

    /// Bytes held (signs and sampled pairs).
    pub fn heap_bytes(&self) -> u64 {
        (8 * (self.signs_p.len() + self.signs_q.len()) + 8 * self.pairs.len()) as u64
    }

    /// Whether the exact Kronecker product is used.
    pub fn is_exact(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Output dimension (`p·q` when exact).
    pub fn output_dim(&self) -> usize {
        if self.is_exact() {
            self.p * self.q
        } else {
            self.pairs.len()
        }
    }

    /// `out = T(a, b)`, with two scratch buffers.
    ///
    /// # Shapes
    /// `a`: `[p]`, `b`: `[q]`, `out`: `[output_dim]`.
    pub fn apply(
        &self,
        a: &[f64],
        b: &[f64],
        work_a: &mut Vec<f64>,
        work_b: &mut Vec<f64>,
        out: &mut [f64],
    ) {
        debug_assert_eq!((a.len(), b.len()), (self.p, self.q));
        debug_assert_eq!(out.len(), self.output_dim());
        if self.is_exact() {
            for (row, &u) in out.chunks_exact_mut(self.q.max(1)).zip(a) {
                for (o, v) in row.iter_mut().zip(b) {
                    *o = u * v;
                }
            }
            return;
        }
        for (work, x, signs, pad) in [
            (&mut *work_a, a, &self.signs_p, self.pad_p),
            (&mut *work_b, b, &self.signs_q, self.pad_q),
        ] {
            work.clear();
            work.extend(x.iter().zip(signs).map(|(v, s)| v * s));
            work.resize(pad, 0.0);
            fwht(work);
        }
        for (o, &(i, j)) in out.iter_mut().zip(&self.pairs) {
            *o = work_a[i as usize] * work_b[j as usize] * self.scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn vector(n: usize, phase: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + phase) * 0.731).sin()).collect()
    }

    #[test]
    fn fwht_matches_the_hadamard_matrix_and_is_self_inverse_up_to_n() {
        let n = 8;
        let x = vector(n, 0.3);
        let mut y = x.clone();
        fwht(&mut y);
        for (i, yi) in y.iter().enumerate() {
            // Sylvester: H[i, j] = (−1)^{popcount(i & j)}.
            let want: f64 = (0..n)
                .map(|j| {
                    let s = if (i & j).count_ones() % 2 == 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    s * x[j]
                })
                .sum();
            assert!((yi - want).abs() < 1e-12);
        }
        fwht(&mut y);
        for (a, b) in y.iter().zip(&x) {
            assert!((a / n as f64 - b).abs() < 1e-12);
        }
    }

    #[test]
    fn srht_keeping_every_coordinate_is_an_isometry() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let s = Srht::new(5, 64, &mut rng);
        assert_eq!(s.output_dim(), 8);
        let (x, y) = (vector(5, 0.0), vector(5, 2.0));
        let (mut sx, mut sy, mut w) = (vec![0.0; 8], vec![0.0; 8], Vec::new());
        s.apply(&x, &mut w, &mut sx);
        s.apply(&y, &mut w, &mut sy);
        assert!((dot(&sx, &sy) - dot(&x, &y)).abs() < 1e-12);
    }

    /// Mean and standard error of `f()` over `trials` draws.
    fn mean_and_error(trials: usize, mut f: impl FnMut() -> f64) -> (f64, f64) {
        let v: Vec<f64> = (0..trials).map(|_| f()).collect();
        let mean = v.iter().sum::<f64>() / trials as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (trials - 1) as f64;
        (mean, (var / trials as f64).sqrt())
    }

    #[test]
    fn subsampled_srht_and_tensor_srht_are_unbiased() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (x, y) = (vector(20, 0.0), vector(20, 1.5));
        let (mean, se) = mean_and_error(20_000, || {
            let s = Srht::new(20, 6, &mut rng);
            let (mut sx, mut sy, mut w) = (vec![0.0; 6], vec![0.0; 6], Vec::new());
            s.apply(&x, &mut w, &mut sx);
            s.apply(&y, &mut w, &mut sy);
            dot(&sx, &sy)
        });
        let want = dot(&x, &y);
        assert!(
            (mean - want).abs() < 4.0 * se,
            "SRHT {mean} vs {want} ± {se}"
        );

        let (a, b) = (vector(7, 0.2), vector(5, 0.9));
        let (a2, b2) = (vector(7, 3.1), vector(5, 4.4));
        let want = dot(&a, &a2) * dot(&b, &b2);
        let (mean, se) = mean_and_error(20_000, || {
            let t = TensorSrht::new(7, 5, 9, &mut rng);
            assert!(!t.is_exact());
            let (mut z, mut z2) = (vec![0.0; 9], vec![0.0; 9]);
            let (mut wa, mut wb) = (Vec::new(), Vec::new());
            t.apply(&a, &b, &mut wa, &mut wb, &mut z);
            t.apply(&a2, &b2, &mut wa, &mut wb, &mut z2);
            dot(&z, &z2)
        });
        assert!(
            (mean - want).abs() < 4.0 * se,
            "TensorSRHT {mean} vs {want} ± {se}"
        );
    }

    #[test]
    fn small_tensor_products_are_exact() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let t = TensorSrht::new(3, 4, 12, &mut rng);
        assert!(t.is_exact());
        let (a, b) = (vector(3, 0.0), vector(4, 1.0));
        let (a2, b2) = (vector(3, 2.0), vector(4, 5.0));
        let (mut z, mut z2) = (vec![0.0; 12], vec![0.0; 12]);
        let (mut wa, mut wb) = (Vec::new(), Vec::new());
        t.apply(&a, &b, &mut wa, &mut wb, &mut z);
        t.apply(&a2, &b2, &mut wa, &mut wb, &mut z2);
        assert!((dot(&z, &z2) - dot(&a, &a2) * dot(&b, &b2)).abs() < 1e-12);
    }
}
