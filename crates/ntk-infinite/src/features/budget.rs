//! The memory of a feature map's random transforms, counted before they are drawn.
//!
//! A map holds SRHTs (`signs` of the padded input length, sampled `rows`), tensor SRHTs
//! and PolySketch trees whose sizes grow with the feature dimension `m` (PolySketch of
//! degree `q`: `2·q'` transforms of about `m` numbers each, `q'` the next power of two).
//! [`Draws`] carries the random stream and a running count of those bytes; each
//! transform is charged by the `bytes_for` of its type *before* it is drawn, so a map
//! that would exceed its bound is refused without allocating it. [`batch_within`] then
//! sizes the batches of inputs so that the transforms, the features and one batch's
//! working set stay within the same bound, and [`apply_in_batches`] runs them.

use super::hadamard::{Srht, TensorSrht};
use super::map::NtkFeatures;
use super::polysketch::PolySketch;
use crate::error::{InfiniteError, Result};
use ntk_nets::HostArray;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The random stream of a map being compiled, with the bytes of its transforms so far.
#[derive(Debug)]
pub(crate) struct Draws {
    pub(crate) rng: ChaCha8Rng,
    spent: u64,
    limit: Option<u64>,
}

impl Draws {
    pub(crate) fn new(seed: u64, limit: Option<u64>) -> Self {
        Draws {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spent: 0,
            limit,
        }
    }

