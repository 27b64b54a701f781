//! PolySketch: sketches of the tensor powers `u^{⊗j}`, `j = 2..=degree`, of one vector,
//! so that `S_j(u)·S_j(v) ≈ (u·v)^j` (Ahle et al. 2020, "Oblivious sketching of
//! high-degree polynomial kernels"; Zandieh et al. 2021, arXiv 2104.00415, Algorithm 1).
//!
//! A complete binary tree with `p` leaves (`p` the next power of two `≥ degree`): each
//! leaf an independent [`Srht`] of the input, each internal node an independent
//! [`TensorSrht`] of its two children. The sketch of `u^{⊗j}` feeds `u` to the first `j`
//! leaves and the fixed unit vector `e₁` to the others (`(e₁·e₁)^{p−j} = 1`), so every
//! degree has depth `log₂ p` instead of `j` (lower variance than chaining `j − 1`
//! products). Each node is unbiased given its children and independent of them, so
//! `E[S_j(u)·S_j(v)] = (u·v)^j`.
//!
//! Sharing: a node whose leaves all hold `e₁` is the same for every input (computed once);
//! a node whose leaves all hold `u` is the same for every degree (computed once per
//! input); only the one node per level that straddles the boundary `j` is computed per
//! degree, so all degrees cost about `p + degree · log₂ p` TensorSRHTs per input.

use super::hadamard::{Srht, TensorSrht};
use rand::Rng;
use std::borrow::Cow;

/// A PolySketch of inputs of dimension `input` up to `degree`.
#[derive(Debug, Clone)]
pub struct PolySketch {
    input: usize,
    degree: usize,
    leaves: Vec<Srht>,
    /// `nodes[l][n]`: the TensorSRHT at level `l + 1`, node `n` (children `2n`, `2n + 1`
    /// of level `l`).
    nodes: Vec<Vec<TensorSrht>>,
    /// `e_values[l][n]`: the value of node `n` of level `l` when all its leaves hold `e₁`.
    e_values: Vec<Vec<Vec<f64>>>,
}

/// Scratch buffers of [`PolySketch::powers`] (reused across rows).
#[derive(Debug, Default)]
pub struct Scratch {
    a: Vec<f64>,
    b: Vec<f64>,
}

impl PolySketch {
    /// Bytes that drawing `PolySketch::new(input, degree, dim, ..)` allocates (an upper
    /// bound): its `q'` leaf SRHTs and `q' − 1` tensor SRHTs ([`Srht::bytes_for`],
    /// [`TensorSrht::bytes_for`]), the node values at `e₁` (twice, while they are built)
    /// and the scratch.
    pub fn bytes_for(input: usize, degree: usize, dim: usize) -> u64 {
        let p = degree.max(2).next_power_of_two();
        let padded = input.max(1).next_power_of_two();
        let dim = dim.max(1);
        let mut width = if dim >= padded { padded } else { dim };
        let mut bytes = p as u64 * Srht::bytes_for(input, dim);
        let mut values = (p * width) as u64;
        let mut scratch = padded.max(width);
        let mut count = p;
        while count > 1 {
            count /= 2;
            bytes += count as u64 * TensorSrht::bytes_for(width, width, dim);
            scratch = scratch.max(width.next_power_of_two());
            width = match width.checked_mul(width) {
                Some(ww) if ww <= dim => ww,
                _ => dim,
            };
            values += (count * width) as u64;
        }
        // The transforms' and node lists' own structs: a few hundred bytes per node.
        let structs = 4096 + 512 * p as u64;
        bytes + 16 * values + 8 * input as u64 + 16 * scratch as u64 + structs
    }

    /// Bytes held by its transforms and node values.
    pub fn heap_bytes(&self) -> u64 {
        let leaves: u64 = self.leaves.iter().map(Srht::heap_bytes).sum();
        let nodes: u64 = self
            .nodes
            .iter()
            .flatten()
            .map(TensorSrht::heap_bytes)
            .sum();
        let values: usize = self.e_values.iter().flatten().map(Vec::len).sum();
        leaves + nodes + 8 * values as u64
    }

