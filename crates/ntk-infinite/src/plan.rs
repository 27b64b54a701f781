//! From a network spec to the list of kernel rules to apply, with validation (what the
//! infinite-width recursions cannot handle is refused here, naming the layer) and the
//! working-memory estimate.

use crate::activation::ActivationKernel;
use crate::conv::ConvGeometry;
use crate::covariance::{Layout, PairBlock, input_covariance};
use crate::dense::Affine;
use crate::error::{InfiniteError, Result, unsupported};
use crate::pooling;
use crate::quadrature::{self, GaussHermite};
use ntk_nets::{Activation, FeatureShape, LayerSpec, NetworkSpec};

/// One kernel rule of the plan (identity layers have none).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Dense (`conv: None`) or conv (offset averaging first, then the affine rule).
    Affine {
        conv: Option<ConvGeometry>,
        affine: Affine,
    },
    /// An elementwise nonlinearity; needs the per-position variances of both samples.
    Activation(ActivationKernel),
    /// `avg_pool2d` (no padding).
    AvgPool {
        window: [usize; 2],
        stride: [usize; 2],
        out: [usize; 2],
    },
    GlobalAvgPool,
    /// Flatten of an image (a flatten of a vector is the identity and has no step).
    Flatten,
}

/// The compiled network: where each pair block starts, and the rules to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub input: FeatureShape,
    /// Layout of the input covariance: [`Layout::Full`] when the network pools (pooling
    /// mixes different positions), else [`Layout::Diagonal`] for images, `Vector` for
    /// vectors. This is the choice neural-tangents makes (`diagonal_spatial`).
    pub input_layout: Layout,
    pub steps: Vec<Step>,
    /// `layouts[k]`: the layout entering `steps[k]`; one more entry for the output.
    pub layouts: Vec<Layout>,
}

/// Per-sample variances at the input of every activation, in plan order.
pub type SampleVariances = Vec<Vec<f64>>;

/// The Gauss–Hermite rule of tanh with `degree` points, made once per network.
pub(crate) fn cached_tanh_rule(
    cache: &mut Option<GaussHermite>,
    degree: usize,
) -> Result<GaussHermite> {
    if let Some(r) = cache {
        return Ok(r.clone());
    }
    let r = GaussHermite::new(degree).ok_or_else(|| InfiniteError::Option {
        option: "tanh_quadrature_degree".into(),
        message: format!("must be in 1..={}, got {degree}", quadrature::MAX_DEGREE),
    })?;
    *cache = Some(r.clone());
    Ok(r)
}

/// Number of entries of a layout, without overflow (for the memory estimate).
pub(crate) fn entries(layout: Layout) -> u128 {
    match layout {
        Layout::Vector => 1,
        Layout::Diagonal { h, w } => h as u128 * w as u128,
        Layout::Full { h, w } => (h as u128 * w as u128).pow(2),
    }
}

pub(crate) fn pixels(layout: Layout) -> u128 {
    match layout {
        Layout::Vector => 1,
        Layout::Diagonal { h, w } | Layout::Full { h, w } => h as u128 * w as u128,
    }
}

