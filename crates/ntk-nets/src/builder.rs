//! Building specs in Rust code instead of JSON.

use crate::error::Result;
use crate::spec::{
    Activation, Conv2dSpec, DenseSpec, LayerSpec, NetworkSpec, Padding, Parameterization,
};

/// Builds a [`NetworkSpec`] layer by layer; [`SpecBuilder::build`] validates it.
#[derive(Debug, Clone)]
pub struct SpecBuilder {
    spec: NetworkSpec,
}

impl NetworkSpec {
    /// Starts a spec for samples of shape `input_shape` (`[d]` or `[C, H, W]`), NTK
    /// parameterization.
    pub fn builder(input_shape: &[usize]) -> SpecBuilder {
        SpecBuilder {
            spec: NetworkSpec {
                input_shape: input_shape.to_vec(),
                parameterization: Parameterization::Ntk,
                layers: Vec::new(),
            },
        }
    }
}

impl SpecBuilder {
    /// Uses the standard (PyTorch) parameterization.
    pub fn standard(mut self) -> Self {
        self.spec.parameterization = Parameterization::Standard;
        self
    }
    /// Appends any layer.
    pub fn layer(mut self, layer: LayerSpec) -> Self {
        self.spec.layers.push(layer);
        self
    }
    /// Appends a dense layer; `b_std: None` means no bias parameter.
    pub fn dense(self, width: usize, w_std: f64, b_std: Option<f64>) -> Self {
        self.layer(LayerSpec::Dense(DenseSpec {
            width,
            w_std,
            b_std,
        }))
    }
    /// Appends a conv2d layer.
    pub fn conv2d(
        self,
        channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        w_std: f64,
        b_std: Option<f64>,
    ) -> Self {
        self.layer(LayerSpec::Conv2d(Conv2dSpec {
            channels,
            kernel,
            stride,
            padding,
            w_std,
            b_std,
        }))
    }
    /// Appends an activation.
    pub fn activation(self, a: Activation) -> Self {
        self.layer(LayerSpec::Activation(a))
    }
    /// Appends relu.
    pub fn relu(self) -> Self {
        self.activation(Activation::Relu)
    }
    /// Appends flatten.
    pub fn flatten(self) -> Self {
        self.layer(LayerSpec::Flatten)
    }
    /// Appends global average pooling.
    pub fn global_avg_pool(self) -> Self {
        self.layer(LayerSpec::GlobalAvgPool)
    }
    /// Appends average pooling.
    pub fn avg_pool2d(self, window: [usize; 2], stride: [usize; 2]) -> Self {
        self.layer(LayerSpec::AvgPool2d { window, stride })
    }
    /// Validates and returns the spec.
    pub fn build(self) -> Result<NetworkSpec> {
        self.spec.analyse()?;
        Ok(self.spec)
    }
}
