//! Host-side arrays and `.npy` files.
//!
//! Inputs come as `.npy` arrays `[N, *input_shape]` of float32 or float64; kernels and
//! outputs are written as `.npy` (float64 unless asked otherwise). Reading validates the
//! header against the file's real size before any allocation, so a header declaring
//! terabytes is an error, not an out-of-memory abort.

use crate::error::{NetsError, Result};
use npyz::WriterBuilder;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Element type of an array on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatKind {
    F32,
    F64,
}

/// A dense row-major (C order) array of f64 on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostArray {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl HostArray {
    /// An array from its shape and row-major data.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape` (a programming error, not user data).
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "HostArray: shape {shape:?} does not match {} elements",
            data.len()
        );
        HostArray { shape, data }
    }

    /// The first non-finite value, if any: `(flat index, value)`.
    pub fn first_non_finite(&self) -> Option<(usize, f64)> {
        // `v - v` is 0 for finite v and NaN otherwise: summed in eight lanes a block at a
        // time it vectorizes, and only a block that holds a NaN is searched.
        const BLOCK: usize = 4096;
        for (b, block) in self.data.chunks(BLOCK).enumerate() {
            let mut lanes = [0.0f64; 8];
            let mut groups = block.chunks_exact(8);
            for g in &mut groups {
                for (l, &v) in lanes.iter_mut().zip(g) {
                    *l += v - v;
                }
            }
            let rest: f64 = groups.remainder().iter().map(|&v| v - v).sum();
            if lanes.iter().sum::<f64>() + rest == 0.0 {
                continue;
            }
            if let Some(i) = block.iter().position(|v| !v.is_finite()) {
                return Some((i + b * BLOCK, block[i]));
            }
        }
        None
    }

    /// Errors if any value is NaN or ±Inf; `what` names the array in the message.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        match self.first_non_finite() {
            None => Ok(()),
            Some((index, value)) => Err(NetsError::NonFinite {
                what: what.to_string(),
                index,
                value,
            }),
        }
    }

    /// Rows `start..start+len` along axis 0.
    pub fn rows(&self, start: usize, len: usize) -> HostArray {
        let row: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = len;
        HostArray {
            shape,
            data: self.data[start * row..(start + len) * row].to_vec(),
        }
    }

    /// Number of rows (axis 0).
    pub fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// True when axis 0 has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn array_err(path: &Path, message: impl Into<String>) -> NetsError {
    NetsError::Array {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a float32/float64 `.npy` file (C order, little or big endian).
///
/// Errors name the file and what is wrong: not an npy file, a non-float dtype, Fortran
/// order, a data section whose size does not match the header.
pub fn read_npy(path: impl AsRef<Path>) -> Result<(HostArray, FloatKind)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| NetsError::io(path, e))?;
    parse_npy(&bytes).map_err(|m| array_err(path, m))
}

/// What the header of a float `.npy` file declares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NpyLayout {
    shape: Vec<usize>,
    kind: FloatKind,
    big_endian: bool,
    /// Byte offset of the data.
    data_start: usize,
    /// Bytes of data the shape needs.
    data_bytes: usize,
}

/// Parses and checks the header at the start of `bytes` (float32/float64, C order, sizes
/// that do not overflow, by [`crate::npy_header`]); the error is a message without the
/// file name.
fn parse_header(bytes: &[u8]) -> std::result::Result<NpyLayout, String> {
    let h = crate::npy_header::parse(bytes)?;
    let (kind, size) = match (h.type_char, h.size) {
        ('f', 4) => (FloatKind::F32, 4usize),
        ('f', 8) => (FloatKind::F64, 8usize),
        _ => {
            return Err(format!(
                "dtype field is {:?}; expected float32 ('<f4') or float64 ('<f8')",
                h.descr
            ));
        }
    };
    if h.fortran_order {
        return Err("fortran_order arrays are not supported; save in C order".to_string());
    }
    let count = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} overflows", h.shape))?;
    let data_bytes = count
        .checked_mul(size)
        .ok_or_else(|| format!("shape {:?} overflows", h.shape))?;
    Ok(NpyLayout {
        shape: h.shape,
        kind,
        big_endian: h.big_endian,
        data_start: h.data_start,
        data_bytes,
    })
}

