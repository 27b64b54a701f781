//! A network built from a [`NetworkSpec`]: a burn [`Module`] of [`Layer`]s.

use crate::array::HostArray;
use crate::backend::Precision;
use crate::error::{NetsError, Result};
use crate::layers::{Conv2d, Dense, Features, Stateless, StatelessOp};
use crate::spec::{FeatureShape, LayerGeometry, LayerSpec, NetworkSpec, Parameterization};
use crate::weights;
use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;
use std::path::Path;

/// One layer of a [`Network`].
#[derive(Module, Debug)]
pub enum Layer {
    Dense(Dense),
    Conv2d(Conv2d),
    Stateless(Stateless),
}

/// A sequential network (the shape of PyTorch's `nn.Sequential`), built from a spec.
///
/// Parameters live on one burn device in one float dtype. Create it with
/// [`NetworkConfig::init`] (random, from a seed), [`Network::from_params`] or
/// [`Network::load`] (PyTorch-layout safetensors).
#[derive(Module, Debug)]
pub struct Network {
    pub layers: Vec<Layer>,
    #[module(skip)]
    pub spec: NetworkSpec,
    #[module(skip)]
    pub geometry: Vec<LayerGeometry>,
    #[module(skip)]
    pub precision: Precision,
}

/// Everything needed to create a [`Network`]: the spec, a seed and a precision.
///
/// The `Config` + `init(&device)` idiom of burn:
/// ```no_run
/// use ntk_nets::{NetworkConfig, NetworkSpec, Precision, BackendKind};
/// let spec = NetworkSpec::builder(&[16]).dense(64, 1.414, Some(0.1)).relu().dense(3, 1.0, None).build().unwrap();
/// let device = BackendKind::Flex.device(Precision::F64).unwrap();
/// let net = NetworkConfig::new(spec).with_seed(7).init(&device).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub spec: NetworkSpec,
    pub seed: u64,
    pub precision: Precision,
}

impl NetworkConfig {
    /// Seed 0, f64.
    pub fn new(spec: NetworkSpec) -> Self {
        NetworkConfig {
            spec,
            seed: 0,
            precision: Precision::F64,
        }
    }
    /// Sets the seed of the random initialisation.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets the float precision.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// Creates the network with random parameters on `device`.
    pub fn init(&self, device: &Device) -> Result<Network> {
        let params = random_params(&self.spec, self.seed)?;
        Network::from_params(self.spec.clone(), &params, device, self.precision)
    }
}

/// Peak bytes per parameter while a network is built: the host f64 values, the copy made
/// for each tensor's upload, and the device tensor (f64 at most).
const PARAMETER_BYTES: u128 = 24;

/// Random parameters for a spec, in PyTorch layout: per parametrised layer the weight then
/// the bias, from a ChaCha8 stream seeded with `seed`. NTK parameterization: raw standard
/// normals; standard: `weight ~ N(0, w_std²/fan_in)`, `bias ~ N(0, b_std²)`.
pub fn random_params(spec: &NetworkSpec, seed: u64) -> Result<BTreeMap<String, HostArray>> {
    let geometry = spec.analyse()?;
    // Host f64 values, a copy per tensor on upload, then the device tensors (at most f64).
    crate::memory::check_fits(
        &format!("the {} parameters of this network", spec.n_params()?),
        spec.n_params()? as u128 * PARAMETER_BYTES,
    )?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = BTreeMap::new();
    for (g, layer) in geometry.iter().zip(&spec.layers) {
        let (w_std, b_std) = match layer {
            LayerSpec::Dense(d) => (d.w_std, d.b_std.unwrap_or(0.0)),
            LayerSpec::Conv2d(c) => (c.w_std, c.b_std.unwrap_or(0.0)),
            _ => continue,
        };
        for (name, shape) in &g.params {
            let scale = match (spec.parameterization, name.ends_with(".weight")) {
                (Parameterization::Ntk, _) => 1.0,
                (Parameterization::Standard, true) => w_std / (g.fan_in as f64).sqrt(),
                (Parameterization::Standard, false) => b_std,
            };
            let n: usize = shape.iter().product();
            let data: Vec<f64> = (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    scale * z
                })
                .collect();
            out.insert(name.clone(), HostArray::new(shape.clone(), data));
        }
    }
    Ok(out)
}

