//! Feature maps of graph specs: NTKRF / NTKSketch / CNTKSketch through residual sums and
//! channel concatenations (a WideResNet-style block), node by node.
//!
//! The exact rules of a graph ([`crate::graph`]) join branches linearly: a sum adds the
//! branches' kernels, a channel concatenation takes their channel-weighted mean, `scale`
//! by `c` multiplies by `c²`. A linear combination of kernels `Σ_b w_b K_b` has the
//! feature map `[√w_1 φ_1, √w_2 φ_2, …]` (the branch maps side by side, scaled), for the
//! NNGP features `φ` and the NTK features `ψ` alike, so a join concatenates its inputs'
//! feature rows (position by position) and, past `2m` columns, reduces them by an SRHT
//! to `m` (as [`super::map`] does after a conv layer). Every other node is the layer rule
//! of [`super::map`]: linear/conv2d, relu, avg_pool2d, global_avg_pool / mean over
//! positions, flatten, identity. The graph is first compiled by [`GraphPlan::build`]
//! (so what has no exact limit is refused as there); nonlinearities other than relu, layer
//! norms and attention have no arc-cosine features and are refused naming the node.
//!
//! The branches' random maps are drawn independently (in node order from the seed), so the
//! joined features are unbiased for the joined kernels given the branches' inputs.

use super::budget::Draws;
use super::hadamard::Srht;
use super::map::{
    FeatureOptions, LayerRule, NtkFeatures, Reduce, Rows, Step, apply_step, check_batch,
    check_method, check_options, check_width, compile_step, fill_rows, input_rows,
    numbers_per_branch, project,
};
use crate::activation::ActivationKernel;
use crate::error::{InfiniteError, Result};
use crate::graph::{GraphPlan, Rule};
use crate::plan;
use ntk_nets::graph::spec::GraphSpec;
use ntk_nets::{FeatureShape, HostArray};

/// What one node does to the feature rows.
#[derive(Debug, Clone)]
enum NodeStep {
    Input,
    /// The first input's rows unchanged.
    Same,
    Layer(Step),
    /// A layer, then every feature times a constant (a sum over positions: `P` × mean).
    Scaled(Step, f64),
    /// `[√w_b φ_b]_b`, `[√w_b ψ_b]_b`, reduced past `2m` columns.
    Join {
        scales: Vec<f64>,
        reduce_phi: Reduce,
        reduce_psi: Reduce,
    },
}

#[derive(Debug, Clone)]
struct FeatureNode {
    step: NodeStep,
    inputs: Vec<usize>,
    needed: bool,
    last_use: usize,
}

/// A compiled feature map of a graph spec (all random draws made).
#[derive(Debug, Clone)]
pub struct GraphFeatureMap {
    input: FeatureShape,
    nodes: Vec<FeatureNode>,
    output: usize,
    out_nngp: Srht,
    out_ntk: Srht,
    options: FeatureOptions,
    /// The most node outputs alive at once (branches held until their join).
    max_live: usize,
    /// Bytes of the random transforms (counted as they were drawn).
    map_bytes: u64,
}

fn refuse(spec: &GraphSpec, k: usize, message: impl Into<String>) -> InfiniteError {
    InfiniteError::UnsupportedNode {
        node: spec.nodes[k].name.clone(),
        op: spec.nodes[k].ty.clone(),
        message: message.into(),
    }
}

impl GraphFeatureMap {
    /// Compiles the map of `spec` and draws its random parameters.
    ///
    /// # Errors
    /// What [`GraphPlan::build`] refuses; nodes without arc-cosine features (other
    /// nonlinearities, layer norm, attention) and token inputs, naming the node; the
    /// method against the input (CNTKSketch for images, NTKSketch/NTKRF for vectors);
    /// options as [`super::FeatureMap::new`].
    pub fn new(spec: &GraphSpec, options: &FeatureOptions) -> Result<GraphFeatureMap> {
        GraphFeatureMap::new_within(spec, options, None)
    }