impl NpyLayout {
    /// The error when the file holds `held` data bytes instead of the declared ones.
    fn check_size(&self, held: usize) -> std::result::Result<(), String> {
        if held != self.data_bytes {
            return Err(format!(
                "header declares shape {:?} of {} ({} bytes) but the file holds {held} data bytes (truncated or corrupt)",
                self.shape,
                match self.kind {
                    FloatKind::F32 => "float32",
                    FloatKind::F64 => "float64",
                },
                self.data_bytes,
            ));
        }
        Ok(())
    }

    /// Decodes raw data bytes to f64.
    fn decode(&self, data: &[u8]) -> Vec<f64> {
        let big = self.big_endian;
        match self.kind {
            FloatKind::F32 => data
                .chunks_exact(4)
                .map(|c| {
                    let b = [c[0], c[1], c[2], c[3]];
                    (if big {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    }) as f64
                })
                .collect(),
            FloatKind::F64 => data
                .chunks_exact(8)
                .map(|c| {
                    let b: [u8; 8] = c.try_into().expect("chunk of 8");
                    if big {
                        f64::from_be_bytes(b)
                    } else {
                        f64::from_le_bytes(b)
                    }
                })
                .collect(),
        }
    }
}

/// Parses `.npy` bytes; the error is a message without the file name.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<(HostArray, FloatKind), String> {
    let layout = parse_header(bytes)?;
    let data = &bytes[layout.data_start.min(bytes.len())..];
    layout.check_size(data.len())?;
    Ok((
        HostArray {
            data: layout.decode(data),
            shape: layout.shape,
        },
        layout.kind,
    ))
}

/// A float `.npy` file read a block of rows at a time (for inputs larger than memory):
/// the header is checked against the file's size when opened, like [`read_npy`].
#[derive(Debug)]
pub struct NpyRows {
    file: std::fs::File,
    path: PathBuf,
    layout: NpyLayout,
}

/// Bytes read to find the header: the longest header [`crate::npy_header`] accepts.
const HEADER_PROBE: usize = crate::npy_header::MAX_HEADER + 12;

impl NpyRows {
    /// Opens `path` and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<NpyRows> {
        use std::io::Read;
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).map_err(|e| NetsError::io(path, e))?;
        let len = file.metadata().map_err(|e| NetsError::io(path, e))?.len();
        let mut probe = Vec::with_capacity(HEADER_PROBE);
        (&mut file)
            .take(HEADER_PROBE as u64)
            .read_to_end(&mut probe)
            .map_err(|e| NetsError::io(path, e))?;
        let layout = parse_header(&probe).map_err(|m| array_err(path, m))?;
        if layout.shape.is_empty() {
            return Err(array_err(path, "a 0-d array has no rows"));
        }
        let held =
            usize::try_from(len.saturating_sub(layout.data_start as u64)).unwrap_or(usize::MAX);
        layout.check_size(held).map_err(|m| array_err(path, m))?;
        Ok(NpyRows {
            file,
            path: path.to_path_buf(),
            layout,
        })
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }

    /// Number of rows (the first dimension).
    pub fn rows(&self) -> usize {
        self.layout.shape[0]
    }

    /// The element type on disk.
    pub fn kind(&self) -> FloatKind {
        self.layout.kind
    }

    /// Rows `start..start + count` (clipped to the end) as `[count, ...]`.
    pub fn read(&mut self, start: usize, count: usize) -> Result<HostArray> {
        use std::io::{Read, Seek, SeekFrom};
        let rows = self.rows();
        let start = start.min(rows);
        let count = count.min(rows - start);
        let per_row: usize = self.layout.shape[1..].iter().product();
        let width = match self.layout.kind {
            FloatKind::F32 => 4,
            FloatKind::F64 => 8,
        };
        let mut bytes = vec![0u8; count * per_row * width];
        let offset = self.layout.data_start + start * per_row * width;
        self.file
            .seek(SeekFrom::Start(offset as u64))
            .and_then(|_| self.file.read_exact(&mut bytes))
            .map_err(|e| NetsError::io(&self.path, e))?;
        let mut shape = self.layout.shape.clone();
        shape[0] = count;
        Ok(HostArray::new(shape, self.layout.decode(&bytes)))
    }
}

