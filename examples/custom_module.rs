//! The empirical NTK of a hand-written burn module by Jacobian contraction, checked
//! against its closed form.
//!
//! `cargo run --example custom_module`
//!
//! The model is `f(x) = W2 tanh(W1 x)`; its NTK is
//! `Θ[o, o'] = δ_oo' ⟨h1, h2⟩ + ⟨x1, x2⟩ Σ_j W2[o, j] W2[o', j] (1 - h1_j²)(1 - h2_j²)`.

// The allocator of the `ntk` binary (the feature maps and kernels allocate many temporaries).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, TensorData};
use ntk::empirical::{KernelKind, jacobian, structured};
use ntk::nets::{BackendKind, Precision, to_host};

#[derive(Module, Debug)]
struct TwoLayer {
    w1: Param<Tensor<2>>,
    w2: Param<Tensor<2>>,
}

impl TwoLayer {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.w1.val().transpose())
            .tanh()
            .matmul(self.w2.val().transpose())
    }
}

fn values(n: usize, seed: u64) -> Vec<f64> {
    // a small deterministic sequence, enough for an example
    (0..n)
        .map(|i| ((i as f64 + 1.0) * 0.7548776662 + seed as f64 * 0.5698402909).fract() * 2.0 - 1.0)
        .collect()
}

fn main() {
    let device = BackendKind::Flex.device(Precision::F64).unwrap().autodiff();
    let t = |v: Vec<f64>, shape: [usize; 2]| {
        Tensor::<2>::from_data(TensorData::new(v, shape), (&device, DType::F64))
    };
    let (d, h, o, n) = (5, 16, 3, 4);
    let model = TwoLayer {
        w1: Param::from_tensor(t(values(h * d, 1), [h, d])),
        w2: Param::from_tensor(t(values(o * h, 2), [o, h])),
    };
    let x1 = t(values(n * d, 3), [n, d]);
    let x2 = t(values(n * d, 4), [n, d]);
    let forward = |m: &TwoLayer, x: Tensor<2>| m.forward(x);
    let acc = jacobian::kernel(
        &model,
        &forward,
        x1.clone(),
        Some(x2.clone()),
        KernelKind::Full,
    );
    let theta = structured::finish(acc, KernelKind::Full, o);

    // Closed form.
    let w1 = to_host(model.w1.val().inner());
    let w2 = to_host(model.w2.val().inner());
    let (xa, xb) = (to_host(x1.inner()), to_host(x2.inner()));
    let hidden = |x: &[f64]| -> Vec<f64> {
        (0..h)
            .map(|j| {
                (0..d)
                    .map(|i| w1.data[j * d + i] * x[i])
                    .sum::<f64>()
                    .tanh()
            })
            .collect()
    };
    let mut max_err = 0.0f64;
    for a in 0..n {
        for b in 0..n {
            let (p, q) = (&xa.data[a * d..][..d], &xb.data[b * d..][..d]);
            let (ha, hb) = (hidden(p), hidden(q));
            let xx: f64 = p.iter().zip(q).map(|(u, v)| u * v).sum();
            let hh: f64 = ha.iter().zip(&hb).map(|(u, v)| u * v).sum();
            for i in 0..o {
                for k in 0..o {
                    let mut v = if i == k { hh } else { 0.0 };
                    v += xx
                        * (0..h)
                            .map(|j| {
                                w2.data[i * h + j]
                                    * w2.data[k * h + j]
                                    * (1.0 - ha[j] * ha[j])
                                    * (1.0 - hb[j] * hb[j])
                            })
                            .sum::<f64>();
                    let got = theta.data[((a * n + b) * o + i) * o + k];
                    max_err = max_err.max((got - v).abs());
                }
            }
        }
    }
    println!(
        "Jacobian-contraction NTK of a hand-written burn module: shape {:?}",
        theta.shape
    );
    println!("Theta[0, 0] = {:?}", &theta.data[..o * o]);
    println!("max |Jacobian - closed form| = {max_err:.3e}");
    assert!(
        max_err < 1e-12,
        "the Jacobian method disagrees with the closed form"
    );
}
