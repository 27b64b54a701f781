//! The network spec: the JSON interchange format of `shared/spec/network-spec.md`.
//!
//! A spec is the shape of a PyTorch `nn.Sequential`: an input shape for ONE sample
//! (`[d]` or `[C, H, W]`), a parameterization, and a list of layers. Parsing is done by
//! hand from a `serde_json::Value` so that every error names the layer index and the field
//! (serde's own messages do not), and unknown fields are refused (they are usually typos).

use crate::error::{NetsError, Result};
use serde_json::{Map, Value};
use std::path::Path;

/// Most layers a spec may have: guards against specs made to exhaust time or memory.
pub const MAX_LAYERS: usize = 10_000;
/// Most elements any one activation or parameter tensor (per sample) may have.
pub const MAX_ELEMENTS: usize = 1 << 34;

/// How a parametrised layer maps its stored variables to its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameterization {
    /// `y = (w_std / sqrt(fan_in)) * W x + b_std * b`, `W`, `b` standard normal at init.
    Ntk,
    /// `y = W x + b` (PyTorch's `nn.Linear` / `nn.Conv2d`); at init
    /// `W ~ N(0, w_std² / fan_in)`, `b ~ N(0, b_std²)`.
    Standard,
}

impl Parameterization {
    /// The name used in specs (`"ntk"`, `"standard"`).
    pub fn name(self) -> &'static str {
        match self {
            Parameterization::Ntk => "ntk",
            Parameterization::Standard => "standard",
        }
    }
}

/// Spatial padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Output `ceil(H / stride)`; the zeros are split as XLA's `SAME` does (the extra one,
    /// for an even total, at the end). For stride 1 and an odd kernel this is PyTorch's
    /// `padding="same"`.
    Same,
    /// No padding: output `(H - k) / stride + 1`.
    Valid,
}

/// A parameter-free elementwise nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Erf,
    Tanh,
    /// Exact GELU, `x Φ(x)` with the normal CDF Φ (erf-based).
    Gelu,
    Identity,
}

impl Activation {
    /// The name used in specs.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Erf => "erf",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
            Activation::Identity => "identity",
        }
    }
}

/// A fully connected layer, `[d_in] -> [width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseSpec {
    pub width: usize,
    pub w_std: f64,
    /// `None`: the layer has no bias parameter at all (`"b_std": null`).
    pub b_std: Option<f64>,
}

/// A 2-D convolution, `[C, H, W] -> [channels, H', W']`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dSpec {
    pub channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: Padding,
    pub w_std: f64,
    /// `None`: no bias parameter at all.
    pub b_std: Option<f64>,
}

/// One entry of `layers`.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    Dense(DenseSpec),
    Conv2d(Conv2dSpec),
    Activation(Activation),
    /// `[C, H, W] -> [C*H*W]` in C, H, W order (identity on a vector).
    Flatten,
    /// Mean over H and W: `[C, H, W] -> [C]`.
    GlobalAvgPool,
    /// Mean over windows, no padding: `[C, H, W] -> [C, H', W']`.
    AvgPool2d {
        window: [usize; 2],
        stride: [usize; 2],
    },
}

impl LayerSpec {
    /// The spec's `type` string of this layer.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Dense(_) => "dense",
            LayerSpec::Conv2d(_) => "conv2d",
            LayerSpec::Activation(a) => a.name(),
            LayerSpec::Flatten => "flatten",
            LayerSpec::GlobalAvgPool => "global_avg_pool",
            LayerSpec::AvgPool2d { .. } => "avg_pool2d",
        }
    }
}

/// The shape of one sample's features between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureShape {
    /// A vector `[d]`.
    Flat(usize),
    /// An image `[C, H, W]`, channels first.
    Image { c: usize, h: usize, w: usize },
}

