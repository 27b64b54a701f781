//! Tiled, resumable, shardable kernel runs on disk.
//!
//! A run writes into a folder:
//! - `manifest.json`: what is being computed — SHA-256 of the network (spec and every
//!   parameter value), of x1 and of x2, the method, kernel kind, dtype, contraction
//!   options and the tile grid ([`Manifest`]). A run on a folder whose manifest differs
//!   is refused, naming the fields that differ.
//! - `tile-{i}-{j}.npy`: tile `(i, j)` of the plan ([`TilePlan`]), f64, each written
//!   atomically (temporary file + rename), so a killed run leaves whole tiles or none.
//! - `computed.log`: one line `i j` appended after each tile is written (a record of the
//!   work done, used to check that no finished tile is ever recomputed).
//!
//! A restart skips the tiles that exist. `share = (i, n)` computes only the tiles whose
//! index in the job list is `≡ i (mod n)`, so `n` processes (a Slurm array, a Kubernetes
//! indexed Job) split the work with no coordination but the shared folder; [`merge`]
//! then assembles the kernel, streaming tile by tile into the output `.npy` with
//! positioned writes, so the kernel may be larger than memory.
//!
//! Sequential [`Network`]s and graph networks ([`ntk_nets::graph::GraphNetwork`]) are
//! both run this way: each implements [`Tiled`] (its plan, its fingerprint, its tiles).

use crate::engine::{EmpiricalOptions, TilePlan, compute_tile, mirror_pair, plan};
use crate::error::{EmpiricalError, Result};
use ntk_nets::array::{FloatKind, npy_header, read_npy, write_npy};
use ntk_nets::graph::GraphNetwork;
use ntk_nets::{HostArray, Network};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Version of the folder layout.
const LAYOUT_VERSION: u32 = 1;

/// What a tile folder holds; equal manifests mean interchangeable tiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub layout_version: u32,
    /// SHA-256 of the spec (its debug form) and of every parameter's name, shape and values.
    pub network_sha256: String,
    pub x1_sha256: String,
    /// Of x2, or of x1 when x2 is omitted or equal to x1 (then `symmetric`).
    pub x2_sha256: String,
    pub method: String,
    pub kind: String,
    /// Compute dtype of the network.
    pub dtype: String,
    /// Conv strategy and contraction path (they change the low bits).
    pub contraction: String,
    pub n1: usize,
    pub n2: usize,
    pub outputs: usize,
    pub shape: Vec<usize>,
    pub tile_rows: usize,
    pub symmetric: bool,
    /// Number of tiles (jobs) of the grid.
    pub tiles: usize,
}

/// What one call of [`run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Tiles of this share.
    pub in_share: usize,
    /// Tiles found finished and skipped.
    pub skipped: usize,
    /// Tiles computed now.
    pub computed: usize,
    /// Tiles of the whole grid.
    pub total: usize,
}

fn sha_array(a: &HostArray) -> String {
    let mut h = Sha256::new();
    for d in &a.shape {
        h.update((*d as u64).to_le_bytes());
    }
    for v in &a.data {
        h.update(v.to_le_bytes());
    }
    hex(h.finalize().as_slice())
}

/// A network whose kernel [`run`] computes tile by tile.
pub trait Tiled {
    /// The tile plan of the kernel between `x1` and `x2` under `options`.
    fn tile_plan(
        &self,
        x1: &HostArray,
        x2: Option<&HostArray>,
        options: &EmpiricalOptions,
    ) -> Result<TilePlan>;
    /// SHA-256 of all that fixes the kernel but the inputs: the architecture (spec and
    /// buffers), every parameter's name, shape and values, and which parameters count.
    fn fingerprint(&self) -> String;
    /// The compute dtype, as the manifest names it.
    fn dtype_name(&self) -> String;
    /// Tiles `jobs` of `plan`, in order (computed in parallel where the plan allows).
    fn tiles(
        &self,
        x1: &HostArray,
        x2: Option<&HostArray>,
        plan: &TilePlan,
        jobs: &[(usize, usize)],
    ) -> Result<Vec<HostArray>>;
}

