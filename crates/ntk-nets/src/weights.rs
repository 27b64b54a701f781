//! PyTorch-layout safetensors: `{i}.weight`, `{i}.bias`, `i` the layer index in `layers`.
//!
//! We read and write with the `safetensors` crate directly rather than burn-store: the
//! spec's layouts are already PyTorch's (our dense weight is stored `[out, in]`, so no
//! transpose adapter is needed), and checking the file against the spec ourselves gives
//! errors that name the key (missing, extra, wrong shape, wrong dtype).

use crate::array::{HostArray, write_atomic};
use crate::error::{NetsError, Result};
use crate::spec::LayerGeometry;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

fn werr(path: &Path, message: impl Into<String>) -> NetsError {
    NetsError::Weights {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads every tensor of a safetensors file as f64 host arrays (F32 or F64 only).
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, HostArray>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| NetsError::io(path, e))?;
    parse_safetensors(&bytes).map_err(|m| werr(path, m))
}

/// Parses safetensors bytes; the error is a message without the file name.
pub fn parse_safetensors(bytes: &[u8]) -> std::result::Result<BTreeMap<String, HostArray>, String> {
    parse_safetensors_with(bytes, false)
}

/// Reads the float tensors of a safetensors file, skipping integer and bool entries
/// (a PyTorch `state_dict` holds `num_batches_tracked` as I64).
pub fn read_safetensors_floats(path: impl AsRef<Path>) -> Result<BTreeMap<String, HostArray>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| NetsError::io(path, e))?;
    parse_safetensors_with(&bytes, true).map_err(|m| werr(path, m))
}

/// Parses safetensors bytes; with `skip_non_float`, non-float entries are left out
/// instead of refused.
pub fn parse_safetensors_with(
    bytes: &[u8],
    skip_non_float: bool,
) -> std::result::Result<BTreeMap<String, HostArray>, String> {
    let st = std::panic::catch_unwind(|| SafeTensors::deserialize(bytes))
        .map_err(|_| "not a valid safetensors file: malformed header".to_string())?
        .map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::I8 | Dtype::U8 | Dtype::BOOL
                if skip_non_float =>
            {
                continue;
            }
            other => {
                return Err(format!(
                    "key {name:?}: dtype {other:?} is not supported (F32 or F64)"
                ));
            }
        };
        let count: usize = shape.iter().product();
        if values.len() != count {
            return Err(format!("key {name:?}: data does not match shape {shape:?}"));
        }
        out.insert(
            name,
            HostArray {
                shape,
                data: values,
            },
        );
    }
    Ok(out)
}

/// Checks a set of named tensors against the network's expected parameters: no key
/// missing, none extra, every shape right, every value finite.
pub fn check_against(
    path: &Path,
    tensors: &BTreeMap<String, HostArray>,
    geometry: &[LayerGeometry],
) -> Result<()> {
    let expected: HashMap<&str, &Vec<usize>> = geometry
        .iter()
        .flat_map(|g| g.params.iter())
        .map(|(k, s)| (k.as_str(), s))
        .collect();
    let mut missing: Vec<&str> = expected
        .keys()
        .filter(|k| !tensors.contains_key(**k))
        .copied()
        .collect();
    missing.sort();
    if let Some(k) = missing.first() {
        let found: Vec<&str> = tensors.keys().map(String::as_str).take(8).collect();
        // `net.0.weight` for `0.weight`: an nn.Module wrapper's prefix.
        let hint = tensors
            .keys()
            .find(|t| t.ends_with(&format!(".{k}")))
            .map(|t| {
                format!(
                    "; the keys seem to carry the prefix {:?} (save the inner module's state_dict, or strip it)",
                    &t[..t.len() - k.len()]
                )
            })
            .unwrap_or_default();
        return Err(werr(
            path,
            format!(
                "key {k:?} is missing (expected {:?}; missing: {}); the file has {} keys, e.g. {found:?}{hint}",
                expected[k],
                missing.join(", "),
                tensors.len()
            ),
        ));
    }
    for (k, array) in tensors {
        match expected.get(k.as_str()) {
            None => {
                let mut known: Vec<&str> = expected.keys().copied().collect();
                known.sort();
                return Err(werr(
                    path,
                    format!(
                        "key {k:?} is not a parameter of this network (expected keys: {})",
                        known.join(", ")
                    ),
                ));
            }
            Some(shape) if **shape != array.shape => {
                return Err(werr(
                    path,
                    format!(
                        "key {k:?} has shape {:?}, the spec needs {:?}",
                        array.shape, shape
                    ),
                ));
            }
            Some(_) => {
                if let Some((i, v)) = array.first_non_finite() {
                    return Err(werr(
                        path,
                        format!("key {k:?}: non-finite value {v} at flat index {i}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Writes named tensors as safetensors (F64 or F32), atomically.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, HostArray>,
    f32_out: bool,
) -> Result<()> {
    let path = path.as_ref();
    let buffers: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, a)| {
            let bytes: Vec<u8> = if f32_out {
                a.data
                    .iter()
                    .flat_map(|v| (*v as f32).to_le_bytes())
                    .collect()
            } else {
                a.data.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            (k.clone(), bytes, a.shape.clone())
        })
        .collect();
    let dtype = if f32_out { Dtype::F32 } else { Dtype::F64 };
    let views = buffers
        .iter()
        .map(|(k, b, s)| {
            safetensors::tensor::TensorView::new(dtype, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| werr(path, format!("key {k:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(views, None)
        .map_err(|e| werr(path, format!("serialising: {e}")))?;
    write_atomic(path, &bytes)
}