    /// Draws a PolySketch of `input`-dimensional vectors, degrees up to `degree` (≥ 2),
    /// every node sketching to `dim` dimensions.
    pub fn new(input: usize, degree: usize, dim: usize, rng: &mut impl Rng) -> Self {
        let degree = degree.max(2);
        let p = degree.next_power_of_two();
        let leaves: Vec<Srht> = (0..p).map(|_| Srht::new(input, dim, rng)).collect();
        let mut nodes = Vec::new();
        let mut width = leaves[0].output_dim();
        let mut count = p;
        while count > 1 {
            count /= 2;
            let level: Vec<TensorSrht> = (0..count)
                .map(|_| TensorSrht::new(width, width, dim, rng))
                .collect();
            width = level[0].output_dim();
            nodes.push(level);
        }
        let mut sketch = PolySketch {
            input,
            degree,
            leaves,
            nodes,
            e_values: Vec::new(),
        };
        let mut e1 = vec![0.0; input];
        if let Some(first) = e1.first_mut() {
            *first = 1.0;
        }
        let mut scratch = Scratch::default();
        let mut level: Vec<Vec<f64>> = sketch
            .leaves
            .iter()
            .map(|s| {
                let mut out = vec![0.0; s.output_dim()];
                s.apply(&e1, &mut scratch.a, &mut out);
                out
            })
            .collect();
        let mut e_values = vec![level.clone()];
        for tensors in &sketch.nodes {
            level = tensors
                .iter()
                .enumerate()
                .map(|(n, t)| {
                    let mut out = vec![0.0; t.output_dim()];
                    t.apply(
                        &level[2 * n],
                        &level[2 * n + 1],
                        &mut scratch.a,
                        &mut scratch.b,
                        &mut out,
                    );
                    out
                })
                .collect();
            e_values.push(level.clone());
        }
        sketch.e_values = e_values;
        sketch
    }

    /// Dimension of each `S_j`.
    pub fn output_dim(&self) -> usize {
        self.e_values.last().expect("at least the leaves")[0].len()
    }