impl Plan {
    /// Compiles a spec. `tanh_degree` is the number of Gauss–Hermite points per axis of
    /// the tanh quadrature.
    ///
    /// Refused, naming the layer: a nonlinearity whose input is not Gaussian (no dense or
    /// conv before it since the input or the previous nonlinearity, or a flatten of an
    /// image in between), exactly where neural-tangents raises "The input to the
    /// activation function must be Gaussian".
    pub fn build(spec: &NetworkSpec, tanh_degree: usize) -> Result<Plan> {
        let geometry = spec.analyse()?;
        let input = spec.input_feature_shape()?;
        let pools = spec
            .layers
            .iter()
            .any(|l| matches!(l, LayerSpec::AvgPool2d { .. } | LayerSpec::GlobalAvgPool));
        let input_layout = match input {
            FeatureShape::Flat(_) => Layout::Vector,
            FeatureShape::Image { h, w, .. } if pools => Layout::Full { h, w },
            FeatureShape::Image { h, w, .. } => Layout::Diagonal { h, w },
        };
        let mut layout = input_layout;
        let mut layouts = vec![layout];
        let mut steps = Vec::new();
        // Whether the current features are (jointly) Gaussian with i.i.d. channels given
        // the previous layers, as the closed forms need: true right after a random
        // affine layer, kept by linear parameter-free layers that keep the per-position
        // structure (identity, pooling), lost by a nonlinearity or by flattening an image.
        let mut gaussian = false;
        let mut tanh_rule: Option<GaussHermite> = None;
        for (layer, geo) in spec.layers.iter().zip(&geometry) {
            let index = geo.index;
            let kind = layer.kind();
            let step = match layer {
                LayerSpec::Dense(d) => {
                    gaussian = true;
                    Some(Step::Affine {
                        conv: None,
                        affine: Affine {
                            weight_variance: d.w_std * d.w_std,
                            bias_variance: d.b_std.map(|b| b * b),
                            fan_in: geo.fan_in,
                            parameterization: spec.parameterization,
                        },
                    })
                }
                LayerSpec::Conv2d(c) => {
                    let FeatureShape::Image { h, w, .. } = geo.output else {
                        return Err(unsupported(index, kind, "conv2d without an image output"));
                    };
                    gaussian = true;
                    let conv = ConvGeometry {
                        kernel: c.kernel,
                        stride: c.stride,
                        pad_before: [geo.padding[0].0, geo.padding[1].0],
                        out: [h, w],
                    };
                    layout = match layout {
                        Layout::Full { .. } => Layout::Full { h, w },
                        _ => Layout::Diagonal { h, w },
                    };
                    Some(Step::Affine {
                        conv: Some(conv),
                        affine: Affine {
                            weight_variance: c.w_std * c.w_std,
                            bias_variance: c.b_std.map(|b| b * b),
                            fan_in: geo.fan_in,
                            parameterization: spec.parameterization,
                        },
                    })
                }
                LayerSpec::Activation(a) => {
                    let kernel = match a {
                        Activation::Identity => None,
                        Activation::Relu => Some(ActivationKernel::Relu),
                        Activation::Erf => Some(ActivationKernel::ERF),
                        Activation::Gelu => Some(ActivationKernel::Gelu),
                        Activation::Tanh => {
                            let rule = cached_tanh_rule(&mut tanh_rule, tanh_degree)?;
                            Some(ActivationKernel::Tanh(rule))
                        }
                    };
                    match kernel {
                        // Identity: a linear no-op, keeps Gaussianity.
                        None => None,
                        Some(kernel) => {
                            if !gaussian {
                                return Err(unsupported(
                                    index,
                                    kind,
                                    "the input of a nonlinearity must be Gaussian: put a dense \
                                     or conv2d layer before it (neural-tangents has no \
                                     infinite-width kernel for two nonlinearities in a row, one \
                                     on the raw input, or one after flatten)",
                                ));
                            }
                            gaussian = false;
                            Some(Step::Activation(kernel))
                        }
                    }
                }
                LayerSpec::Flatten => match layout {
                    Layout::Vector => None,
                    _ => {
                        gaussian = false;
                        layout = Layout::Vector;
                        Some(Step::Flatten)
                    }
                },
                LayerSpec::GlobalAvgPool => {
                    layout = Layout::Vector;
                    Some(Step::GlobalAvgPool)
                }
                LayerSpec::AvgPool2d { window, stride } => {
                    let FeatureShape::Image { h, w, .. } = geo.output else {
                        return Err(unsupported(
                            index,
                            kind,
                            "avg_pool2d without an image output",
                        ));
                    };
                    layout = Layout::Full { h, w };
                    Some(Step::AvgPool {
                        window: *window,
                        stride: *stride,
                        out: [h, w],
                    })
                }
            };
            if let Some(s) = step {
                steps.push(s);
                layouts.push(layout);
            }
        }
        if layout != Layout::Vector {
            return Err(unsupported(
                spec.layers.len() - 1,
                spec.layers.last().map_or("?", |l| l.kind()),
                "the network must end in a vector",
            ));
        }
        Ok(Plan {
            input,
            input_layout,
            steps,
            layouts,
        })
    }

    /// Whether `pair(x, y)` equals `pair(y, x)` exactly in exact arithmetic: true unless a
    /// tanh is present (its quadrature rule is not symmetric in the two variances, so the
    /// oracle's kernel is not exactly symmetric either).
    pub fn is_symmetric(&self) -> bool {
        !self
            .steps
            .iter()
            .any(|s| matches!(s, Step::Activation(ActivationKernel::Tanh(_))))
    }