impl FeatureShape {
    /// The dimensions of one sample, as in the spec (`[d]` or `[C, H, W]`).
    pub fn dims(&self) -> Vec<usize> {
        match *self {
            FeatureShape::Flat(d) => vec![d],
            FeatureShape::Image { c, h, w } => vec![c, h, w],
        }
    }
    /// Number of scalars per sample.
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }
}

/// What a layer does to shapes and which parameters it holds, from [`NetworkSpec::analyse`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGeometry {
    pub index: usize,
    pub input: FeatureShape,
    pub output: FeatureShape,
    /// `in_features` (dense) or `in_channels * kh * kw` (conv2d); 0 for parameter-free layers.
    pub fan_in: usize,
    /// Zeros added before/after, per spatial axis `[(top, bottom), (left, right)]` (conv2d).
    pub padding: [(usize, usize); 2],
    /// PyTorch-layout parameter shapes: `("{i}.weight", shape)`, `("{i}.bias", shape)`.
    pub params: Vec<(String, Vec<usize>)>,
}

/// A parsed, not yet validated network spec. [`NetworkSpec::analyse`] validates it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    pub input_shape: Vec<usize>,
    pub parameterization: Parameterization,
    pub layers: Vec<LayerSpec>,
}

fn layer_err(index: usize, kind: &str, field: &str, message: impl Into<String>) -> NetsError {
    NetsError::SpecLayer {
        index,
        kind: kind.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

fn top_err(field: &str, message: impl Into<String>) -> NetsError {
    NetsError::SpecField {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Reads typed fields out of one layer object, naming the layer in every error.
struct LayerFields<'a> {
    index: usize,
    kind: &'a str,
    obj: &'a Map<String, Value>,
}

impl LayerFields<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> NetsError {
        layer_err(self.index, self.kind, field, msg)
    }

    fn check_known(&self, allowed: &[&str]) -> Result<()> {
        for key in self.obj.keys() {
            if key != "type" && !allowed.contains(&key.as_str()) {
                let list = if allowed.is_empty() {
                    "this layer takes no fields".to_string()
                } else {
                    format!("allowed: {}", allowed.join(", "))
                };
                return Err(self.err(key, format!("unknown field ({list})")));
            }
        }
        Ok(())
    }

    fn positive_int(&self, v: &Value, field: &str) -> Result<usize> {
        let n = v
            .as_u64()
            .ok_or_else(|| self.err(field, format!("expected a positive integer, got {v}")))?;
        if n == 0 {
            return Err(self.err(field, "must be positive, got 0"));
        }
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| self.err(field, format!("{n} is too large")))
    }

    fn required_int(&self, field: &str) -> Result<usize> {
        match self.obj.get(field) {
            None => Err(self.err(field, "missing")),
            Some(v) => self.positive_int(v, field),
        }
    }

    fn pair(&self, field: &str, default: Option<[usize; 2]>) -> Result<[usize; 2]> {
        let Some(v) = self.obj.get(field) else {
            return default.ok_or_else(|| self.err(field, "missing"));
        };
        if v.is_null() {
            if let Some(d) = default {
                return Ok(d);
            }
        }
        let arr = v
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| self.err(field, format!("expected [h, w], got {v}")))?;
        Ok([
            self.positive_int(&arr[0], field)?,
            self.positive_int(&arr[1], field)?,
        ])
    }

    fn finite(&self, v: &Value, field: &str) -> Result<f64> {
        let x = v
            .as_f64()
            .ok_or_else(|| self.err(field, format!("expected a number, got {v}")))?;
        if !x.is_finite() {
            return Err(self.err(field, format!("must be finite, got {x}")));
        }
        Ok(x)
    }

    /// A standard deviation: finite and not negative.
    fn std_dev(&self, v: &Value, field: &str) -> Result<f64> {
        let x = self.finite(v, field)?;
        if x < 0.0 {
            return Err(self.err(field, format!("a standard deviation must be >= 0, got {x}")));
        }
        Ok(x)
    }

    fn w_std(&self) -> Result<f64> {
        match self.obj.get("w_std") {
            None => Ok(1.0),
            Some(v) => self.std_dev(v, "w_std"),
        }
    }

    /// `b_std`: absent → 0.0 (a bias parameter exists), `null` → no bias parameter.
    fn b_std(&self) -> Result<Option<f64>> {
        match self.obj.get("b_std") {
            None => Ok(Some(0.0)),
            Some(Value::Null) => Ok(None),
            Some(v) => self.std_dev(v, "b_std").map(Some),
        }
    }
}