    /// Counts `bytes` of a transform about to be drawn for layer `index` (`kind`),
    /// refusing when the total passes the limit.
    pub(crate) fn charge(&mut self, bytes: u64, index: usize, kind: &str) -> Result<()> {
        self.spent = self.spent.saturating_add(bytes);
        match self.limit {
            Some(limit) if self.spent > limit => Err(InfiniteError::FeatureMemory {
                needed: self.spent,
                limit,
                detail: format!(
                    "its random transforms alone, counted up to layer {index} ({kind}); \
                     most of them grow with the feature dimension"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The bytes charged so far.
    pub(crate) fn spent(&self) -> u64 {
        self.spent
    }

    /// Charges and draws an SRHT from `input` to `output` dimensions.
    pub(crate) fn srht(
        &mut self,
        input: usize,
        output: usize,
        index: usize,
        kind: &str,
    ) -> Result<Srht> {
        self.charge(Srht::bytes_for(input, output), index, kind)?;
        Ok(Srht::new(input, output, &mut self.rng))
    }

    /// Charges and draws a tensor SRHT of `p × q` inputs to `output` dimensions.
    pub(crate) fn tensor_srht(
        &mut self,
        p: usize,
        q: usize,
        output: usize,
        index: usize,
        kind: &str,
    ) -> Result<TensorSrht> {
        self.charge(TensorSrht::bytes_for(p, q, output), index, kind)?;
        Ok(TensorSrht::new(p, q, output, &mut self.rng))
    }

    /// Charges and draws a PolySketch.
    pub(crate) fn polysketch(
        &mut self,
        input: usize,
        degree: usize,
        dim: usize,
        index: usize,
        kind: &str,
    ) -> Result<PolySketch> {
        self.charge(PolySketch::bytes_for(input, degree, dim), index, kind)?;
        Ok(PolySketch::new(input, degree, dim, &mut self.rng))
    }
}

/// `b` bytes in KiB, MiB or GiB (rounded up), for messages.
pub fn size(b: u64) -> String {
    let f = b as f64;
    if b >= 1 << 30 {
        format!("{:.1} GiB", (f / (1u64 << 30) as f64 * 10.0).ceil() / 10.0)
    } else if b >= 1 << 20 {
        format!("{:.0} MiB", (f / (1u64 << 20) as f64).ceil())
    } else {
        format!("{:.0} KiB", (f / 1024.0).ceil())
    }
}

/// The largest batch of inputs (at most `n`) whose working set fits in `limit` beside a
/// map of `map_bytes` and, when `keep_outputs`, the NNGP and NTK features of all `n`
/// inputs (`2·n·dim` float64 numbers).
///
/// # Errors
/// [`InfiniteError::FeatureMemory`] with the three sizes when not even one input fits.
pub fn batch_within(
    map_bytes: u64,
    numbers_per_sample: usize,
    dim: usize,
    n: usize,
    keep_outputs: bool,
    limit: u64,
) -> Result<usize> {
    let per_sample = 8 * numbers_per_sample.max(1) as u64;
    let outputs = if keep_outputs {
        16u64.saturating_mul(n as u64).saturating_mul(dim as u64)
    } else {
        0
    };
    let held = map_bytes.saturating_add(outputs);
    let free = limit.saturating_sub(held);
    if free < per_sample {
        return Err(InfiniteError::FeatureMemory {
            needed: held.saturating_add(per_sample),
            limit,
            detail: format!(
                "random transforms {}{}, one input's working set {} at dim {dim}; raise the \
                 bound or lower the dimension",
                size(map_bytes),
                if keep_outputs {
                    format!(", the features of {n} inputs {}", size(outputs))
                } else {
                    String::new()
                },
                size(per_sample)
            ),
        });
    }
    Ok(((free / per_sample) as usize).clamp(1, n.max(1)))
}

/// The features of `x` `[N, ..]` computed `batch` samples at a time by `apply` and
/// gathered in order (one call when `batch ≥ N`).
pub fn apply_in_batches(
    x: &HostArray,
    batch: usize,
    apply: impl Fn(&HostArray) -> Result<NtkFeatures>,
) -> Result<NtkFeatures> {
    let n = x.shape.first().copied().unwrap_or(0);
    if batch >= n {
        return apply(x);
    }
    let per: usize = x.shape[1..].iter().product();
    let (mut nngp, mut ntk) = (Vec::new(), Vec::new());
    let mut dim = 0;
    for start in (0..n).step_by(batch.max(1)) {
        let rows = batch.min(n - start);
        let mut shape = x.shape.clone();
        shape[0] = rows;
        let part = HostArray::new(shape, x.data[start * per..(start + rows) * per].to_vec());
        let f = apply(&part).map_err(|e| match e {
            InfiniteError::NonFiniteInput { what, index, value } => InfiniteError::NonFiniteInput {
                what,
                index: index + start * per,
                value,
            },
            e => e,
        })?;
        dim = f.ntk.shape[1];
        if nngp.is_empty() {
            nngp.reserve_exact(n * dim);
            ntk.reserve_exact(n * dim);
        }
        nngp.extend_from_slice(&f.nngp.data);
        ntk.extend_from_slice(&f.ntk.data);
    }
    Ok(NtkFeatures {
        nngp: HostArray::new(vec![n, dim], nngp),
        ntk: HostArray::new(vec![n, dim], ntk),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_over_its_limit_is_refused_before_drawing() {
        let mut d = Draws::new(0, Some(2 << 20));
        // 2^16 inputs to 2^15: 512 KiB of signs, 256 KiB of rows, 512 KiB of sampler.
        assert!(d.srht(1 << 16, 1 << 15, 0, "dense").is_ok());
        assert_eq!(d.spent(), 1280 << 10);
        // 2^20 inputs: 8 MiB of signs alone.
        let e = d.srht(1 << 20, 1 << 10, 2, "dense").unwrap_err();
        assert!(
            matches!(e, InfiniteError::FeatureMemory { limit, needed, .. }
                if limit == 2 << 20 && needed > 8 << 20),
            "{e}"
        );
        assert!(e.to_string().contains("layer 2 (dense)"), "{e}");
        // Without a limit the count only adds up.
        let mut d = Draws::new(0, None);
        d.polysketch(100, 8, 4096, 1, "relu").unwrap();
        assert_eq!(d.spent(), PolySketch::bytes_for(100, 8, 4096));
    }

    #[test]
    fn batches_fit_beside_the_map_and_the_outputs() {
        // 1 MiB map, 10 numbers (80 B) per sample, dim 4, 1000 inputs: outputs 64000 B.
        let b = batch_within(1 << 20, 10, 4, 1000, true, (1 << 20) + 64000 + 800).unwrap();
        assert_eq!(b, 10);
        assert_eq!(batch_within(0, 10, 4, 1000, false, 1 << 30).unwrap(), 1000);
        let e = batch_within(1 << 20, 10, 4, 1000, true, (1 << 20) + 64000 + 79).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("the features of 1000 inputs 63 KiB"), "{m}");
        assert!(
            m.contains("random transforms 1 MiB") && m.contains("dim 4"),
            "{m}"
        );
        assert!(m.contains("one input's working set 1 KiB"), "{m}");
    }

    #[test]
    fn batched_features_equal_one_call() {
        let x = HostArray::new(vec![10, 3], (0..30).map(f64::from).collect());
        // A stand-in map: features are the rows and their squares.
        let apply = |x: &HostArray| -> Result<NtkFeatures> {
            Ok(NtkFeatures {
                nngp: x.clone(),
                ntk: HostArray::new(x.shape.clone(), x.data.iter().map(|v| v * v).collect()),
            })
        };
        let whole = apply_in_batches(&x, 10, apply).unwrap();
        for batch in [1, 3, 4, 9] {
            let f = apply_in_batches(&x, batch, apply).unwrap();
            assert_eq!(f.nngp.data, whole.nngp.data, "batch {batch}");
            assert_eq!(f.ntk.data, whole.ntk.data, "batch {batch}");
            assert_eq!(f.ntk.shape, vec![10, 3]);
        }
        // A non-finite input is named by its index in the whole batch.
        let mut bad = x.clone();
        bad.data[22] = f64::NAN;
        let check = |x: &HostArray| -> Result<NtkFeatures> {
            match x.data.iter().position(|v| !v.is_finite()) {
                Some(index) => Err(InfiniteError::NonFiniteInput {
                    what: "x".into(),
                    index,
                    value: f64::NAN,
                }),
                None => apply(x),
            }
        };
        match apply_in_batches(&bad, 4, check) {
            Err(InfiniteError::NonFiniteInput { index, .. }) => assert_eq!(index, 22),
            other => panic!("{other:?}"),
        }
    }
}