fn tensor_from<const D: usize>(a: &HostArray, device: &Device, dtype: DType) -> Tensor<D> {
    let data = TensorData::new(a.data.clone(), a.shape.clone());
    Tensor::from_data(data, (device, dtype))
}

/// Copies a tensor to the host as f64.
pub fn to_host<const D: usize>(t: Tensor<D>) -> HostArray {
    let shape = t.dims().to_vec();
    let data = t.into_data().convert::<f64>();
    let values = data
        .try_into_vec::<f64>()
        .expect("converted tensor data is f64");
    HostArray::new(shape, values)
}

impl Network {
    /// Builds a network from named PyTorch-layout parameters (checked against the spec).
    pub fn from_params(
        spec: NetworkSpec,
        params: &BTreeMap<String, HostArray>,
        device: &Device,
        precision: Precision,
    ) -> Result<Network> {
        let geometry = spec.analyse()?;
        weights::check_against(Path::new("<parameters>"), params, &geometry)?;
        Ok(Self::build(spec, geometry, params, device, precision))
    }

    /// Reads the spec's parameters from a PyTorch-layout safetensors file (F32 or F64).
    pub fn load(
        spec: NetworkSpec,
        path: impl AsRef<Path>,
        device: &Device,
        precision: Precision,
    ) -> Result<Network> {
        let path = path.as_ref();
        let geometry = spec.analyse()?;
        crate::memory::check_fits(
            &format!("the {} parameters of this network", spec.n_params()?),
            spec.n_params()? as u128 * PARAMETER_BYTES,
        )?;
        let params = weights::read_safetensors(path)?;
        weights::check_against(path, &params, &geometry)?;
        Ok(Self::build(spec, geometry, &params, device, precision))
    }

    fn build(
        spec: NetworkSpec,
        geometry: Vec<LayerGeometry>,
        params: &BTreeMap<String, HostArray>,
        device: &Device,
        precision: Precision,
    ) -> Network {
        let dtype = precision.dtype();
        let ntk = spec.parameterization == Parameterization::Ntk;
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (g, layer) in geometry.iter().zip(&spec.layers) {
            let i = g.index;
            let weight_scale = |w_std: f64| {
                if ntk {
                    w_std / (g.fan_in as f64).sqrt()
                } else {
                    1.0
                }
            };
            let bias = |b_std: Option<f64>| {
                b_std.map(|_| {
                    Param::from_tensor(tensor_from::<1>(
                        &params[&format!("{i}.bias")],
                        device,
                        dtype,
                    ))
                })
            };
            let bias_scale = |b_std: Option<f64>| if ntk { b_std.unwrap_or(0.0) } else { 1.0 };
            layers.push(match layer {
                LayerSpec::Dense(d) => Layer::Dense(Dense {
                    weight: Param::from_tensor(tensor_from(
                        &params[&format!("{i}.weight")],
                        device,
                        dtype,
                    )),
                    bias: bias(d.b_std),
                    weight_scale: weight_scale(d.w_std),
                    bias_scale: bias_scale(d.b_std),
                }),
                LayerSpec::Conv2d(c) => Layer::Conv2d(Conv2d {
                    weight: Param::from_tensor(tensor_from(
                        &params[&format!("{i}.weight")],
                        device,
                        dtype,
                    )),
                    bias: bias(c.b_std),
                    stride: c.stride,
                    padding: g.padding,
                    weight_scale: weight_scale(c.w_std),
                    bias_scale: bias_scale(c.b_std),
                }),
                LayerSpec::Activation(a) => Layer::Stateless(Stateless {
                    op: StatelessOp::Activation(*a),
                }),
                LayerSpec::Flatten => Layer::Stateless(Stateless {
                    op: StatelessOp::Flatten,
                }),
                LayerSpec::GlobalAvgPool => Layer::Stateless(Stateless {
                    op: StatelessOp::GlobalAvgPool,
                }),
                LayerSpec::AvgPool2d { window, stride } => Layer::Stateless(Stateless {
                    op: StatelessOp::AvgPool2d {
                        window: *window,
                        stride: *stride,
                    },
                }),
            });
        }
        Network {
            layers,
            spec,
            geometry,
            precision,
        }
    }