    /// As [`GraphFeatureMap::new`], refusing a map whose random transforms would pass
    /// `max_bytes` before drawing the transform that does (see
    /// [`super::FeatureMap::new_within`]).
    pub fn new_within(
        spec: &GraphSpec,
        options: &FeatureOptions,
        max_bytes: Option<u64>,
    ) -> Result<GraphFeatureMap> {
        let plan = GraphPlan::build(spec, crate::DEFAULT_TANH_DEGREE)?;
        check_options(options)?;
        if plan.tokens.is_some() {
            return Err(refuse(
                spec,
                0,
                "feature maps take vectors [D] or images [C, H, W], not tokens [T, D]",
            ));
        }
        let image = matches!(plan.input, FeatureShape::Image { .. });
        let first = spec.nodes.get(1).map_or("?", |n| n.ty.as_str());
        // The sequential wording names "layer 0": here the first node is named.
        check_method(options.method, image, first).map_err(|e| match e {
            InfiniteError::Unsupported { message, .. } => {
                refuse(spec, 1.min(spec.nodes.len() - 1), message)
            }
            other => other,
        })?;
        let m = options.dim;
        // The random stream, counting the transforms' bytes.
        let mut rng = Draws::new(options.seed, max_bytes);
        let input_cols = match plan.input {
            FeatureShape::Flat(d) => d,
            FeatureShape::Image { c, .. } => c,
        };
        check_width(input_cols, 0, "input")?;
        // (φ columns, ψ columns) of each node's rows.
        let mut dims: Vec<(usize, usize)> = vec![(input_cols, 0); plan.nodes.len()];
        let mut nodes = Vec::with_capacity(plan.nodes.len());
        for (k, node) in plan.nodes.iter().enumerate() {
            let mut step = NodeStep::Same;
            if node.needed {
                let from = node.inputs.first().map_or((input_cols, 0), |&i| dims[i]);
                let (mut kphi, mut kpsi) = from;
                let ty = spec.nodes[k].ty.as_str();
                let layer = |rule: LayerRule, kphi: &mut usize, kpsi: &mut usize, rng: &mut _| {
                    compile_step(&rule, k, ty, (kphi, kpsi), options, rng)
                        .map(|s| s.map_or(NodeStep::Same, NodeStep::Layer))
                };
                step = match &node.rule {
                    Rule::Input => NodeStep::Input,
                    Rule::Same => NodeStep::Same,
                    Rule::Linear(plan::Step::Affine { conv, affine }) => layer(
                        LayerRule::Affine {
                            conv: *conv,
                            kernel: conv.map_or([1, 1], |g| g.kernel),
                            w_std: affine.weight_variance.sqrt(),
                            b_std: affine.bias_variance.map(f64::sqrt),
                            fan_in: affine.fan_in,
                            parameterization: affine.parameterization,
                        },
                        &mut kphi,
                        &mut kpsi,
                        &mut rng,
                    )?,
                    Rule::Linear(plan::Step::AvgPool {
                        window,
                        stride,
                        out,
                    }) => layer(
                        LayerRule::AvgPool {
                            window: *window,
                            stride: *stride,
                            out: *out,
                        },
                        &mut kphi,
                        &mut kpsi,
                        &mut rng,
                    )?,
                    Rule::Linear(plan::Step::GlobalAvgPool) => {
                        layer(LayerRule::GlobalAvgPool, &mut kphi, &mut kpsi, &mut rng)?
                    }
                    Rule::Linear(plan::Step::Flatten) => {
                        let pixels = plan.nodes[node.inputs[0]].layout.pixels();
                        layer(
                            LayerRule::Flatten { pixels },
                            &mut kphi,
                            &mut kpsi,
                            &mut rng,
                        )?
                    }
                    Rule::Activation(ActivationKernel::Relu) => {
                        layer(LayerRule::Relu, &mut kphi, &mut kpsi, &mut rng)?
                    }
                    Rule::Join { weights } => {
                        let cols = node.inputs.iter().fold((0usize, 0usize), |c, &i| {
                            (c.0.saturating_add(dims[i].0), c.1.saturating_add(dims[i].1))
                        });
                        let (reduce_phi, reduce_psi) =
                            Reduce::pair(cols, (&mut kphi, &mut kpsi), m, k, ty, &mut rng)?;
                        NodeStep::Join {
                            scales: weights.iter().map(|w| w.sqrt()).collect(),
                            reduce_phi,
                            reduce_psi,
                        }
                    }
                    Rule::GlobalSum { pixels } => {
                        match layer(LayerRule::GlobalAvgPool, &mut kphi, &mut kpsi, &mut rng)? {
                            NodeStep::Layer(s) => NodeStep::Scaled(s, *pixels as f64),
                            other => other,
                        }
                    }
                    Rule::Scale(c) => NodeStep::Join {
                        scales: vec![c.abs()],
                        reduce_phi: Reduce::none(),
                        reduce_psi: Reduce::none(),
                    },
                    Rule::Linear(plan::Step::Activation(_))
                    | Rule::Activation(_)
                    | Rule::LayerNorm { .. }
                    | Rule::Attention(_) => {
                        return Err(refuse(
                            spec,
                            k,
                            "random features cover relu networks only (this node has no \
                             arc-cosine features); use the exact kernels (`ntk infinite`)",
                        ));
                    }
                };
                dims[k] = (kphi, kpsi);
            }
            nodes.push(FeatureNode {
                step,
                inputs: node.inputs.clone(),
                needed: node.needed,
                last_use: node.last_use,
            });
        }
        // Node outputs alive at node k: computed at i ≤ k, last read at ≥ k (one sweep).
        let (mut max_live, mut live) = (1usize, 0usize);
        let mut ends = vec![0usize; nodes.len() + 1];
        for (k, node) in nodes.iter().enumerate() {
            live -= ends[k];
            if node.needed {
                live += 1;
                ends[node.last_use + 1] += 1;
            }
            max_live = max_live.max(live);
        }
        let (kphi, kpsi) = dims[plan.output];
        let last = spec.nodes.len();
        let out_nngp = rng.srht(kphi, m, last, "output projection")?;
        let out_ntk = rng.srht(kpsi.max(1), m, last, "output projection")?;
        Ok(GraphFeatureMap {
            input: plan.input,
            nodes,
            output: plan.output,
            out_nngp,
            out_ntk,
            options: options.clone(),
            max_live,
            map_bytes: rng.spent(),
        })
    }