    /// Highest degree sketched.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// `S_j(u)` for `j = 2..=degree` (`result[j − 2]`).
    ///
    /// # Shapes
    /// `u`: `[input]`; each result `[output_dim]`.
    pub fn powers(&self, u: &[f64], scratch: &mut Scratch) -> Vec<Vec<f64>> {
        debug_assert_eq!(u.len(), self.input);
        let levels = self.nodes.len();
        // all_u[l][n]: node n of level l with only u leaves, for the nodes some degree
        // ≤ `degree` needs whole (their span ends at or before `degree`).
        let mut all_u: Vec<Vec<Option<Vec<f64>>>> = Vec::with_capacity(levels + 1);
        all_u.push(
            self.leaves
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    (i < self.degree).then(|| {
                        let mut out = vec![0.0; s.output_dim()];
                        s.apply(u, &mut scratch.a, &mut out);
                        out
                    })
                })
                .collect(),
        );
        for (l, tensors) in self.nodes.iter().enumerate() {
            let span = 1usize << (l + 1);
            let row: Vec<Option<Vec<f64>>> = tensors
                .iter()
                .enumerate()
                .map(|(n, t)| {
                    if (n + 1) * span > self.degree {
                        return None;
                    }
                    let (left, right) = (&all_u[l][2 * n], &all_u[l][2 * n + 1]);
                    let (Some(left), Some(right)) = (left, right) else {
                        return None;
                    };
                    let mut out = vec![0.0; t.output_dim()];
                    t.apply(left, right, &mut scratch.a, &mut scratch.b, &mut out);
                    Some(out)
                })
                .collect();
            all_u.push(row);
        }
        (2..=self.degree)
            .map(|j| self.node(levels, 0, j, &all_u, scratch).into_owned())
            .collect()
    }

    /// Node `n` of level `level` for the degree `j` (leaves `< j` hold `u`).
    fn node<'a>(
        &'a self,
        level: usize,
        n: usize,
        j: usize,
        all_u: &'a [Vec<Option<Vec<f64>>>],
        scratch: &mut Scratch,
    ) -> Cow<'a, [f64]> {
        let span = 1usize << level;
        let start = n * span;
        let count = j.saturating_sub(start).min(span);
        if count == 0 {
            return Cow::Borrowed(&self.e_values[level][n]);
        }
        if count == span
            && let Some(v) = &all_u[level][n]
        {
            return Cow::Borrowed(v);
        }
        // Mixed (or a whole-u node not precomputed): from the children.
        let left = self.node(level - 1, 2 * n, j, all_u, scratch);
        let right = self.node(level - 1, 2 * n + 1, j, all_u, scratch);
        let t = &self.nodes[level - 1][n];
        let mut out = vec![0.0; t.output_dim()];
        let (mut a, mut b) = (
            std::mem::take(&mut scratch.a),
            std::mem::take(&mut scratch.b),
        );
        t.apply(&left, &right, &mut a, &mut b, &mut out);
        scratch.a = a;
        scratch.b = b;
        Cow::Owned(out)
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

    fn unit(n: usize, phase: f64) -> Vec<f64> {
        let v: Vec<f64> = (0..n).map(|i| ((i as f64 + phase) * 0.917).sin()).collect();
        let norm = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    /// The bytes counted before drawing bound the peak the drawing allocates (measured by
    /// the tests' counting allocator), and are not grossly above it; the sizes reach every
    /// sampler regime (a shuffled table, a hash set, keep-all, the exact product).
    #[test]
    fn the_bytes_counted_before_drawing_bound_the_peak_of_drawing() {
        use crate::peak_alloc::peak_of;
        let check = |what: String, counted: u64, peak: usize| {
            assert!(
                peak as u64 <= counted,
                "{what}: peak {peak} > counted {counted}"
            );
            assert!(
                counted <= 4 * peak as u64 + 65536,
                "{what}: counted {counted} vs peak {peak}"
            );
        };
        for (input, degree, dim) in [
            (40, 6, 4096),
            (5000, 8, 1024),
            (3, 2, 64),
            (1, 8, 16),
            (1000, 4, 65536),
        ] {
            let (p, peak) =
                peak_of(|| PolySketch::new(input, degree, dim, &mut ChaCha8Rng::seed_from_u64(0)));
            let counted = PolySketch::bytes_for(input, degree, dim);
            assert!(p.heap_bytes() <= counted);
            check(format!("polysketch {input} {degree} {dim}"), counted, peak);
        }
        for (input, output) in [
            (100, 1 << 20),
            (1 << 12, 100),
            (1 << 12, 1 << 12),
            (1 << 20, 64),
        ] {
            let (_, peak) = peak_of(|| Srht::new(input, output, &mut ChaCha8Rng::seed_from_u64(1)));
            check(
                format!("srht {input} {output}"),
                Srht::bytes_for(input, output),
                peak,
            );
        }
        for (a, b, output) in [
            (64, 64, 1000),
            (1000, 3, 64),
            (1024, 1024, 65536),
            (4096, 4096, 100),
        ] {
            let (_, peak) =
                peak_of(|| TensorSrht::new(a, b, output, &mut ChaCha8Rng::seed_from_u64(2)));
            check(
                format!("tensor srht {a} {b} {output}"),
                TensorSrht::bytes_for(a, b, output),
                peak,
            );
        }
        // The exact product draws nothing.
        assert_eq!(TensorSrht::bytes_for(4, 4, 16), 0);
    }

    #[test]
    fn powers_are_unbiased_for_every_degree() {
        let (u, v) = (unit(6, 0.0), unit(6, 0.8));
        let rho = dot(&u, &v);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let trials = 4000;
        let degree = 5;
        let mut sums = vec![0.0; degree - 1];
        let mut squares = vec![0.0; degree - 1];
        let mut scratch = Scratch::default();
        for _ in 0..trials {
            let p = PolySketch::new(6, degree, 16, &mut rng);
            let (su, sv) = (p.powers(&u, &mut scratch), p.powers(&v, &mut scratch));
            for j in 0..degree - 1 {
                let e = dot(&su[j], &sv[j]);
                sums[j] += e;
                squares[j] += e * e;
            }
        }
        for j in 0..degree - 1 {
            let mean = sums[j] / trials as f64;
            let se = ((squares[j] / trials as f64 - mean * mean) / trials as f64).sqrt();
            let want = rho.powi(j as i32 + 2);
            assert!(
                (mean - want).abs() < 4.0 * se + 1e-12,
                "degree {}: {mean} vs {want} ± {se}",
                j + 2
            );
        }
    }

    #[test]
    fn large_sketches_are_accurate_and_deterministic() {
        let (u, v) = (unit(40, 0.0), unit(40, 2.3));
        let rho = dot(&u, &v);
        let mut scratch = Scratch::default();
        // Each sampled TensorSRHT stage adds a relative variance of about 8/m (fourth
        // moments of the rotated coordinates); degree 6 goes through 3 of them at m = 4096,
        // a standard deviation of about 0.08. RMS over 8 seeds and all degrees:
        let (mut squares, mut count) = (0.0, 0);
        for seed in 0..8 {
            let p = PolySketch::new(40, 6, 4096, &mut ChaCha8Rng::seed_from_u64(seed));
            let (su, sv) = (p.powers(&u, &mut scratch), p.powers(&v, &mut scratch));
            for (j, (a, b)) in su.iter().zip(&sv).enumerate() {
                squares += (dot(a, b) - rho.powi(j as i32 + 2)).powi(2);
                squares += (dot(a, a) - 1.0).powi(2);
                count += 2;
            }
            if seed == 0 {
                let again = PolySketch::new(40, 6, 4096, &mut ChaCha8Rng::seed_from_u64(0));
                assert_eq!(again.powers(&u, &mut scratch), su);
            }
        }
        let rms = (squares / count as f64).sqrt();
        assert!(rms < 0.1, "RMS error {rms}");
    }
}
