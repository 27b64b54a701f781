//! Per-layer kernels: each parameter group's contribution `Θ_l = J_l(x1) J_l(x2)ᵀ`, with
//! `Σ_l Θ_l = Θ` (the NTK is a sum over parameters, so it splits exactly by any partition
//! of them).
//!
//! Groups are modules: a parameter `layer1.0.conv1.weight` belongs to `layer1.0.conv1`
//! (its name up to the last `.`; a name without one is its own group), as PyTorch's
//! `named_parameters()` and the graph spec's `"{node}.weight"` names give them. The
//! structured method ([`super::structured::kernel`]) accumulates each parameter into its
//! group's sum in the same pass, so the per-layer kernels cost little more than the whole.

use super::{compute_tiles, plan};
use crate::engine::{EmpiricalOptions, place_tile};
use crate::error::{Result, option_err};
use ntk_nets::HostArray;
use ntk_nets::graph::GraphNetwork;

/// A partition of a network's selected parameters into named groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamGroups {
    /// Group names, in the order of their first parameter.
    pub names: Vec<String>,
    /// The parameter names of each group.
    pub members: Vec<Vec<String>>,
    /// The group of each parameter of the graph (`None`: not selected).
    of_param: Vec<Option<usize>>,
}

impl ParamGroups {
    /// The selected parameters of `net` grouped by module (name up to its last `.`).
    pub fn by_module(net: &GraphNetwork) -> ParamGroups {
        let mut groups = ParamGroups {
            names: Vec::new(),
            members: Vec::new(),
            of_param: Vec::with_capacity(net.graph.params.len()),
        };
        for (p, &selected) in net.graph.params.iter().zip(&net.selected) {
            if !selected {
                groups.of_param.push(None);
                continue;
            }
            let module = p.name.rsplit_once('.').map_or(p.name.as_str(), |(m, _)| m);
            let g = match groups.names.iter().position(|n| n == module) {
                Some(g) => g,
                None => {
                    groups.names.push(module.to_string());
                    groups.members.push(Vec::new());
                    groups.names.len() - 1
                }
            };
            groups.members[g].push(p.name.clone());
            groups.of_param.push(Some(g));
        }
        groups
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there is no group (no parameter selected).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The group of selected parameter `p` (index into the graph's parameters).
    pub(crate) fn of(&self, p: usize) -> usize {
        self.of_param[p].expect("only selected parameters are contracted")
    }
}

/// Per-layer kernels and how they were computed.
#[derive(Debug, Clone)]
pub struct PerLayerOutput {
    /// `[G, *kernel shape]`: group `g`'s contribution at index `g`.
    pub kernels: HostArray,
    pub groups: ParamGroups,
    /// Rows per tile, and number of tiles computed.
    pub tile_rows: usize,
    pub tiles: usize,
}

impl PerLayerOutput {
    /// The whole kernel `Σ_l Θ_l`.
    pub fn total(&self) -> HostArray {
        let shape = self.kernels.shape[1..].to_vec();
        let size: usize = shape.iter().product();
        let mut sum = vec![0.0; size];
        for part in self.kernels.data.chunks(size.max(1)) {
            for (s, v) in sum.iter_mut().zip(part) {
                *s += v;
            }
        }
        HostArray::new(shape, sum)
    }
}

/// Each parameter group's kernel between `x1` and `x2` (`None`: `x2 = x1`), by the
/// structured method, tiled under `options.max_memory` with the `G` per-group tiles
/// counted. `progress(done, total)` after each tile.
///
/// # Shapes
/// `kernels`: `[G, N1, N2, O, O]` (full), `[G, N1, N2]` (trace, sum-of-logits),
/// `[G, N1, N2, O]` (diagonal).
///
/// # Errors
/// Option errors for the `nngp` kind (no parameters) or a method other than structured
/// (or `auto`); as [`super::empirical_kernel`] otherwise.
pub fn per_layer_kernel(
    net: &GraphNetwork,
    x1: &HostArray,
    x2: Option<&HostArray>,
    options: &EmpiricalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PerLayerOutput> {
    if options.kind == crate::KernelKind::Nngp {
        return Err(option_err(
            "per_layer",
            "the nngp kernel has no parameter contributions; use another kernel kind",
        ));
    }
    let groups = ParamGroups::by_module(net);
    if groups.is_empty() {
        return Err(option_err("per_layer", "no parameter is selected"));
    }
    let g = groups.len();
    let mut plan = plan(net, x1, x2, options)?;
    if plan.method != crate::Method::Structured {
        return Err(option_err(
            "per_layer",
            format!(
                "per-layer kernels are summed by the structured method, not {}",
                plan.method.name()
            ),
        ));
    }
    // The plan counts one tile kernel; G host tiles and G accumulators are held. Shrink
    // the tiles until those take at most half the bound, and plan the rest within what
    // they leave.
    if options.tile_rows.is_none() {
        let extra = |t: usize| (2 * g - 1) as u64 * (t * t * plan.per_pair() * 8) as u64;
        let mut t = plan.tile_rows;
        while t > 1 && extra(t) > options.max_memory / 2 {
            t = t.div_ceil(2);
        }
        if extra(t) > options.max_memory / 2 {
            return Err(crate::EmpiricalError::Memory {
                bound: options.max_memory,
                needed: 2 * extra(t),
            });
        }
        let mut o = options.clone();
        o.max_memory = options.max_memory - extra(t);
        let t = t.min(super::plan(net, x1, x2, &o)?.tile_rows);
        if t != plan.tile_rows {
            o.tile_rows = Some(t);
            plan = super::plan(net, x1, x2, &o)?;
        }
    }
    let size: usize = plan.shape().iter().product();
    let mut out = vec![0.0; g * size];
    let total = plan.jobs.len();
    for (done, &job) in plan.jobs.iter().enumerate() {
        let tiles = compute_tiles(net, x1, x2, &plan, job, Some(&groups))?;
        for (part, tile) in out.chunks_mut(size.max(1)).zip(&tiles) {
            place_tile(part, &plan, job, tile);
        }
        progress(done + 1, total);
    }
    let mut shape = vec![g];
    shape.extend(plan.shape());
    Ok(PerLayerOutput {
        kernels: HostArray::new(shape, out),
        groups,
        tile_rows: plan.tile_rows,
        tiles: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntk_nets::Precision;
    use ntk_nets::graph::spec;

    fn net() -> GraphNetwork {
        let text = r#"{"input_shape": [3, 4], "nodes": [
            {"name": "embed", "type": "linear", "out_features": 5, "b_std": 0.3},
            {"name": "block.norm", "type": "layer_norm"},
            {"name": "block.fc", "type": "linear", "out_features": 5, "b_std": 0.2},
            {"name": "block.act", "type": "gelu"},
            {"name": "block.add", "type": "add", "inputs": ["block.act", "embed"]},
            {"name": "pool", "type": "mean", "dim": [1]},
            {"name": "head", "type": "linear", "out_features": 2}]}"#;
        let g = spec::parse(text, "<test>").unwrap();
        let params = g.random_params(3).unwrap();
        let device = ntk_nets::BackendKind::Flex.device(Precision::F64).unwrap();
        GraphNetwork::from_params(g.graph, &params, &device, Precision::F64).unwrap()
    }

    fn inputs(n: usize, seed: u64) -> HostArray {
        let mut s = seed;
        let data = (0..n * 12)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect();
        HostArray::new(vec![n, 3, 4], data)
    }

    fn max_rel(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    #[test]
    fn groups_are_modules_in_parameter_order() {
        let mut n = net();
        let g = ParamGroups::by_module(&n);
        assert_eq!(g.names, ["embed", "block.norm", "block.fc", "head"]);
        assert_eq!(g.members[2], ["block.fc.weight", "block.fc.bias"]);
        // Weights only (as TE-NAS selects them): every group keeps its weight alone.
        n.selected = n
            .graph
            .params
            .iter()
            .map(|p| p.name.ends_with("weight"))
            .collect();
        let g = ParamGroups::by_module(&n);
        assert_eq!(g.names, ["embed", "block.norm", "block.fc", "head"]);
        assert_eq!(g.members[2], ["block.fc.weight"]);
        assert_eq!(g.members.concat(), n.selected_names());
    }

    /// Each group's kernel equals the whole kernel of that group's parameters alone, by
    /// the Jacobian method (an independent path), and the groups sum to the whole kernel;
    /// for every parameter kind, x2 = x1 and x2 ≠ x1, one tile and several.
    #[test]
    fn per_layer_kernels_sum_to_the_kernel_and_equal_each_group_alone() {
        let base = net();
        let (x1, x2) = (inputs(5, 1), inputs(3, 2));
        for kind in [
            crate::KernelKind::Full,
            crate::KernelKind::Trace,
            crate::KernelKind::Diagonal,
            crate::KernelKind::SumOfLogits,
        ] {
            // One tile; several of a symmetric plan (mirrored); several of x1 against x2.
            for (x2, tile_rows) in [(None, None), (None, Some(2)), (Some(&x2), Some(2))] {
                let options = EmpiricalOptions {
                    kind,
                    tile_rows,
                    ..Default::default()
                };
                let out = per_layer_kernel(&base, &x1, x2, &options, &mut |_, _| {}).unwrap();
                let whole =
                    super::super::empirical_kernel(&base, &x1, x2, &options, &mut |_, _| {})
                        .unwrap()
                        .kernel;
                assert_eq!(out.kernels.shape[1..], whole.shape[..]);
                let err = max_rel(&out.total().data, &whole.data);
                assert!(err < 1e-12, "{kind:?}: sum differs by {err:e}");
                let size = whole.data.len();
                for (g, members) in out.groups.members.iter().enumerate() {
                    let mut alone = base.clone();
                    alone.selected = (base.graph.params.iter())
                        .map(|p| members.contains(&p.name))
                        .collect();
                    let jac = EmpiricalOptions {
                        method: crate::Method::Jacobian,
                        ..options.clone()
                    };
                    let k = super::super::empirical_kernel(&alone, &x1, x2, &jac, &mut |_, _| {})
                        .unwrap()
                        .kernel;
                    let part = &out.kernels.data[g * size..(g + 1) * size];
                    let err = max_rel(part, &k.data);
                    assert!(
                        err < 1e-10,
                        "{kind:?} group {}: {err:e}",
                        out.groups.names[g]
                    );
                }
            }
        }
        let nngp = EmpiricalOptions {
            kind: crate::KernelKind::Nngp,
            ..Default::default()
        };
        let e = per_layer_kernel(&base, &x1, None, &nngp, &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("nngp"), "{e}");
        let jac = EmpiricalOptions {
            method: crate::Method::Jacobian,
            ..Default::default()
        };
        let e = per_layer_kernel(&base, &x1, None, &jac, &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("structured"), "{e}");
    }
}