    /// Bytes of the map's random transforms (an upper bound), held for its lifetime.
    pub fn map_bytes(&self) -> u64 {
        self.map_bytes
    }

    /// The input shape of one sample.
    pub fn input_shape(&self) -> Vec<usize> {
        self.input.dims()
    }

    /// About the numbers held per sample at the widest point (for choosing batch sizes):
    /// as [`super::FeatureMap::numbers_per_sample`] for each branch alive at once.
    pub fn numbers_per_sample(&self) -> usize {
        numbers_per_branch(self.input, self.options.dim) * self.max_live
    }

    /// Output dimension (of both maps).
    pub fn dim(&self) -> usize {
        self.options.dim
    }

    /// The options the map was built with.
    pub fn options(&self) -> &FeatureOptions {
        &self.options
    }

    /// The features of `x` within `max_bytes`, as [`super::FeatureMap::apply_within`].
    pub fn apply_within(&self, x: &HostArray, max_bytes: u64) -> Result<NtkFeatures> {
        check_batch(self.input, x)?;
        let batch = super::budget::batch_within(
            self.map_bytes,
            self.numbers_per_sample(),
            self.dim(),
            x.shape[0],
            true,
            max_bytes,
        )?;
        super::budget::apply_in_batches(x, batch, |b| self.apply(b))
    }

