#!/usr/bin/env python3
"""Writes the malformed-input corpus used by tests/malformed.rs.

  python3 tests/malformed/make_corpus.py      (numpy only; run from the repository root)

Layout (every file under spec/, weights/, npy/ must make `ntk forward` fail cleanly:
exit code 1, a message starting with "error:", no panic):
  base_spec.json, base_x.npy, base_weights.safetensors   valid inputs the bad ones replace
  spec/*.json            bad specs        (run with base_x.npy)
  weights/*.safetensors  bad weights      (run with base_spec.json and base_x.npy)
  npy/*.npy              bad inputs       (run with base_spec.json)
"""
import json, os, struct
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
os.chdir(HERE)
for d in ("spec", "weights", "npy"):
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))

BASE = {"input_shape": [4], "parameterization": "ntk",
        "layers": [{"type": "dense", "width": 3, "w_std": 1.4, "b_std": 0.1},
                   {"type": "relu"}, {"type": "dense", "width": 2}]}
json.dump(BASE, open("base_spec.json", "w"), indent=1)
rng = np.random.default_rng(0)
np.save("base_x.npy", rng.standard_normal((5, 4)))


def st_bytes(tensors, header_extra=None, raw_header=None):
    """safetensors writer (little endian), optionally with a hand-made header."""
    header, blobs, off = {}, [], 0
    for k, (dtype, arr) in tensors.items():
        b = np.ascontiguousarray(arr).tobytes()
        header[k] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if header_extra:
        header.update(header_extra)
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


good_w = {"0.weight": ("F64", rng.standard_normal((3, 4))), "0.bias": ("F64", rng.standard_normal(3)),
          "2.weight": ("F64", rng.standard_normal((2, 3))), "2.bias": ("F64", rng.standard_normal(2))}
open("base_weights.safetensors", "wb").write(st_bytes(good_w))


def spec(name, obj):
    with open(f"spec/{name}.json", "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def L(*layers, shape=(4,), p="ntk"):
    return {"input_shape": list(shape), "parameterization": p, "layers": list(layers)}


D = lambda w, **k: {"type": "dense", "width": w, **k}
C = lambda ch, k=3, **kw: {"type": "conv2d", "channels": ch, "kernel": [k, k], **kw}
spec("truncated", json.dumps(BASE)[:40])
spec("empty", "")
spec("not_an_object", "[1, 2, 3]")
spec("unknown_type", L(D(3), {"type": "softmax"}, D(2)))
spec("missing_width", L({"type": "dense"}))
spec("zero_width", L(D(0)))
spec("negative_width", L(D(-3)))
spec("string_width", L(D("3")))
spec("typo_field", L({"type": "dense", "widht": 3}))
spec("dense_on_image", L(D(3), shape=(1, 4, 4)))
spec("conv_on_vector", L(C(2), {"type": "flatten"}, D(2)))
spec("kernel_too_large_valid", L(C(2, 5, padding="valid"), {"type": "flatten"}, D(2), shape=(1, 4, 4)))
spec("pool_window_too_large", L({"type": "avg_pool2d", "window": [5, 5]}, {"type": "flatten"}, D(2), shape=(1, 4, 4)))
spec("bad_padding", L(C(2, padding="full"), {"type": "flatten"}, D(2), shape=(1, 4, 4)))
spec("image_output", L(C(2), shape=(1, 4, 4)))
spec("no_layers", L())
spec("missing_layers", {"input_shape": [4]})
spec("missing_input_shape", {"layers": [D(2)]})
spec("input_shape_2d", L(D(2), shape=(4, 4)))
spec("input_shape_zero", L(D(2), shape=(0,)))
spec("bad_parameterization", L(D(2), p="mup"))
spec("w_std_string", L(D(2, w_std="wide")))
spec("huge_width", L(D(10**15)))
spec("kernel_one_number", L({"type": "conv2d", "channels": 2, "kernel": 3}, {"type": "flatten"}, D(2), shape=(1, 4, 4)))
spec("layer_not_object", L("dense"))
spec("unknown_top_field", {**BASE, "optimizer": "adam"})
spec("gap_on_vector", L({"type": "global_avg_pool"}, D(2)))
spec("non_utf8", "")
with open("spec/non_utf8.json", "wb") as f:
    f.write(b'{"input_shape": [4], "layers": [{"type": "\xff\xfe"}]}')
spec("many_layers", L(*([{"type": "identity"}] * 20_000), D(2)))

w = dict(good_w)
open("weights/truncated.safetensors", "wb").write(st_bytes(good_w)[:-7])
open("weights/empty.safetensors", "wb").write(b"")
open("weights/header_only_length.safetensors", "wb").write(struct.pack("<Q", 10**12))
open("weights/not_json_header.safetensors", "wb").write(st_bytes({}, raw_header=b"{not json"))
open("weights/missing_key.safetensors", "wb").write(st_bytes({k: v for k, v in w.items() if k != "2.bias"}))
open("weights/extra_key.safetensors", "wb").write(st_bytes({**w, "5.weight": ("F64", np.zeros((2, 2)))}))
open("weights/wrong_shape.safetensors", "wb").write(st_bytes({**w, "0.weight": ("F64", np.zeros((4, 3)))}))
open("weights/int_dtype.safetensors", "wb").write(st_bytes({**w, "0.bias": ("I32", np.zeros(3, np.int32))}))
open("weights/nan_value.safetensors", "wb").write(st_bytes({**w, "0.bias": ("F64", np.array([0.0, np.nan, 1.0]))}))
open("weights/inf_value.safetensors", "wb").write(st_bytes({**w, "2.weight": ("F64", np.full((2, 3), np.inf))}))
hdr = {k: {"dtype": "F64", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 8 << 40]} for k in ["0.weight"]}
open("weights/declared_terabytes.safetensors", "wb").write(st_bytes({}, raw_header=json.dumps(hdr).encode()))
open("weights/garbage.safetensors", "wb").write(bytes(rng.integers(0, 256, 300, dtype=np.uint8)))

np.save("npy/wrong_feature_dim.npy", rng.standard_normal((5, 3)))
np.save("npy/wrong_rank.npy", rng.standard_normal((5, 2, 2)))
np.save("npy/int_dtype.npy", np.arange(20, dtype=np.int64).reshape(5, 4))
np.save("npy/bool_dtype.npy", np.ones((5, 4), dtype=bool))
np.save("npy/complex_dtype.npy", np.ones((5, 4), dtype=np.complex128))
np.save("npy/float16.npy", np.ones((5, 4), dtype=np.float16))
x = rng.standard_normal((5, 4)); x[2, 1] = np.nan
np.save("npy/nan.npy", x)
x = rng.standard_normal((5, 4)).astype(np.float32); x[4, 3] = np.inf
np.save("npy/inf_f32.npy", x)
np.save("npy/zero_samples.npy", np.zeros((0, 4)))
b = open("base_x.npy", "rb").read()
open("npy/truncated.npy", "wb").write(b[:-5])
open("npy/header_only.npy", "wb").write(b[:30])
open("npy/not_npy.npy", "wb").write(b"hello, world\n")
open("npy/declared_terabytes.npy", "wb").write(b.replace(b"(5, 4)", b"(5000000000000, 4)"))
np.save("npy/fortran_order.npy", np.asfortranarray(rng.standard_normal((5, 4))))
np.save("npy/scalar.npy", np.float64(3.0))
print(sum(len(os.listdir(d)) for d in ("spec", "weights", "npy")), "malformed files")
