//! The dense-layer rule.

use super::{Coeff, KernelSum};
use burn::tensor::Tensor;
use ntk_nets::layers::Dense;

/// Adds the contribution of a dense layer `y = s·x Wᵀ + b_s·b` to the NTK:
///
/// `Θ_l[n1, n2, k, k'] = (s² ⟨x1_n1, x2_n2⟩ + b_s²) ⟨g1_{n1,k}, g2_{n2,k'}⟩`
///
/// (the bias term only when the layer has a bias parameter). `at_seeds`: the cotangents
/// are the one-hot output seeds (the last layer), whose Gram is the identity.
///
/// # Shapes
/// - `x1: [N1, in]`, `x2: [N2, in]` (`None`: `x2 = x1`): the layer's inputs
/// - `g1: [N1·K, out]`, `g2: [N2·K, out]` (`None`: `g2 = g1`): cotangents of its output,
///   row `n·K + k`
/// The pair coefficient `s² ⟨x1_n1, x2_n2⟩ + b_s²` of a dense layer, `[N1, N2]`.
fn pair_coefficient(layer: &Dense, x1: Tensor<2>, x2: Option<Tensor<2>>) -> Tensor<2> {
    let s2 = layer.weight_scale * layer.weight_scale;
    let x2 = x2.unwrap_or_else(|| x1.clone());
    let coeff = x1.matmul(x2.transpose()).mul_scalar(s2);
    if layer.bias.is_some() {
        coeff.add_scalar(layer.bias_scale * layer.bias_scale)
    } else {
        coeff
    }
}

/// The same contribution when the cotangents factor as `g[n, k, :] = d[n, :] ⊙ v[k, :]`
/// (the layer is followed only by activations and the readout), on the host
/// ([`super::host_gram::FullGram::add_factored_gram`]).
///
/// # Shapes
/// - `x1: [N1, in]`, `x2: [N2, in]` (`None`: `x2 = x1`)
/// - `d1: [N1, out]`, `d2: [N2, out]` (`None`: `d2 = d1`), `v: [K, out]`
pub fn accumulate_factored(
    sum: &mut KernelSum,
    layer: &Dense,
    x1: Tensor<2>,
    x2: Option<Tensor<2>>,
    d1: Tensor<2>,
    d2: Option<Tensor<2>>,
    v: Tensor<2>,
) {
    let coeff = pair_coefficient(layer, x1, x2);
    sum.add_factored_gram(d1, d2, v, coeff);
}

#[allow(clippy::too_many_arguments)]
pub fn accumulate(
    sum: &mut KernelSum,
    layer: &Dense,
    x1: Tensor<2>,
    x2: Option<Tensor<2>>,
    g1: Tensor<2>,
    g2: Option<Tensor<2>>,
    k: usize,
    at_seeds: bool,
) {
    let [n1, _] = x1.dims();
    let [_, out] = g1.dims();
    let coeff = pair_coefficient(layer, x1, x2);
    if at_seeds {
        sum.add_seed_gram(g1, g2, k, Coeff::Pairs(coeff));
        return;
    }
    let split = |g: Tensor<2>| {
        let rows = g.dims()[0];
        g.reshape([rows / k, k, out])
    };
    debug_assert_eq!(g1.dims()[0], n1 * k);
    sum.add_gram(split(g1), g2.map(split), Coeff::Pairs(coeff));
}