fn parse_layer(index: usize, v: &Value) -> Result<LayerSpec> {
    let obj = v
        .as_object()
        .ok_or_else(|| layer_err(index, "?", "type", format!("expected an object, got {v}")))?;
    let kind = match obj.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(layer_err(
                index,
                "?",
                "type",
                format!("expected a string, got {other}"),
            ));
        }
        None => return Err(layer_err(index, "?", "type", "missing")),
    };
    let f = LayerFields { index, kind, obj };
    let layer = match kind {
        "dense" => {
            f.check_known(&["width", "w_std", "b_std"])?;
            LayerSpec::Dense(DenseSpec {
                width: f.required_int("width")?,
                w_std: f.w_std()?,
                b_std: f.b_std()?,
            })
        }
        "conv2d" => {
            f.check_known(&["channels", "kernel", "stride", "padding", "w_std", "b_std"])?;
            let padding = match obj.get("padding") {
                None | Some(Value::Null) => Padding::Same,
                Some(Value::String(s)) if s.eq_ignore_ascii_case("same") => Padding::Same,
                Some(Value::String(s)) if s.eq_ignore_ascii_case("valid") => Padding::Valid,
                Some(other) => {
                    return Err(f.err(
                        "padding",
                        format!("expected \"same\" or \"valid\", got {other}"),
                    ));
                }
            };
            LayerSpec::Conv2d(Conv2dSpec {
                channels: f.required_int("channels")?,
                kernel: f.pair("kernel", None)?,
                stride: f.pair("stride", Some([1, 1]))?,
                padding,
                w_std: f.w_std()?,
                b_std: f.b_std()?,
            })
        }
        "relu" | "erf" | "tanh" | "gelu" | "identity" => {
            f.check_known(&[])?;
            LayerSpec::Activation(match kind {
                "relu" => Activation::Relu,
                "erf" => Activation::Erf,
                "tanh" => Activation::Tanh,
                "gelu" => Activation::Gelu,
                _ => Activation::Identity,
            })
        }
        "flatten" => {
            f.check_known(&[])?;
            LayerSpec::Flatten
        }
        "global_avg_pool" => {
            f.check_known(&[])?;
            LayerSpec::GlobalAvgPool
        }
        "avg_pool2d" => {
            f.check_known(&["window", "stride"])?;
            let window = f.pair("window", None)?;
            LayerSpec::AvgPool2d {
                window,
                stride: f.pair("stride", Some(window))?,
            }
        }
        other => {
            return Err(layer_err(
                index,
                other,
                "type",
                format!(
                    "unknown layer type {other:?} (known: dense, conv2d, relu, erf, tanh, gelu, \
                     identity, flatten, global_avg_pool, avg_pool2d)"
                ),
            ));
        }
    };
    Ok(layer)
}