    /// The features of a batch `x` `[N, *input_shape]`.
    ///
    /// # Errors
    /// [`InfiniteError::InputShape`], [`InfiniteError::NonFiniteInput`] on bad inputs.
    pub fn apply(&self, x: &HostArray) -> Result<NtkFeatures> {
        check_batch(self.input, x)?;
        let n = self.nodes.len();
        let mut rows: Vec<Option<Rows>> = vec![None; n];
        for k in 0..n {
            let node = &self.nodes[k];
            if !node.needed {
                continue;
            }
            let take = |rows: &mut Vec<Option<Rows>>, i: usize| -> Rows {
                let once = node.inputs.iter().filter(|&&j| j == i).count() == 1;
                if self.nodes[i].last_use == k && once {
                    rows[i].take().expect("input rows computed")
                } else {
                    rows[i].clone().expect("input rows computed")
                }
            };
            let out = match &node.step {
                NodeStep::Input => input_rows(self.input, x),
                NodeStep::Same => take(&mut rows, node.inputs[0]),
                NodeStep::Layer(step) => apply_step(step, take(&mut rows, node.inputs[0])),
                NodeStep::Scaled(step, c) => {
                    let mut r = apply_step(step, take(&mut rows, node.inputs[0]));
                    r.phi.iter_mut().for_each(|v| *v *= c);
                    r.psi.iter_mut().for_each(|v| *v *= c);
                    r
                }
                NodeStep::Join {
                    scales,
                    reduce_phi,
                    reduce_psi,
                } => {
                    let ins: Vec<&Rows> = node
                        .inputs
                        .iter()
                        .map(|&i| rows[i].as_ref().expect("input rows computed"))
                        .collect();
                    join(&ins, scales, reduce_phi, reduce_psi)
                }
            };
            for &i in &node.inputs {
                if self.nodes[i].last_use == k {
                    rows[i] = None;
                }
            }
            rows[k] = Some(out);
        }
        let out = rows[self.output].take().expect("output rows computed");
        debug_assert_eq!(out.pixels(), 1);
        Ok(project(
            &out,
            &self.out_nngp,
            &self.out_ntk,
            self.options.dim,
        ))
    }
}

