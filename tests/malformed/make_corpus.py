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

# ---- Systematic variants (issue 6: >= 200 files) -------------------------------------
# Specs: every field of every layer type with values of the wrong type or out of range.
BAD_VALUES = {"string": "3", "null": None, "array": [3], "object": {"a": 1}, "negative": -2,
              "zero": 0, "float": 2.5, "huge": 10**30, "bool": True}
LAYERS = {
    "dense": ({"type": "dense", "width": 3}, ["width", "w_std", "b_std"], (4,), []),
    "conv2d": ({"type": "conv2d", "channels": 2, "kernel": [3, 3]},
               ["channels", "kernel", "stride", "padding", "w_std", "b_std"], (1, 4, 4), [{"type": "flatten"}]),
    "avg_pool2d": ({"type": "avg_pool2d", "window": [2, 2]}, ["window", "stride"], (1, 4, 4), [{"type": "flatten"}]),
}
for kind, (layer, fields, shape, after) in LAYERS.items():
    for field in fields:
        for vname, v in BAD_VALUES.items():
            if field in ("w_std",) and vname in ("float", "huge", "zero"):
                continue  # valid standard deviations
            if field == "b_std" and vname in ("null", "zero", "float", "huge"):
                continue  # null = no bias, others valid
            if field == "padding" and vname == "string":
                v = "circular"
            bad = dict(layer)
            bad[field] = v
            spec(f"{kind}_{field}_{vname}", L(bad, *after, D(2), shape=shape))
for kind in ("relu", "erf", "tanh", "gelu", "identity", "flatten", "global_avg_pool"):
    spec(f"{kind}_extra_field", L(D(3), {"type": kind, "alpha": 0.1}, D(2)))
for vname, v in BAD_VALUES.items():
    spec(f"input_shape_{vname}", {"input_shape": v, "layers": [D(2)]})
    spec(f"layers_{vname}", {"input_shape": [4], "layers": v})
    if vname not in ("string", "null"):  # null means the default, "ntk"
        spec(f"parameterization_{vname}", {"input_shape": [4], "parameterization": v, "layers": [D(2)]})
    spec(f"type_{vname}", L({"type": v, "width": 2}))
spec("deep_json_nesting", "[" * 100_000 + "]" * 100_000)
spec("nan_literal", '{"input_shape":[4],"layers":[{"type":"dense","width":2,"w_std":NaN}]}')
spec("infinity_literal", '{"input_shape":[4],"layers":[{"type":"dense","width":2,"w_std":1e400}]}')
spec("negative_w_std", L(D(2, w_std=-1.0)))
spec("duplicate_keys", '{"input_shape":[4],"layers":[{"type":"dense","width":2,"width":-1}]}')
spec("trailing_garbage", json.dumps(BASE) + " trailing")
spec("bom_prefix", "\ufeff" + json.dumps(BASE))
spec("nul_bytes", json.dumps(BASE)[:20] + "\x00" * 10)
spec("input_shape_4d", L(D(2), shape=(1, 2, 3, 4)))
spec("input_terabytes", L(D(2), shape=(1 << 20, 1 << 20, 1 << 20)))
spec("conv_stride_zero", L(C(2, stride=[0, 0]), {"type": "flatten"}, D(2), shape=(1, 4, 4)))
spec("conv_kernel_zero", L({"type": "conv2d", "channels": 2, "kernel": [0, 3]}, {"type": "flatten"}, D(2), shape=(1, 4, 4)))
spec("conv_kernel_three_numbers", L({"type": "conv2d", "channels": 2, "kernel": [3, 3, 3]}, {"type": "flatten"}, D(2), shape=(1, 4, 4)))
spec("same_padding_stride_2", L(C(2, padding="same", stride=[2, 2]), {"type": "flatten"}, D(2), shape=(1, 4, 4)))
spec("pool_after_flatten", L({"type": "flatten"}, {"type": "avg_pool2d", "window": [2, 2]}, D(2), shape=(1, 4, 4)))
spec("params_overflow", L(D(1 << 31), D(1 << 31)))
spec("params_exceed_memory", L(D(131071), {"type": "relu"}, D(131071), {"type": "relu"}, D(131071), D(2)))
spec("last_layer_activation", L(D(3), {"type": "relu"}, {"type": "conv2d", "channels": 1, "kernel": [1, 1]}))