impl Tiled for Network {
    fn tile_plan(
        &self,
        x1: &HostArray,
        x2: Option<&HostArray>,
        options: &EmpiricalOptions,
    ) -> Result<TilePlan> {
        plan(self, x1, x2, options)
    }

    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("{:?}", self.spec).as_bytes());
        for (name, p) in self.params() {
            h.update(name.as_bytes());
            h.update(sha_array(&p).as_bytes());
        }
        hex(h.finalize().as_slice())
    }

    fn dtype_name(&self) -> String {
        format!("{:?}", self.dtype())
    }

    fn tiles(
        &self,
        x1: &HostArray,
        x2: Option<&HostArray>,
        plan: &TilePlan,
        jobs: &[(usize, usize)],
    ) -> Result<Vec<HostArray>> {
        jobs.par_iter()
            .map(|&job| compute_tile(self, x1, x2, plan, job))
            .collect()
    }
}

impl Tiled for GraphNetwork {
    fn tile_plan(
        &self,
        x1: &HostArray,
        x2: Option<&HostArray>,
        options: &EmpiricalOptions,
    ) -> Result<TilePlan> {
        crate::graph::plan(self, x1, x2, options)
    }

    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        // The graph's debug form: nodes, attributes and buffers (BatchNorm statistics,
        // fixed encodings); not the file it came from.
        let g = &self.graph;
        let form = (
            &g.nodes,
            g.output,
            &g.input_shape,
            &g.params,
            g.batch_one_export,
        );
        h.update(format!("{form:?}").as_bytes());
        for ((p, value), selected) in self
            .graph
            .params
            .iter()
            .zip(&self.params)
            .zip(&self.selected)
        {
            h.update(p.name.as_bytes());
            h.update([u8::from(*selected)]);
            h.update(sha_array(&ntk_nets::to_host(value.val())).as_bytes());
        }
        hex(h.finalize().as_slice())
    }

    fn dtype_name(&self) -> String {
        format!("{:?}", self.dtype())
    }

    fn tiles(
        &self,
        x1: &HostArray,
        x2: Option<&HostArray>,
        plan: &TilePlan,
        jobs: &[(usize, usize)],
    ) -> Result<Vec<HostArray>> {
        jobs.iter()
            .map(|&job| crate::graph::compute_tile(self, x1, x2, plan, job))
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    /// The manifest of a plan.
    pub fn new(net: &impl Tiled, x1: &HostArray, x2: Option<&HostArray>, plan: &TilePlan) -> Self {
        let x1_sha = sha_array(x1);
        let x2_sha = match x2 {
            Some(x2) if !plan.symmetric => sha_array(x2),
            _ => x1_sha.clone(),
        };
        Manifest {
            layout_version: LAYOUT_VERSION,
            network_sha256: net.fingerprint(),
            x1_sha256: x1_sha,
            x2_sha256: x2_sha,
            method: plan.method.name().to_string(),
            kind: plan.kind.name().to_string(),
            dtype: net.dtype_name(),
            contraction: format!("{:?}", plan.structured),
            n1: plan.n1,
            n2: plan.n2,
            outputs: plan.outputs,
            shape: plan.shape(),
            tile_rows: plan.tile_rows,
            symmetric: plan.symmetric,
            tiles: plan.jobs.len(),
        }
    }

    /// Names of the fields where `self` and `other` differ.
    pub fn differences(&self, other: &Manifest) -> Vec<&'static str> {
        let a = serde_json::to_value(self).expect("manifest serialises");
        let b = serde_json::to_value(other).expect("manifest serialises");
        const FIELDS: [&str; 16] = [
            "layout_version",
            "network_sha256",
            "x1_sha256",
            "x2_sha256",
            "method",
            "kind",
            "dtype",
            "contraction",
            "n1",
            "n2",
            "outputs",
            "shape",
            "tile_rows",
            "symmetric",
            "tiles",
            "",
        ];
        FIELDS
            .into_iter()
            .filter(|f| !f.is_empty() && a.get(f) != b.get(f))
            .collect()
    }

    /// The tile grid the manifest describes (the jobs in the order [`plan`] makes them).
    pub fn jobs(&self) -> Vec<(usize, usize)> {
        let mut jobs = Vec::new();
        for i in 0..self.n1.div_ceil(self.tile_rows) {
            for j in 0..self.n2.div_ceil(self.tile_rows) {
                if !(self.symmetric && j < i) {
                    jobs.push((i, j));
                }
            }
        }
        jobs
    }

    fn block(&self, b: usize, n: usize) -> (usize, usize) {
        let start = b * self.tile_rows;
        (start, self.tile_rows.min(n - start))
    }

    fn per_pair(&self) -> usize {
        self.shape[2..].iter().product()
    }
}

