"""Predictions of infinitely wide (or linearised) networks, after neural-tangents'
``predict`` module: closed-form gradient descent on MSE and exact GP inference.

    predict_fn = ntk.predict.gradient_descent_mse(k_train_train, y_train, learning_rate=1.0)
    fx_train_t, fx_test_t = predict_fn(t=100.0, k_test_train=k_test_train)
    mean, cov = ntk.predict.gp_inference(k_train_train, y_train)(k_test_train, k_test_test)
"""

import numpy as np

from ._ntk import gp_inference as _gp_inference
from ._ntk import gradient_descent_mse as _gradient_descent_mse

__all__ = ["gradient_descent_mse", "gp_inference"]


def _f64(x):
    return None if x is None else np.ascontiguousarray(np.asarray(x, dtype=np.float64))


def gradient_descent_mse(k_train_train, y_train, learning_rate=1.0, diag_reg=0.0):
    """Gradient flow on ``L = ‖f − y‖² / (2 · y.size)`` in closed form (one
    eigendecomposition of ``Θ + rI``; ``r = diag_reg`` × the mean diagonal, as
    neural-tangents' default relative scale):
    ``f_t = y + exp(−η t Θ / y.size) (f_0 − y)``. Returns ``predict_fn(t=None,
    fx_train_0=0., fx_test_0=None, k_test_train=None)``: ``t`` a number or an array of
    times (``None`` or ``inf``: converged), giving ``fx_train_t`` (``[n, c]``, with a leading
    time axis for an array of times), and with ``k_test_train`` ``(fx_train_t, fx_test_t)``."""
    k = _f64(k_train_train)
    y = _f64(y_train)
    vector = y.ndim == 1
    y2 = y.reshape(len(y), -1)

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        times = np.atleast_1d(np.inf if t is None else np.asarray(t, dtype=np.float64))
        f0 = None
        if not np.isscalar(fx_train_0) or fx_train_0 != 0.0:
            f0 = np.broadcast_to(np.asarray(fx_train_0, dtype=np.float64), y.shape).reshape(y2.shape)
            f0 = np.ascontiguousarray(f0)
        kt = _f64(k_test_train)
        ft = None
        if kt is not None and fx_test_0 is not None:
            ft = _f64(np.broadcast_to(np.asarray(fx_test_0, dtype=np.float64), (kt.shape[0], y2.shape[1])))
        train, test = _gradient_descent_mse(
            k, y2, [float(v) for v in times], learning_rate=float(learning_rate),
            diag_reg=float(diag_reg), fx_train_0=f0, k_test_train=kt, fx_test_0=ft,
        )

        def shape(a):
            if vector:
                a = a[..., 0]
            return a if np.ndim(t) > 0 else a[0]

        return shape(train) if test is None else (shape(train), shape(test))

    return predict_fn


def gp_inference(k_train_train, y_train, diag_reg=0.0):
    """Exact Gaussian-process posterior with the kernel ``k`` (NNGP or NTK; ``r =
    diag_reg`` × the mean diagonal). Returns ``predict_fn(k_test_train,
    k_test_test=None)``: the mean ``K*(K + rI)⁻¹y``, and with ``k_test_test`` also the
    covariance ``K** − K*(K + rI)⁻¹K*ᵀ``, as ``(mean, covariance)``."""
    k = _f64(k_train_train)
    y = _f64(y_train)
    vector = y.ndim == 1
    y2 = np.ascontiguousarray(y.reshape(len(y), -1))

    def predict_fn(k_test_train, k_test_test=None):
        mean, cov = _gp_inference(k, y2, _f64(k_test_train), _f64(k_test_test), diag_reg=float(diag_reg))
        if vector:
            mean = mean[:, 0]
        return mean if cov is None else (mean, cov)

    return predict_fn
