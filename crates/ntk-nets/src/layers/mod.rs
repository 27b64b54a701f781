//! The layer modules of a [`crate::Network`]: one module per layer rule.

pub mod conv2d;
pub mod dense;
pub mod stateless;

pub use conv2d::Conv2d;
pub use dense::Dense;
pub use stateless::{Stateless, StatelessOp};

use burn::tensor::Tensor;

/// A batch of features between layers: vectors `[N, d]` or images `[N, C, H, W]`.
#[derive(Debug, Clone)]
pub enum Features {
    Flat(Tensor<2>),
    Image(Tensor<4>),
}

impl Features {
    /// The full shape, batch axis first.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Features::Flat(t) => t.dims().to_vec(),
            Features::Image(t) => t.dims().to_vec(),
        }
    }

    /// The vector batch; `None` for images.
    pub fn flat(self) -> Option<Tensor<2>> {
        match self {
            Features::Flat(t) => Some(t),
            Features::Image(_) => None,
        }
    }

    /// The image batch; `None` for vectors.
    pub fn image(self) -> Option<Tensor<4>> {
        match self {
            Features::Image(t) => Some(t),
            Features::Flat(_) => None,
        }
    }

    /// Flattens every sample into a row: `[N, numel]`.
    pub fn into_rows(self) -> Tensor<2> {
        match self {
            Features::Flat(t) => t,
            Features::Image(t) => {
                let [n, c, h, w] = t.dims();
                t.reshape([n, c * h * w])
            }
        }
    }
}

impl From<Tensor<2>> for Features {
    fn from(t: Tensor<2>) -> Self {
        Features::Flat(t)
    }
}

impl From<Tensor<4>> for Features {
    fn from(t: Tensor<4>) -> Self {
        Features::Image(t)
    }
}