/// The header of a version-1 `.npy` file for a C-order array of `shape` (`descr` `<f4`
/// or `<f8`), padded with spaces so that the data starts at a multiple of 64 bytes, in
/// the tuple style npyz writes (so streamed files equal in-memory ones byte for byte).
pub fn npy_header(shape: &[usize], kind: FloatKind) -> Vec<u8> {
    let descr = match kind {
        FloatKind::F32 => "<f4",
        FloatKind::F64 => "<f8",
    };
    let shape_text: String = std::iter::once("(".to_string())
        .chain(shape.iter().map(|d| format!("{d}, ")))
        .chain(std::iter::once(")".to_string()))
        .collect();
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = 6 + 2 + 2 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// A `.npy` written block by block, atomically: the data goes to a temporary file in the
/// same folder, renamed to the final name by [`NpyWriter::finish`] once every value is
/// there. Dropped unfinished (an error, an interrupt), the temporary file is removed.
#[derive(Debug)]
pub struct NpyWriter {
    out: Option<std::io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    path: PathBuf,
    kind: FloatKind,
    expected: usize,
    written: usize,
}

impl NpyWriter {
    /// Starts `path` for an array of `shape`.
    pub fn create(path: impl AsRef<Path>, shape: &[usize], kind: FloatKind) -> Result<NpyWriter> {
        let path = path.as_ref().to_path_buf();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| array_err(&path, "not a file name"))?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(temporary_name(&name));
        let file = std::fs::File::create(&tmp).map_err(|e| NetsError::io(&path, e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(&npy_header(shape, kind))
            .map_err(|e| NetsError::io(&path, e))?;
        Ok(NpyWriter {
            out: Some(out),
            tmp,
            path,
            kind,
            expected: shape.iter().product(),
            written: 0,
        })
    }

    /// Appends values (row-major, continuing where the last call stopped).
    pub fn write(&mut self, values: &[f64]) -> Result<()> {
        if self.written + values.len() > self.expected {
            return Err(array_err(
                &self.path,
                format!("more values than the declared {}", self.expected),
            ));
        }
        let out = self.out.as_mut().expect("open until finish");
        let result = match self.kind {
            FloatKind::F32 => values
                .iter()
                .try_for_each(|v| out.write_all(&(*v as f32).to_le_bytes())),
            FloatKind::F64 => values
                .iter()
                .try_for_each(|v| out.write_all(&v.to_le_bytes())),
        };
        result.map_err(|e| NetsError::io(&self.path, e))?;
        self.written += values.len();
        Ok(())
    }

    /// Flushes, syncs and renames the file into place; an error if values are missing.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.expected {
            return Err(array_err(
                &self.path,
                format!(
                    "{} of the declared {} values written",
                    self.written, self.expected
                ),
            ));
        }
        let out = self.out.take().expect("open until finish");
        let result = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, &self.path));
        result.map_err(|e| {
            let _ = std::fs::remove_file(&self.tmp);
            NetsError::io(&self.path, e)
        })
    }
}