/// The file of tile `(i, j)`.
pub fn tile_path(dir: &Path, (i, j): (usize, usize)) -> PathBuf {
    dir.join(format!("tile-{i}-{j}.npy"))
}

fn io_err(path: &Path, source: std::io::Error) -> EmpiricalError {
    EmpiricalError::Io {
        path: path.to_path_buf(),
        message: ntk_nets::error::describe_io(path, &source),
    }
}

fn tiles_err(dir: &Path, message: impl Into<String>) -> EmpiricalError {
    EmpiricalError::Tiles {
        dir: dir.to_path_buf(),
        message: message.into(),
    }
}

/// Reads `dir/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| tiles_err(dir, format!("manifest.json is not a tile manifest: {e}")))
}

/// Parses a share `"i/n"` (0-based `i < n`).
pub fn parse_share(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        crate::error::option_err(
            "tile",
            format!("{s:?} is not a share i/n with 0 <= i < n (e.g. 0/3)"),
        )
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Whether tile `job` of `m` is finished on disk (the file has at least the bytes of its
/// values; tiles are renamed into place whole, so a present file is complete unless it
/// was damaged from outside, which [`merge`] detects when it reads it).
fn tile_done(dir: &Path, m: &Manifest, (i, j): (usize, usize)) -> bool {
    let (_, l1) = m.block(i, m.n1);
    let (_, l2) = m.block(j, m.n2);
    let need = (l1 * l2 * m.per_pair() * 8) as u64;
    std::fs::metadata(tile_path(dir, (i, j))).is_ok_and(|md| md.len() > need)
}

/// Computes the tiles of `share` (`None`: all) that are not yet in `dir`, writing each
/// atomically; creates or checks `dir/manifest.json` first.
///
/// `progress(done, total)` counts the tiles of the share, skipped ones included.
pub fn run(
    net: &impl Tiled,
    x1: &HostArray,
    x2: Option<&HostArray>,
    options: &EmpiricalOptions,
    dir: &Path,
    share: Option<(usize, usize)>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RunSummary> {
    let plan = net.tile_plan(x1, x2, options)?;
    let manifest = Manifest::new(net, x1, x2, &plan);
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mpath = dir.join("manifest.json");
    if mpath.exists() {
        let old = read_manifest(dir)?;
        let diff = old.differences(&manifest);
        if !diff.is_empty() {
            return Err(tiles_err(
                dir,
                format!(
                    "its manifest.json was made for a different run (differs in: {}); use a new folder",
                    diff.join(", ")
                ),
            ));
        }
    } else {
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        ntk_nets::array::write_atomic(&mpath, text.as_bytes())?;
    }
    let (share_i, share_n) = share.unwrap_or((0, 1));
    let mine: Vec<(usize, usize)> = plan
        .jobs
        .iter()
        .enumerate()
        .filter(|(t, _)| t % share_n == share_i)
        .map(|(_, &job)| job)
        .collect();
    let todo: Vec<(usize, usize)> = mine
        .iter()
        .copied()
        .filter(|&job| !tile_done(dir, &manifest, job))
        .collect();
    let skipped = mine.len() - todo.len();
    let log_path = dir.join("computed.log");
    let mut done = skipped;
    progress(done, mine.len());
    for chunk in todo.chunks(plan.parallel_tiles) {
        let tiles = net.tiles(x1, x2, &plan, chunk)?;
        for (&job, tile) in chunk.iter().zip(tiles) {
            write_npy(tile_path(dir, job), &tile, FloatKind::F64)?;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| io_err(&log_path, e))?;
            writeln!(log, "{} {}", job.0, job.1).map_err(|e| io_err(&log_path, e))?;
            done += 1;
            progress(done, mine.len());
        }
    }
    Ok(RunSummary {
        in_share: mine.len(),
        skipped,
        computed: todo.len(),
        total: plan.jobs.len(),
    })
}

/// Assembles the tiles of `dir` into one `.npy` at `out` (written under a temporary name
/// and renamed when complete). Streams: one tile in memory at a time, each row written at
/// its offset, so the kernel may be larger than memory.
pub fn merge(dir: &Path, out: &Path, kind: FloatKind) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let m = read_manifest(dir)?;
    let jobs = m.jobs();
    if jobs.len() != m.tiles {
        return Err(tiles_err(dir, "manifest.json is inconsistent (tile count)"));
    }
    let missing: Vec<String> = jobs
        .iter()
        .filter(|&&job| !tile_done(dir, &m, job))
        .map(|&(i, j)| format!("{i}-{j}"))
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        return Err(tiles_err(
            dir,
            format!(
                "{} of {} tiles are not finished (e.g. {}); run the missing shares first",
                missing.len(),
                jobs.len(),
                shown.join(", ")
            ),
        ));
    }
    let header = npy_header(&m.shape, kind);
    let width = match kind {
        FloatKind::F32 => 4,
        FloatKind::F64 => 8,
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| tiles_err(dir, format!("{} is not a file name", out.display())))?
        .to_string_lossy()
        .into_owned();
    let guard =
        ntk_nets::array::Temporary::new(parent.join(format!(".{name}.tmp-{}", std::process::id())));
    let tmp = guard.path().to_path_buf();
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        let total = header.len() as u64 + (m.n1 * m.n2 * m.per_pair() * width) as u64;
        file.set_len(total).map_err(|e| io_err(&tmp, e))?;
        file.write_all_at(&header, 0).map_err(|e| io_err(&tmp, e))?;
        let pp = m.per_pair();
        let encode = |vals: &[f64], buf: &mut Vec<u8>| {
            buf.clear();
            for &v in vals {
                match kind {
                    FloatKind::F32 => buf.extend_from_slice(&(v as f32).to_le_bytes()),
                    FloatKind::F64 => buf.extend_from_slice(&v.to_le_bytes()),
                }
            }
        };
        let offset =
            |row: usize, col: usize| header.len() as u64 + ((row * m.n2 + col) * pp * width) as u64;
        let mut buf = Vec::new();
        let mut column = Vec::new();
        for &(i, j) in &jobs {
            let path = tile_path(dir, (i, j));
            let (tile, _) = read_npy(&path)?;
            let (s1, l1) = m.block(i, m.n1);
            let (s2, l2) = m.block(j, m.n2);
            if tile.shape != [l1, l2, pp] {
                return Err(tiles_err(
                    dir,
                    format!(
                        "{} has shape {:?}, the manifest says {:?}",
                        path.display(),
                        tile.shape,
                        [l1, l2, pp]
                    ),
                ));
            }
            for r in 0..l1 {
                encode(&tile.data[r * l2 * pp..(r + 1) * l2 * pp], &mut buf);
                file.write_all_at(&buf, offset(s1 + r, s2))
                    .map_err(|e| io_err(&tmp, e))?;
            }
            if m.symmetric && i != j {
                // Rows s2.. of the kernel, columns s1..: the mirror image of the tile.
                let o = m.outputs;
                let kk = crate::kernel::KernelKind::parse(&m.kind)?;
                for c in 0..l2 {
                    column.clear();
                    column.resize(l1 * pp, 0.0);
                    for r in 0..l1 {
                        let src = &tile.data[(r * l2 + c) * pp..(r * l2 + c + 1) * pp];
                        mirror_pair(&mut column[r * pp..(r + 1) * pp], src, kk, o);
                    }
                    encode(&column, &mut buf);
                    file.write_all_at(&buf, offset(s2 + c, s1))
                        .map_err(|e| io_err(&tmp, e))?;
                }
            }
        }
        file.sync_all().map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, out).map_err(|e| io_err(out, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_read_back_by_npyz() {
        for shape in [vec![3], vec![2, 5, 1], vec![20000, 20000, 1]] {
            let h = npy_header(&shape, FloatKind::F32);
            assert_eq!(h.len() % 64, 0, "{shape:?}");
            let n: usize = shape.iter().product();
            if n > 1000 {
                continue;
            }
            let mut bytes = h.clone();
            for v in 0..n {
                bytes.extend_from_slice(&(v as f32).to_le_bytes());
            }
            let a = ntk_nets::array::parse_npy(&bytes).unwrap().0;
            assert_eq!(a.shape, shape);
            assert_eq!(a.data[n - 1], (n - 1) as f64);
        }
    }

    #[test]
    fn shares_parse_and_reject_nonsense() {
        assert_eq!(parse_share("1/3").unwrap(), (1, 3));
        for bad in ["3/3", "0/0", "a/2", "1", "-1/2", "1/2/3"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }
}