    /// Estimated peak working memory in bytes for `n1 × n2` pairs on `threads` threads,
    /// with a one-line breakdown.
    ///
    /// Per thread: the largest pair block in flight (input, row-pass intermediate and
    /// output, for NNGP and NTK). Plus the per-sample variances at every activation and
    /// the two `[N1, N2]` outputs.
    pub fn memory_estimate(&self, n1: usize, n2: usize, threads: usize) -> (u128, String) {
        let mut peak: u128 = 1;
        for (k, step) in self.steps.iter().enumerate() {
            let (lin, lout) = (self.layouts[k], self.layouts[k + 1]);
            let mut live = entries(lin) + entries(lout);
            if let (Layout::Full { w, .. }, Layout::Full { h: oh, .. }) = (lin, lout)
                && matches!(step, Step::Affine { .. } | Step::AvgPool { .. })
            {
                // The row pass's intermediate block [H', W, H', W].
                live += (oh as u128 * w as u128).pow(2);
            }
            peak = peak.max(live);
        }
        let per_thread = peak * 2 * 8;
        let per_sample: u128 = self
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Step::Activation(_)))
            .map(|(k, _)| pixels(self.layouts[k]) * 8)
            .sum();
        let samples = (n1 as u128 + n2 as u128) * per_sample;
        let output = 2 * 8 * n1 as u128 * n2 as u128;
        let total = threads as u128 * per_thread + samples + output;
        let detail = format!(
            "{threads} thread(s) × {per_thread} bytes for the largest pair block \
             (position-pair covariances), {samples} bytes of per-sample variances, \
             {output} bytes of output"
        );
        (total, detail)
    }

    /// The per-position variances of one sample at the input of every activation: the
    /// NNGP chain of the pair `(x, x)`.
    ///
    /// # Shapes
    /// `x`: one sample, `input.numel()`; result: one `[pixels]` vector per activation.
    pub fn sample_variances(&self, x: &[f64]) -> SampleVariances {
        let mut block = PairBlock {
            layout: self.input_layout,
            nngp: input_covariance(self.input, self.input_layout, x, x),
            ntk: None,
        };
        let mut out = Vec::new();
        for step in &self.steps {
            if let Step::Activation(kernel) = step {
                let v = block.layout.variances(&block.nngp);
                kernel.apply(&mut block, &v, &v);
                out.push(v);
            } else {
                apply_linear(step, &mut block);
            }
        }
        out
    }

    /// `(NNGP, NTK)` of one output for the pair `(x, y)`.
    ///
    /// # Shapes
    /// `x`, `y`: one sample each; `vx`, `vy`: their [`Plan::sample_variances`].
    pub fn pair(
        &self,
        x: &[f64],
        y: &[f64],
        vx: &SampleVariances,
        vy: &SampleVariances,
    ) -> (f64, f64) {
        let nngp = input_covariance(self.input, self.input_layout, x, y);
        let mut block = PairBlock {
            layout: self.input_layout,
            ntk: Some(vec![0.0; nngp.len()]),
            nngp,
        };
        let mut activation = 0;
        for step in &self.steps {
            if let Step::Activation(kernel) = step {
                kernel.apply(&mut block, &vx[activation], &vy[activation]);
                activation += 1;
            } else {
                apply_linear(step, &mut block);
            }
        }
        let ntk = block.ntk.as_ref().map_or(0.0, |t| t[0]);
        (block.nngp[0], ntk)
    }
}

/// Applies a step that is linear in the features (everything but activations).
pub(crate) fn apply_linear(step: &Step, block: &mut PairBlock) {
    match step {
        Step::Activation(_) => {}
        Step::Affine { conv, affine } => {
            if let Some(g) = conv {
                let (layout, nngp) = g.average(block.layout, &block.nngp);
                block.ntk = block.ntk.as_ref().map(|t| g.average(block.layout, t).1);
                block.layout = layout;
                block.nngp = nngp;
            }
            affine.apply(&mut block.nngp, block.ntk.as_deref_mut());
        }
        Step::AvgPool {
            window,
            stride,
            out,
        } => {
            let (layout, nngp) =
                pooling::avg_pool(block.layout, &block.nngp, *window, *stride, *out);
            block.ntk = block
                .ntk
                .as_ref()
                .map(|t| pooling::avg_pool(block.layout, t, *window, *stride, *out).1);
            block.layout = layout;
            block.nngp = nngp;
        }
        Step::GlobalAvgPool => {
            block.nngp = vec![pooling::global_avg_pool(block.layout, &block.nngp)];
            block.ntk = block
                .ntk
                .as_ref()
                .map(|t| vec![pooling::global_avg_pool(block.layout, t)]);
            block.layout = Layout::Vector;
        }
        Step::Flatten => {
            block.nngp = vec![pooling::flatten(block.layout, &block.nngp)];
            block.ntk = block
                .ntk
                .as_ref()
                .map(|t| vec![pooling::flatten(block.layout, t)]);
            block.layout = Layout::Vector;
        }
    }
}