impl Drop for NpyWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A temporary name for `name` in the same folder, unique within the process (pid and a
/// counter), so that two writers of one process never share one.
/// Temporary files being written (see [`Temporary`]), for [`remove_temporaries`].
static TEMPORARIES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A temporary file in the making: registered while it lives, so that a signal handler
/// can remove it ([`remove_temporaries`]); dropping the guard unregisters it (the file
/// itself is renamed or removed by its writer).
pub struct Temporary(PathBuf);

impl Temporary {
    pub fn new(path: PathBuf) -> Temporary {
        if let Ok(mut t) = TEMPORARIES.lock() {
            t.push(path.clone());
        }
        Temporary(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Ok(mut t) = TEMPORARIES.lock() {
            t.retain(|p| p != &self.0);
        }
    }
}

/// Removes every temporary file still being written: for SIGINT/SIGTERM handlers, so an
/// interrupted run leaves no hidden partial file beside its outputs.
pub fn remove_temporaries() {
    let paths = match TEMPORARIES.lock() {
        Ok(t) => t.clone(),
        Err(p) => p.into_inner().clone(),
    };
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

fn temporary_name(name: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let k = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{name}.tmp-{}-{k}", std::process::id())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed and
/// synced, then renamed over `path`. An interrupted write never leaves a truncated file
/// under the final name.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| array_err(path, "not a file name"))?
        .to_string_lossy()
        .into_owned();
    let guard = Temporary::new(dir.join(temporary_name(&name)));
    let tmp = guard.path();
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        NetsError::io(path, e)
    })
}

/// Serialises an array as `.npy` bytes in the requested float type (little endian, C order).
pub fn npy_bytes(array: &HostArray, kind: FloatKind) -> Vec<u8> {
    let shape: Vec<u64> = array.shape.iter().map(|&d| d as u64).collect();
    let mut out = Vec::with_capacity(128 + array.data.len() * 8);
    let result = match kind {
        FloatKind::F64 => npyz::WriteOptions::<f64>::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut out)
            .begin_nd()
            .and_then(|mut w| {
                w.extend(array.data.iter().copied())?;
                w.finish()
            }),
        FloatKind::F32 => npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut out)
            .begin_nd()
            .and_then(|mut w| {
                w.extend(array.data.iter().map(|&v| v as f32))?;
                w.finish()
            }),
    };
    result.expect("writing npy into memory cannot fail");
    out
}

/// Writes an array to a `.npy` file atomically.
pub fn write_npy(path: impl AsRef<Path>, array: &HostArray, kind: FloatKind) -> Result<()> {
    // Streamed in slices, so a large kernel is not held a second time as bytes.
    let mut w = NpyWriter::create(path, &array.shape, kind)?;
    for part in array.data.chunks(1 << 18) {
        w.write(part)?;
    }
    w.finish()
}