    /// The parameters as named PyTorch-layout host arrays.
    pub fn params(&self) -> BTreeMap<String, HostArray> {
        let mut out = BTreeMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (w, b) = match layer {
                Layer::Dense(d) => (
                    to_host(d.weight.val()),
                    d.bias.as_ref().map(|b| to_host(b.val())),
                ),
                Layer::Conv2d(c) => (
                    to_host(c.weight.val()),
                    c.bias.as_ref().map(|b| to_host(b.val())),
                ),
                Layer::Stateless(_) => continue,
            };
            out.insert(format!("{i}.weight"), w);
            if let Some(b) = b {
                out.insert(format!("{i}.bias"), b);
            }
        }
        out
    }

    /// Saves the parameters as PyTorch-layout safetensors (F64, or F32 with `f32_out`).
    pub fn save(&self, path: impl AsRef<Path>, f32_out: bool) -> Result<()> {
        weights::write_safetensors(path, &self.params(), f32_out)
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.devices().into_iter().next().unwrap_or_default()
    }

    /// The float dtype of the parameters.
    pub fn dtype(&self) -> DType {
        self.precision.dtype()
    }

    /// Number of outputs O.
    pub fn n_outputs(&self) -> usize {
        self.geometry.last().map_or(0, |g| g.output.numel())
    }

    /// Shape of one input sample.
    pub fn input_shape(&self) -> &[usize] {
        &self.spec.input_shape
    }

    /// Uploads a host batch `[N, *input_shape]` as network input, checking its shape and
    /// that it is finite.
    pub fn input(&self, x: &HostArray, device: &Device) -> Result<Features> {
        self.check_input(x)?;
        Ok(match self.geometry[0].input {
            FeatureShape::Flat(_) => Features::Flat(tensor_from(x, device, self.dtype())),
            FeatureShape::Image { .. } => Features::Image(tensor_from(x, device, self.dtype())),
        })
    }

    /// Checks that a host batch fits the network: shape `[N, input_shape...]`, all finite.
    pub fn check_input(&self, x: &HostArray) -> Result<()> {
        if x.shape.len() != self.spec.input_shape.len() + 1
            || x.shape[1..] != self.spec.input_shape[..]
        {
            return Err(NetsError::InputShape {
                got: x.shape.clone(),
                expected: self.spec.input_shape.clone(),
            });
        }
        x.check_finite("input")
    }

    /// Applies layer `i` alone.
    pub fn forward_layer(&self, i: usize, x: Features) -> Features {
        match (&self.layers[i], x) {
            (Layer::Dense(d), Features::Flat(t)) => Features::Flat(d.forward(t)),
            (Layer::Conv2d(c), Features::Image(t)) => Features::Image(c.forward(t)),
            (Layer::Stateless(s), x) => s.forward(x),
            (_, x) => panic!("layer {i} cannot take features of shape {:?}", x.dims()),
        }
    }

    /// The network outputs `[N, O]` for an input batch built by [`Network::input`].
    pub fn forward(&self, x: Features) -> Tensor<2> {
        let mut h = x;
        for i in 0..self.layers.len() {
            h = self.forward_layer(i, h);
        }
        h.flat().expect("a validated spec ends in a vector")
    }

    /// Forward pass keeping every layer's input: returns `(inputs, output)` with
    /// `inputs[i]` the input of layer `i`.
    pub fn forward_trace(&self, x: Features) -> (Vec<Features>, Tensor<2>) {
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut h = x;
        for i in 0..self.layers.len() {
            inputs.push(h.clone());
            h = self.forward_layer(i, h);
        }
        (inputs, h.flat().expect("a validated spec ends in a vector"))
    }

    /// Convenience: outputs `[N, O]` on the host for a host batch.
    pub fn forward_host(&self, x: &HostArray) -> Result<HostArray> {
        let device = self.device();
        let input = self.input(x, &device)?;
        Ok(to_host(self.forward(input)))
    }
}