# Weights: dtypes, shapes, offsets and headers.
for dt, arr in [("F16", np.zeros(3, np.float16)), ("BF16", np.zeros(3, np.uint16)), ("I64", np.zeros(3, np.int64)),
                ("U8", np.zeros(3, np.uint8)), ("BOOL", np.zeros(3, np.bool_)), ("I8", np.zeros(3, np.int8))]:
    open(f"weights/dtype_{dt.lower()}.safetensors", "wb").write(st_bytes({**w, "0.bias": (dt, arr)}))
for name, arr in [("transposed", np.zeros((4, 3))), ("extra_dim", np.zeros((3, 4, 1))), ("scalar", np.zeros(())),
                  ("flat", np.zeros(12)), ("zero_rows", np.zeros((0, 4)))]:
    open(f"weights/shape_{name}.safetensors", "wb").write(st_bytes({**w, "0.weight": ("F64", arr)}))
for key in w:
    k = key.replace(".", "_")
    open(f"weights/missing_{k}.safetensors", "wb").write(st_bytes({q: v for q, v in w.items() if q != key}))
    arr = w[key][1].copy().astype(np.float64)
    arr.flat[0] = np.nan
    open(f"weights/nan_{k}.safetensors", "wb").write(st_bytes({**w, key: ("F64", arr)}))
    arr.flat[0] = -np.inf
    open(f"weights/neg_inf_{k}.safetensors", "wb").write(st_bytes({**w, key: ("F64", arr)}))
    open(f"weights/f32_nan_{k}.safetensors", "wb").write(st_bytes({**w, key: ("F32", np.full(w[key][1].shape, np.nan, np.float32))}))


def raw_header(entries):
    return st_bytes({}, raw_header=json.dumps(entries).encode()) + b"\0" * 256


open("weights/offsets_reversed.safetensors", "wb").write(raw_header({"0.weight": {"dtype": "F64", "shape": [3, 4], "data_offsets": [96, 0]}}))
open("weights/offsets_past_end.safetensors", "wb").write(raw_header({"0.weight": {"dtype": "F64", "shape": [3, 4], "data_offsets": [0, 10**6]}}))
open("weights/offsets_size_mismatch.safetensors", "wb").write(raw_header({"0.weight": {"dtype": "F64", "shape": [3, 4], "data_offsets": [0, 8]}}))
open("weights/offsets_negative.safetensors", "wb").write(raw_header({"0.weight": {"dtype": "F64", "shape": [3, 4], "data_offsets": [-8, 88]}}))
open("weights/shape_negative.safetensors", "wb").write(raw_header({"0.weight": {"dtype": "F64", "shape": [-3, 4], "data_offsets": [0, 96]}}))
open("weights/shape_overflow.safetensors", "wb").write(raw_header({"0.weight": {"dtype": "F64", "shape": [2**62, 2**62], "data_offsets": [0, 96]}}))
open("weights/unknown_dtype.safetensors", "wb").write(raw_header({"0.weight": {"dtype": "F128", "shape": [3, 4], "data_offsets": [0, 96]}}))
open("weights/header_not_object.safetensors", "wb").write(st_bytes({}, raw_header=b"[1, 2, 3]"))
open("weights/header_non_utf8.safetensors", "wb").write(st_bytes({}, raw_header=b'{"\xff\xfe": 1}'))
open("weights/header_length_zero.safetensors", "wb").write(struct.pack("<Q", 0))
open("weights/header_length_past_end.safetensors", "wb").write(struct.pack("<Q", 4096) + b"{}")
open("weights/header_length_max.safetensors", "wb").write(struct.pack("<Q", 2**64 - 1) + b"{}")
open("weights/seven_bytes.safetensors", "wb").write(b"\x01\x02\x03\x04\x05\x06\x07")
open("weights/nul_name.safetensors", "wb").write(st_bytes({**w, "0.we\x00ight": ("F64", np.zeros((3, 4)))}))
open("weights/npy_instead.safetensors", "wb").write(open("base_x.npy", "rb").read())
open("weights/json_instead.safetensors", "wb").write(json.dumps(BASE).encode())
good = st_bytes(good_w)
for cut in (8, 9, 50, len(good) // 2, len(good) - 1):
    open(f"weights/cut_at_{cut}.safetensors", "wb").write(good[:cut])

# Inputs: dtypes, shapes, headers, non-finite values.
for dt in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "uint64", "float128", "longdouble"):
    try:
        np.save(f"npy/dtype_{dt}.npy", np.ones((5, 4), dtype=np.dtype(dt)))
    except TypeError:
        pass
