import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

class Network:
    """A network as the engine sees it (built afresh in each call's precision)."""

    input_shape: list[int]
    n_outputs: int
    param_names: list[str]
    n_params: int

PathLike = Union[str, os.PathLike]
Model = Union[PathLike, dict, Network, Any]  # Any: a torch.nn.Module
Progress = Union[bool, Callable[[int, int], Any], None]

def load(path: Union[PathLike, dict], weights: Optional[PathLike] = ..., seed: int = ...) -> Network: ...
def from_torch(module: Any, input_shape: Sequence[int], *, via: str = ...) -> Network: ...
def forward(model: Model, x: np.ndarray, dtype: str = ...) -> np.ndarray: ...
def empirical_ntk(
    model: Model,
    x1: np.ndarray,
    x2: Optional[np.ndarray] = ...,
    *,
    trace_axes: Sequence[int] = ...,
    diagonal_axes: Sequence[int] = ...,
    implementation: Union[str, int] = ...,
    dtype: str = ...,
    params: Optional[str] = ...,
    frozen: Optional[str] = ...,
    max_memory: Optional[int] = ...,
    progress: Progress = ...,
) -> np.ndarray: ...
def per_layer_ntk(
    model: Model,
    x1: np.ndarray,
    x2: Optional[np.ndarray] = ...,
    *,
    trace_axes: Sequence[int] = ...,
    diagonal_axes: Sequence[int] = ...,
    dtype: str = ...,
    params: Optional[str] = ...,
    frozen: Optional[str] = ...,
    max_memory: Optional[int] = ...,
    progress: Progress = ...,
) -> Dict[str, np.ndarray]: ...
def sum_of_logits_ntk(model: Model, x1: np.ndarray, x2: Optional[np.ndarray] = ..., **kwargs: Any) -> np.ndarray: ...
def empirical_nngp(model: Model, x1: np.ndarray, x2: Optional[np.ndarray] = ..., *, dtype: str = ..., **kwargs: Any) -> np.ndarray: ...
def empirical_kernel(
    model: Model, x1: np.ndarray, x2: Optional[np.ndarray] = ..., get: Union[str, Tuple[str, ...]] = ..., **kwargs: Any
) -> Dict[str, np.ndarray]: ...
def score(
    models: Sequence[Model],
    x: np.ndarray,
    y: Optional[np.ndarray] = ...,
    *,
    seeds: int = ...,
    dtype: str = ...,
    names: Optional[Sequence[str]] = ...,
    params: Optional[str] = ...,
    frozen: Optional[str] = ...,
    metrics: Optional[Union[str, Sequence[str]]] = ...,
    max_memory: Optional[int] = ...,
) -> list[dict[str, Any]]: ...
def infinite_kernel(
    model: Union[PathLike, dict, Network],
    x1: np.ndarray,
    x2: Optional[np.ndarray] = ...,
    get: Union[str, Sequence[str]] = ...,
) -> Union[np.ndarray, Dict[str, np.ndarray]]: ...
def features(
    model: Union[PathLike, dict, Network],
    x: np.ndarray,
    *,
    method: str = ...,
    dim: int = ...,
    seed: int = ...,
    degree: Optional[int] = ...,
    max_memory: Optional[int] = ...,
    get: Union[str, Sequence[str]] = ...,
) -> Union[np.ndarray, Dict[str, np.ndarray]]: ...