impl NetworkSpec {
    /// Parses a spec from JSON text and validates it ([`NetworkSpec::analyse`]).
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| NetsError::SpecJson(e.to_string()))?;
        let spec = Self::from_value(&value)?;
        spec.analyse()?;
        Ok(spec)
    }

    /// Reads, parses and validates a spec file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let not_sequential = |what: &str| {
            NetsError::SpecJson(format!(
                "{} is {what}: this command takes sequential specs (`layers`) only; `ntk forward`, \
                 `ntk empirical`, `ntk score` and `ntk analyze --checkpoints` take graph networks \
                 too. The infinite-width commands (infinite, features, compare) need per-layer \
                 standard deviations (w_std, b_std) that an ONNX file does not have: write the \
                 architecture as a sequential spec",
                path.display()
            ))
        };
        if crate::graph::is_onnx(path) {
            return Err(not_sequential("an ONNX file"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| NetsError::io(path, e))?;
        if crate::graph::spec::is_graph_spec(&text) {
            return Err(not_sequential("a graph spec (`nodes`)"));
        }
        Self::from_json(&text).map_err(|e| match e {
            NetsError::SpecJson(m) => NetsError::SpecJson(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses a spec from a JSON value (no shape validation).
    pub fn from_value(value: &Value) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| NetsError::SpecJson(format!("expected a JSON object, got {value}")))?;
        for key in obj.keys() {
            if !["input_shape", "parameterization", "layers"].contains(&key.as_str()) {
                return Err(top_err(
                    key,
                    "unknown field (allowed: input_shape, parameterization, layers)",
                ));
            }
        }
        let shape_v = obj
            .get("input_shape")
            .ok_or_else(|| top_err("input_shape", "missing"))?;
        let arr = shape_v
            .as_array()
            .ok_or_else(|| top_err("input_shape", format!("expected an array, got {shape_v}")))?;
        let mut input_shape = Vec::with_capacity(arr.len());
        for d in arr {
            let n = d
                .as_u64()
                .filter(|&n| n > 0 && n as usize <= MAX_ELEMENTS)
                .ok_or_else(|| {
                    top_err(
                        "input_shape",
                        format!("dimensions must be positive integers, got {d}"),
                    )
                })?;
            input_shape.push(n as usize);
        }
        let parameterization = match obj.get("parameterization") {
            None | Some(Value::Null) => Parameterization::Ntk,
            Some(Value::String(s)) if s == "ntk" => Parameterization::Ntk,
            Some(Value::String(s)) if s == "standard" => Parameterization::Standard,
            Some(other) => {
                return Err(top_err(
                    "parameterization",
                    format!("expected \"ntk\" or \"standard\", got {other}"),
                ));
            }
        };
        let layers_v = obj
            .get("layers")
            .ok_or_else(|| top_err("layers", "missing"))?;
        let layers_arr = layers_v
            .as_array()
            .ok_or_else(|| top_err("layers", format!("expected an array, got {layers_v}")))?;
        if layers_arr.len() > MAX_LAYERS {
            return Err(top_err(
                "layers",
                format!(
                    "{} layers; at most {MAX_LAYERS} are accepted",
                    layers_arr.len()
                ),
            ));
        }
        let layers = layers_arr
            .iter()
            .enumerate()
            .map(|(i, v)| parse_layer(i, v))
            .collect::<Result<Vec<_>>>()?;
        Ok(NetworkSpec {
            input_shape,
            parameterization,
            layers,
        })
    }

    /// The spec as JSON (the interchange format).
    pub fn to_json(&self) -> Value {
        use serde_json::json;
        let bias = |b: Option<f64>| b.map_or(Value::Null, |b| json!(b));
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| match l {
                LayerSpec::Dense(d) => {
                    json!({"type": "dense", "width": d.width, "w_std": d.w_std, "b_std": bias(d.b_std)})
                }
                LayerSpec::Conv2d(c) => json!({
                    "type": "conv2d", "channels": c.channels, "kernel": c.kernel,
                    "stride": c.stride,
                    "padding": if c.padding == Padding::Same { "same" } else { "valid" },
                    "w_std": c.w_std, "b_std": bias(c.b_std)
                }),
                LayerSpec::AvgPool2d { window, stride } => {
                    json!({"type": "avg_pool2d", "window": window, "stride": stride})
                }
                other => json!({"type": other.kind()}),
            })
            .collect();
        json!({
            "input_shape": self.input_shape,
            "parameterization": self.parameterization.name(),
            "layers": layers,
        })
    }

    /// The input shape as a [`FeatureShape`].
    pub fn input_feature_shape(&self) -> Result<FeatureShape> {
        match self.input_shape.as_slice() {
            [d] => Ok(FeatureShape::Flat(*d)),
            [c, h, w] => {
                let n = c.checked_mul(*h).and_then(|x| x.checked_mul(*w));
                if n.is_none_or(|n| n > MAX_ELEMENTS) {
                    return Err(top_err("input_shape", "too many elements per sample"));
                }
                Ok(FeatureShape::Image {
                    c: *c,
                    h: *h,
                    w: *w,
                })
            }
            other => Err(top_err(
                "input_shape",
                format!("expected [d] or [C, H, W], got {other:?}"),
            )),
        }
    }

    /// Validates the spec and infers every layer's input/output shape and parameters.
    ///
    /// Errors name the layer index and field: a dense layer on an image (no flatten/pool),
    /// a conv or pool on a vector, a kernel or window larger than its (padded) input, sizes
    /// that overflow.
    pub fn analyse(&self) -> Result<Vec<LayerGeometry>> {
        let mut shape = self.input_feature_shape()?;
        if self.layers.is_empty() {
            return Err(top_err("layers", "a network needs at least one layer"));
        }
        let mut out = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let kind = layer.kind();
            let err = |field: &str, msg: String| layer_err(index, kind, field, msg);
            let mut fan_in = 0;
            let mut padding = [(0, 0); 2];
            let mut params = Vec::new();
            let output = match layer {
                LayerSpec::Dense(d) => {
                    let FeatureShape::Flat(din) = shape else {
                        return Err(err(
                            "type",
                            format!(
                                "dense needs a vector input but gets {:?}; add a flatten or \
                                 global_avg_pool layer before it",
                                shape.dims()
                            ),
                        ));
                    };
                    if din.checked_mul(d.width).is_none_or(|n| n > MAX_ELEMENTS) {
                        return Err(err(
                            "width",
                            format!("weight [{}, {din}] is too large", d.width),
                        ));
                    }
                    fan_in = din;
                    params.push((format!("{index}.weight"), vec![d.width, din]));
                    if d.b_std.is_some() {
                        params.push((format!("{index}.bias"), vec![d.width]));
                    }
                    FeatureShape::Flat(d.width)
                }
                LayerSpec::Conv2d(c) => {
                    let FeatureShape::Image { c: cin, h, w } = shape else {
                        return Err(err(
                            "type",
                            format!("conv2d needs a [C, H, W] input but gets {:?}", shape.dims()),
                        ));
                    };
                    let mut out_hw = [0usize; 2];
                    for (axis, (size, field)) in
                        [(h, "kernel"), (w, "kernel")].into_iter().enumerate()
                    {
                        let k = c.kernel[axis];
                        let s = c.stride[axis];
                        match c.padding {
                            Padding::Valid => {
                                if k > size {
                                    return Err(err(
                                        field,
                                        format!(
                                            "kernel {:?} is larger than its input {}x{} under \
                                             padding \"valid\"",
                                            c.kernel, h, w
                                        ),
                                    ));
                                }
                                out_hw[axis] = (size - k) / s + 1;
                            }
                            Padding::Same => {
                                let o = size.div_ceil(s);
                                let total = ((o - 1) * s + k).saturating_sub(size);
                                padding[axis] = (total / 2, total - total / 2);
                                out_hw[axis] = o;
                            }
                        }
                    }
                    fan_in = cin * c.kernel[0] * c.kernel[1];
                    let wn = c.channels.checked_mul(fan_in);
                    let an = c
                        .channels
                        .checked_mul(out_hw[0])
                        .and_then(|x| x.checked_mul(out_hw[1]));
                    if wn.is_none_or(|n| n > MAX_ELEMENTS) || an.is_none_or(|n| n > MAX_ELEMENTS) {
                        return Err(err("channels", "layer is too large".to_string()));
                    }
                    params.push((
                        format!("{index}.weight"),
                        vec![c.channels, cin, c.kernel[0], c.kernel[1]],
                    ));
                    if c.b_std.is_some() {
                        params.push((format!("{index}.bias"), vec![c.channels]));
                    }
                    FeatureShape::Image {
                        c: c.channels,
                        h: out_hw[0],
                        w: out_hw[1],
                    }
                }
                LayerSpec::Activation(_) => shape,
                LayerSpec::Flatten => FeatureShape::Flat(shape.numel()),
                LayerSpec::GlobalAvgPool => match shape {
                    FeatureShape::Image { c, .. } => FeatureShape::Flat(c),
                    FeatureShape::Flat(_) => {
                        return Err(err(
                            "type",
                            format!(
                                "global_avg_pool needs a [C, H, W] input but gets {:?}",
                                shape.dims()
                            ),
                        ));
                    }
                },
                LayerSpec::AvgPool2d { window, stride } => {
                    let FeatureShape::Image { c, h, w } = shape else {
                        return Err(err(
                            "type",
                            format!(
                                "avg_pool2d needs a [C, H, W] input but gets {:?}",
                                shape.dims()
                            ),
                        ));
                    };
                    if window[0] > h || window[1] > w {
                        return Err(err(
                            "window",
                            format!("window {window:?} is larger than its input {h}x{w}"),
                        ));
                    }
                    FeatureShape::Image {
                        c,
                        h: (h - window[0]) / stride[0] + 1,
                        w: (w - window[1]) / stride[1] + 1,
                    }
                }
            };
            out.push(LayerGeometry {
                index,
                input: shape,
                output,
                fan_in,
                padding,
                params,
            });
            shape = output;
        }
        if !matches!(shape, FeatureShape::Flat(_)) {
            return Err(top_err(
                "layers",
                format!(
                    "the network must end in a vector output [O], but ends in {:?}; add flatten \
                     or global_avg_pool (and a dense layer)",
                    shape.dims()
                ),
            ));
        }
        Ok(out)
    }

    /// Number of outputs O of the network.
    pub fn n_outputs(&self) -> Result<usize> {
        let geo = self.analyse()?;
        Ok(geo.last().map_or(0, |g| g.output.numel()))
    }

    /// Total number of scalar parameters.
    pub fn n_params(&self) -> Result<usize> {
        Ok(self
            .analyse()?
            .iter()
            .flat_map(|g| g.params.iter())
            .map(|(_, s)| s.iter().product::<usize>())
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetworkSpec> {
        NetworkSpec::from_json(s)
    }

    #[test]
    fn parses_the_documented_example() {
        let s = parse(
            r#"{"input_shape": [3, 8, 8], "parameterization": "ntk", "layers": [
            {"type": "conv2d", "channels": 16, "kernel": [3, 3], "padding": "same", "w_std": 1.4142, "b_std": 0.1},
            {"type": "relu"}, {"type": "global_avg_pool"},
            {"type": "dense", "width": 10, "w_std": 1.0, "b_std": 0.0}]}"#,
        )
        .unwrap();
        let g = s.analyse().unwrap();
        assert_eq!(g[0].output, FeatureShape::Image { c: 16, h: 8, w: 8 });
        assert_eq!(g[0].padding, [(1, 1), (1, 1)]);
        assert_eq!(g[0].fan_in, 27);
        assert_eq!(g[3].params[0], ("3.weight".to_string(), vec![10, 16]));
        assert_eq!(s.n_outputs().unwrap(), 10);
        assert_eq!(s.n_params().unwrap(), 16 * 27 + 16 + 160 + 10);
    }

    #[test]
    fn b_std_null_means_no_bias_and_absent_means_zero() {
        let s = parse(r#"{"input_shape":[4],"layers":[{"type":"dense","width":2,"b_std":null},{"type":"dense","width":1}]}"#).unwrap();
        let g = s.analyse().unwrap();
        assert_eq!(g[0].params.len(), 1);
        assert_eq!(g[1].params.len(), 2);
        assert_eq!(
            s.layers[1],
            LayerSpec::Dense(DenseSpec {
                width: 1,
                w_std: 1.0,
                b_std: Some(0.0)
            })
        );
    }

    #[test]
    fn same_padding_follows_xla_for_even_kernels_and_strides() {
        let s = parse(r#"{"input_shape":[1,7,8],"layers":[{"type":"conv2d","channels":1,"kernel":[2,4],"stride":[2,3]},{"type":"flatten"}]}"#).unwrap();
        let g = s.analyse().unwrap();
        // H: out ceil(7/2)=4, total (4-1)*2+2-7 = 1 -> (0, 1); W: out ceil(8/3)=3, total 2*3+4-8 = 2 -> (1, 1)
        assert_eq!(g[0].padding, [(0, 1), (1, 1)]);
        assert_eq!(g[0].output, FeatureShape::Image { c: 1, h: 4, w: 3 });
    }

    #[test]
    fn errors_name_layer_and_field() {
        let cases = [
            (
                r#"{"input_shape":[4],"layers":[{"type":"dense","width":2},{"type":"softmax"}]}"#,
                "layer 1",
                "type",
            ),
            (
                r#"{"input_shape":[4],"layers":[{"type":"dense"}]}"#,
                "layer 0",
                "width",
            ),
            (
                r#"{"input_shape":[4],"layers":[{"type":"dense","widht":3}]}"#,
                "layer 0",
                "widht",
            ),
            (
                r#"{"input_shape":[1,4,4],"layers":[{"type":"dense","width":3}]}"#,
                "layer 0",
                "flatten",
            ),
            (
                r#"{"input_shape":[1,4,4],"layers":[{"type":"conv2d","channels":2,"kernel":[5,5],"padding":"valid"},{"type":"flatten"}]}"#,
                "layer 0",
                "kernel",
            ),
            (
                r#"{"input_shape":[4],"layers":[{"type":"conv2d","channels":2,"kernel":[1,1]}]}"#,
                "layer 0",
                "conv2d",
            ),
            (
                r#"{"input_shape":[4],"layers":[{"type":"dense","width":0}]}"#,
                "layer 0",
                "width",
            ),
            (
                r#"{"input_shape":[4],"layers":[{"type":"dense","width":2,"w_std":"big"}]}"#,
                "layer 0",
                "w_std",
            ),
            (
                r#"{"input_shape":[1,4,4],"layers":[{"type":"relu"}]}"#,
                "layers",
                "vector output",
            ),
            (
                r#"{"input_shape":[],"layers":[{"type":"relu"}]}"#,
                "input_shape",
                "[d]",
            ),
            (
                r#"{"input_shape":[4],"layers":[]}"#,
                "layers",
                "at least one",
            ),
            (
                r#"{"input_shape":[4],"parameterization":"mup","layers":[{"type":"relu"}]}"#,
                "parameterization",
                "ntk",
            ),
        ];
        for (json, a, b) in cases {
            let msg = parse(json).unwrap_err().to_string();
            assert!(msg.contains(a) && msg.contains(b), "{json} -> {msg}");
        }
    }

    #[test]
    fn roundtrips_through_json() {
        let text = r#"{"input_shape":[2,6,6],"parameterization":"standard","layers":[
            {"type":"conv2d","channels":3,"kernel":[3,3],"padding":"valid","w_std":1.5,"b_std":null},
            {"type":"gelu"},{"type":"avg_pool2d","window":[2,2]},{"type":"flatten"},
            {"type":"dense","width":2,"w_std":1.0,"b_std":0.1}]}"#;
        let s = parse(text).unwrap();
        let again = NetworkSpec::from_value(&s.to_json()).unwrap();
        assert_eq!(s, again);
    }
}
