"""Kernel analysis (as ``ntk analyze``): spectrum, kernel-target alignment, kernel distance.

    s = ntk.analysis.spectrum(k)            # dict: condition_number, effective ranks, ...
    raw, centred = ntk.analysis.alignment(k, labels)
    d = ntk.analysis.kernel_distance(k_init, k_trained)
"""

import numpy as np

from ._ntk import alignment as _alignment
from ._ntk import kernel_distance as _kernel_distance
from ._ntk import spectrum as _spectrum

__all__ = ["spectrum", "alignment", "kernel_distance"]


def _square(name, k):
    k = np.ascontiguousarray(np.asarray(k, dtype=np.float64))
    if k.ndim == 4 and k.shape[0] == k.shape[1] and k.shape[2] == k.shape[3]:
        # A full kernel [n, n, O, O] as the [n·O, n·O] matrix it is.
        n, o = k.shape[0], k.shape[2]
        k = np.ascontiguousarray(k.transpose(0, 2, 1, 3).reshape(n * o, n * o))
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square kernel [n, n] (or [n, n, O, O]), got shape {k.shape}")
    return k


def _targets(y, n):
    """Class ids (``[n]`` of whole numbers ≥ 0 naming at most 256 classes, fewer than n:
    one-hot, the rule of every ntk command) or real targets ``[n]`` / ``[n, c]``."""
    y = np.asarray(y)
    if y.ndim == 1 and len(y) > 0:
        yf = y.astype(np.float64)
        if np.all(np.isfinite(yf)) and np.all(yf == np.round(yf)) and yf.min() >= 0:
            classes = int(yf.max()) + 1
            if classes <= 256 and classes < n:
                onehot = np.zeros((len(yf), classes))
                onehot[np.arange(len(yf)), yf.astype(np.int64)] = 1.0
                return onehot
    y = np.asarray(y, dtype=np.float64)
    return y.reshape(len(y), -1)


def spectrum(k):
    """Spectral statistics of a symmetric kernel: ``n``, ``trace``, ``lambda_max``,
    ``lambda_min``, ``condition_number`` (inf when λmin ≤ 0), ``effective_rank_participation``
    ((Σλ)²/Σλ²), ``effective_rank_entropy``, ``max_learning_rate`` (2n/λmax for
    L = 1/(2n) Σ‖f − y‖²) and ``eigenvalues`` (descending)."""
    return _spectrum(_square("k", k))


def alignment(k, y):
    """Kernel-target alignment ``(raw, centred)`` of ``k`` ``[n, n]`` with ``y``: class ids
    ``[n]`` (whole numbers ≥ 0, fewer distinct than n: one-hot, as in every ntk command) or
    targets ``[n]`` / ``[n, c]``."""
    k = _square("k", k)
    return _alignment(k, np.ascontiguousarray(_targets(y, k.shape[0])))


def kernel_distance(k1, k2):
    """``1 − ⟨K1, K2⟩_F / (‖K1‖_F ‖K2‖_F)`` (Fort et al. 2020)."""
    a = np.ascontiguousarray(np.asarray(k1, dtype=np.float64))
    b = np.ascontiguousarray(np.asarray(k2, dtype=np.float64))
    return _kernel_distance(a, b)
