//! The dense-layer rule.

use super::{Accumulator, seed_gram};
use crate::kernel::KernelKind;
use burn::tensor::Tensor;
use ntk_nets::layers::Dense;

/// Contribution of a dense layer `y = s·x Wᵀ + b_s·b` to the NTK:
///
/// `Θ_l[n1, n2, k, k'] = (s² ⟨x1_n1, x2_n2⟩ + b_s²) ⟨g1_{n1,k}, g2_{n2,k'}⟩`
///
/// (the bias term only when the layer has a bias parameter).
///
/// # Shapes
/// - `x1: [N1, in]`, `x2: [N2, in]`: the layer's inputs
/// - `g1: [N1·K, out]`, `g2: [N2·K, out]`: cotangents of its output, row `n·K + k`
pub fn contribution(
    layer: &Dense,
    x1: Tensor<2>,
    x2: Tensor<2>,
    g1: Tensor<2>,
    g2: Tensor<2>,
    k: usize,
    kind: KernelKind,
) -> Accumulator {
    let [n1, _] = x1.dims();
    let [n2, _] = x2.dims();
    let [_, out] = g1.dims();
    let s2 = layer.weight_scale * layer.weight_scale;
    let mut coeff = x1.matmul(x2.transpose()).mul_scalar(s2);
    if layer.bias.is_some() {
        coeff = coeff.add_scalar(layer.bias_scale * layer.bias_scale);
    }
    seed_gram(kind, g1.reshape([n1, k, out]), g2.reshape([n2, k, out])).times_pairs(coeff)
}