/// The rows `[s_1 r_1, s_2 r_2, …]` of inputs of one geometry, reduced as given.
fn join(ins: &[&Rows], scales: &[f64], reduce_phi: &Reduce, reduce_psi: &Reduce) -> Rows {
    let first = ins[0];
    let n_rows = first.samples * first.pixels();
    let concat = |part: &(dyn Fn(&Rows) -> (usize, &[f64]) + Sync), reduce: &Reduce| {
        let width: usize = ins.iter().map(|r| part(r).0).sum();
        fill_rows(n_rows, width, reduce, |row, dst| {
            let mut at = 0;
            for (r, s) in ins.iter().zip(scales) {
                let (k, data) = part(r);
                for (d, v) in dst[at..at + k]
                    .iter_mut()
                    .zip(&data[row * k..(row + 1) * k])
                {
                    *d = s * v;
                }
                at += k;
            }
        })
    };
    let (kphi, phi) = concat(&|r: &Rows| (r.kphi, r.phi.as_slice()), reduce_phi);
    let (kpsi, psi) = concat(&|r: &Rows| (r.kpsi, r.psi.as_slice()), reduce_psi);
    Rows {
        samples: first.samples,
        h: first.h,
        w: first.w,
        kphi,
        phi,
        kpsi,
        psi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FeatureMethod, feature_kernel};
    use crate::graph::graph_kernels;
    use ntk_nets::graph::spec::parse;

    fn spec(text: &str) -> GraphSpec {
        parse(text, "test").unwrap()
    }

    /// With an identity shortcut the NNGP features of a sum of two branches are the two
    /// branches' features side by side: exact (no sketch) on a linear residual network,
    /// where every map is exact below `2m` columns.
    #[test]
    fn a_linear_residual_sum_is_exact() {
        let g = spec(
            r#"{"input_shape":[3],"parameterization":"ntk","nodes":[
            {"name":"a","type":"linear","out_features":4,"w_std":1.2,"b_std":0.3},
            {"name":"b","type":"linear","out_features":4,"w_std":0.7,"b_std":0.1},
            {"name":"c","type":"linear","out_features":4,"w_std":1.1,"inputs":["a"]},
            {"name":"s","type":"add","inputs":["b","c"]},
            {"name":"o","type":"linear","out_features":1,"w_std":0.9,"b_std":0.2}]}"#,
        );
        let x = HostArray::new(
            vec![3, 3],
            vec![0.3, -1.2, 0.8, 1.5, 0.1, -0.4, -0.7, 0.9, 2.0],
        );
        let exact = graph_kernels(&g, &x, None, &Default::default()).unwrap();
        let o = FeatureOptions {
            method: FeatureMethod::NtkSketch,
            dim: 64,
            ..Default::default()
        };
        let f = GraphFeatureMap::new(&g, &o).unwrap().apply(&x).unwrap();
        let k = feature_kernel(&f.nngp, &f.nngp).unwrap();
        let t = feature_kernel(&f.ntk, &f.ntk).unwrap();
        for (a, b) in k.data.iter().zip(&exact.nngp.data) {
            assert!((a - b).abs() < 1e-12 * b.abs().max(1.0), "nngp {a} {b}");
        }
        for (a, b) in t.data.iter().zip(&exact.ntk.data) {
            assert!((a - b).abs() < 1e-12 * b.abs().max(1.0), "ntk {a} {b}");
        }
    }

    /// A sum over positions is `P` times the mean in features (`P²` in kernels): exact
    /// on a linear conv net, where every map is exact below `2m` columns.
    #[test]
    fn a_sum_over_positions_is_exact_on_a_linear_conv_net() {
        let g = spec(
            r#"{"input_shape":[2,3,3],"parameterization":"ntk","nodes":[
            {"name":"c","type":"conv2d","out_channels":3,"kernel_size":2,"w_std":1.3,"b_std":0.2},
            {"name":"s","type":"sum","dim":[2,3]},
            {"name":"o","type":"linear","out_features":1,"w_std":0.8,"b_std":0.1}]}"#,
        );
        let x = HostArray::new(
            vec![2, 2, 3, 3],
            (0..36).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect(),
        );
        let exact = graph_kernels(&g, &x, None, &Default::default()).unwrap();
        let o = FeatureOptions {
            method: FeatureMethod::CntkSketch,
            dim: 256,
            ..Default::default()
        };
        let f = GraphFeatureMap::new(&g, &o).unwrap().apply(&x).unwrap();
        let t = feature_kernel(&f.ntk, &f.ntk).unwrap();
        for (a, b) in t.data.iter().zip(&exact.ntk.data) {
            assert!((a - b).abs() < 1e-12 * b.abs().max(1.0), "ntk {a} {b}");
        }
    }

    #[test]
    fn a_method_for_the_other_input_kind_names_the_first_node() {
        let g = spec(
            r#"{"input_shape":[1,4,4],"parameterization":"ntk","nodes":[
            {"name":"stem","type":"conv2d","out_channels":2,"kernel_size":3},
            {"name":"f","type":"flatten"},
            {"name":"o","type":"linear","out_features":1}]}"#,
        );
        let o = FeatureOptions {
            method: FeatureMethod::NtkSketch,
            ..Default::default()
        };
        match GraphFeatureMap::new(&g, &o).unwrap_err() {
            InfiniteError::UnsupportedNode { node, message, .. } => {
                assert_eq!(node, "stem");
                assert!(message.contains("use cntksketch"), "{message}");
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn nodes_without_features_are_refused_by_name() {
        let g = spec(
            r#"{"input_shape":[3],"parameterization":"ntk","nodes":[
            {"name":"a","type":"linear","out_features":4},
            {"name":"e","type":"erf"},
            {"name":"o","type":"linear","out_features":1}]}"#,
        );
        let o = FeatureOptions {
            method: FeatureMethod::NtkSketch,
            ..Default::default()
        };
        match GraphFeatureMap::new(&g, &o).unwrap_err() {
            InfiniteError::UnsupportedNode { node, message, .. } => {
                assert_eq!(node, "e");
                assert!(message.contains("relu networks only"), "{message}");
            }
            e => panic!("{e}"),
        }
    }
}