/// Reads network inputs: a float `.npy` of shape `[N, *input_shape]` with finite values.
pub fn read_inputs(path: impl AsRef<Path>, input_shape: &[usize]) -> Result<HostArray> {
    let path = path.as_ref();
    let (array, _) = read_npy(path)?;
    if array.shape.len() != input_shape.len() + 1 || array.shape[1..] != *input_shape {
        return Err(array_err(
            path,
            format!(
                "shape {:?} does not match [N, {}] (the spec's input_shape)",
                array.shape,
                input_shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if array.shape[0] == 0 {
        return Err(array_err(path, "holds no samples (N = 0)"));
    }
    array.check_finite(&path.display().to_string())?;
    Ok(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_are_removed_on_request_and_forgotten_when_done() {
        let dir = std::env::temp_dir().join(format!("ntk-temporaries-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join(".a.tmp");
        std::fs::write(&a, b"partial").unwrap();
        let guard = Temporary::new(a.clone());
        remove_temporaries();
        assert!(!a.exists());
        drop(guard);
        // A finished (unregistered) file is never touched.
        let b = dir.join("b.npy");
        write_atomic(&b, b"done").unwrap();
        remove_temporaries();
        assert!(b.exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn npy_roundtrip_f32_and_f64() {
        let a = HostArray::new(vec![2, 3], vec![1.0, -2.5, 3.25, 0.0, 1e-3, 7.0]);
        for kind in [FloatKind::F32, FloatKind::F64] {
            let (b, k) = parse_npy(&npy_bytes(&a, kind)).unwrap();
            assert_eq!(k, kind);
            assert_eq!(b.shape, a.shape);
            for (x, y) in a.data.iter().zip(&b.data) {
                assert!((x - y).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn truncated_and_lying_headers_are_errors() {
        let a = HostArray::new(vec![4], vec![1.0, 2.0, 3.0, 4.0]);
        let bytes = npy_bytes(&a, FloatKind::F64);
        let e = parse_npy(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        assert!(parse_npy(&bytes[..20]).is_err());
        assert!(parse_npy(b"hello").is_err());
        // Declared size of terabytes: an error before any allocation.
        let at = bytes.windows(2).position(|w| w == b"(4").unwrap();
        let mut lying = bytes[..at].to_vec();
        lying.extend_from_slice(b"(4000000000000");
        lying.extend_from_slice(&bytes[at + 2..]);
        let e = parse_npy(&lying).unwrap_err();
        assert!(e.contains("bytes"), "{e}");
    }

    #[test]
    fn integer_dtype_is_refused() {
        let mut out = Vec::new();
        let mut w = npyz::WriteOptions::<i32>::new()
            .default_dtype()
            .shape(&[2])
            .writer(&mut out)
            .begin_nd()
            .unwrap();
        w.extend([1, 2]).unwrap();
        w.finish().unwrap();
        let e = parse_npy(&out).unwrap_err();
        assert!(e.contains("float32"), "{e}");
    }

    #[test]
    fn non_finite_is_reported_with_index() {
        let a = HostArray::new(vec![3], vec![1.0, f64::NAN, 2.0]);
        let e = a.check_finite("x").unwrap_err().to_string();
        assert!(e.contains("index 1"), "{e}");
        // Past the first block, in a group of eight and in the remainder, ±Inf too.
        for (len, at, bad) in [
            (10_000, 9_999, f64::INFINITY),
            (10_000, 4_100, f64::NEG_INFINITY),
            (8_200, 8_197, f64::NAN),
            (5, 4, f64::NAN),
        ] {
            let mut data = vec![1e308; len];
            assert_eq!(
                HostArray::new(vec![len], data.clone()).first_non_finite(),
                None
            );
            data[at] = bad;
            data[len - 1] = if at == len - 1 { bad } else { f64::NAN };
            let (i, v) = HostArray::new(vec![len], data).first_non_finite().unwrap();
            assert_eq!(i, at, "len {len}");
            assert!(v.is_nan() == bad.is_nan() && (v.is_nan() || v == bad));
        }
    }

    #[test]
    fn streamed_files_equal_in_memory_ones_and_rows_read_back() {
        let dir = std::env::temp_dir().join(format!("ntk-npy-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = HostArray::new(vec![5, 3], (0..15).map(|i| i as f64 * 0.5 - 2.0).collect());
        for kind in [FloatKind::F32, FloatKind::F64] {
            let p = dir.join("s.npy");
            let mut w = NpyWriter::create(&p, &a.shape, kind).unwrap();
            w.write(&a.data[..6]).unwrap();
            w.write(&a.data[6..]).unwrap();
            w.finish().unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), npy_bytes(&a, kind));
            let mut r = NpyRows::open(&p).unwrap();
            assert_eq!(r.shape(), &[5, 3]);
            let b = r.read(1, 3).unwrap();
            assert_eq!(b.shape, vec![3, 3]);
            assert_eq!(b.data, a.data[3..12].to_vec());
            assert_eq!(r.read(4, 10).unwrap().shape, vec![1, 3]);
        }
        // Unfinished: nothing under the final name, no temporary left.
        let p = dir.join("never.npy");
        {
            let mut w = NpyWriter::create(&p, &[4], FloatKind::F64).unwrap();
            w.write(&[1.0]).unwrap();
        }
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only s.npy");
        let mut w = NpyWriter::create(&p, &[2], FloatKind::F64).unwrap();
        w.write(&[1.0]).unwrap();
        assert!(w.finish().is_err());
        assert!(!p.exists());
        // A truncated file is refused when opened.
        let bytes = npy_bytes(&a, FloatKind::F64);
        std::fs::write(dir.join("t.npy"), &bytes[..bytes.len() - 8]).unwrap();
        assert!(
            NpyRows::open(dir.join("t.npy"))
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