np.save("npy/dtype_str.npy", np.array([["a"] * 4] * 5))
np.save("npy/dtype_object.npy", np.array([[None] * 4] * 5, dtype=object), allow_pickle=True)
np.save("npy/dtype_datetime.npy", np.zeros((5, 4), dtype="datetime64[s]"))
np.save("npy/dtype_structured.npy", np.zeros(5, dtype=[("a", "f8"), ("b", "f8")]))
for name, shape in [("one_d", (20,)), ("feature_dim_5", (4, 5)), ("rank_3", (5, 4, 1)), ("rank_4", (1, 5, 4, 1)),
                    ("zero_features", (5, 0)), ("transposed", (4, 5))]:
    np.save(f"npy/shape_{name}.npy", np.zeros(shape))
for pos in (0, 7, 19):
    for v, vname in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "neg_inf")):
        x = rng.standard_normal((5, 4))
        x.flat[pos] = v
        np.save(f"npy/{vname}_at_{pos}.npy", x)
x = rng.standard_normal((5, 4)).astype(np.float32); x[0, 0] = np.nan
np.save("npy/nan_f32.npy", x)
x = np.full((5, 4), 1.7e308)
np.save("npy/overflowing_values.npy", x)
hdr_end = b.index(b"\n") + 1
body = b[hdr_end:]
def npy_with_header(d):
    h = d.encode()
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h
for name, d in [
    ("shape_negative", "{'descr': '<f8', 'fortran_order': False, 'shape': (-5, 4), }"),
    ("shape_overflow", "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }"),
    ("shape_not_tuple", "{'descr': '<f8', 'fortran_order': False, 'shape': 20, }"),
    ("shape_string", "{'descr': '<f8', 'fortran_order': False, 'shape': 'five', }"),
    ("missing_shape", "{'descr': '<f8', 'fortran_order': False, }"),
    ("missing_descr", "{'fortran_order': False, 'shape': (5, 4), }"),
    ("descr_garbage", "{'descr': '<q9', 'fortran_order': False, 'shape': (5, 4), }"),
    ("header_not_dict", "[1, 2, 3]"),
    ("header_python_code", "__import__('os').system('true')"),
    ("fortran_string", "{'descr': '<f8', 'fortran_order': 'yes', 'shape': (5, 4), }"),
    ("header_unterminated", "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 4)"),
]:
    open(f"npy/{name}.npy", "wb").write(npy_with_header(d) + body)
open("npy/bad_magic.npy", "wb").write(b"\x93NUMPX" + b[6:])
open("npy/version_9.npy", "wb").write(b[:6] + b"\x09\x00" + b[8:])
open("npy/header_len_huge.npy", "wb").write(b[:8] + b"\xff\xff" + b[10:])
open("npy/empty.npy", "wb").write(b"")
open("npy/magic_only.npy", "wb").write(b"\x93NUMPY")
open("npy/extra_bytes.npy", "wb").write(b + b"\0" * 8)
for cut in (10, hdr_end - 1, hdr_end + 1, len(b) - 8):
    open(f"npy/cut_at_{cut}.npy", "wb").write(b[:cut])

print(sum(len(os.listdir(d)) for d in ("spec", "weights", "npy")), "malformed files")
