"""`alexnet infer` agrees with onnxruntime on the same weights and inputs.

The ONNX graphs here are written from the networks' published definitions (the paper's
two-tower AlexNet and torchvision's), not from our IR, so agreement checks our compiler,
kernels, weight layout and LRN convention against an implementation we did not write.
ONNX's LRN divides alpha by size; the paper does not, so the paper's alpha is multiplied
by 5 here. Weights are written by numpy's safetensors, which also checks our loader.
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("ALEXNET_BIN", str(ROOT / "target" / "debug" / "alexnet"))

# (name, onnx-prefix, out, kernel, stride, pad, groups, lrn, pool) per conv layer.
PAPER_CONV = [
    ("conv1", 96, 11, 4, 0, 1, True, True),
    ("conv2", 256, 5, 1, 2, 2, True, True),
    ("conv3", 384, 3, 1, 1, 1, False, False),
    ("conv4", 384, 3, 1, 1, 2, False, False),
    ("conv5", 256, 3, 1, 1, 2, False, True),
]
PAPER_FC = [("fc6", 4096, True), ("fc7", 4096, True), ("fc8", 1000, False)]
TV_CONV = [
    ("features.0", 64, 11, 4, 2, 1, False, True),
    ("features.3", 192, 5, 1, 2, 1, False, True),
    ("features.6", 384, 3, 1, 1, 1, False, False),
    ("features.8", 256, 3, 1, 1, 1, False, False),
    ("features.10", 256, 3, 1, 1, 1, False, True),
]
TV_FC = [("classifier.1", 4096, True), ("classifier.4", 4096, True), ("classifier.6", 1000, False)]


def build(conv, fc, in_shape):
    """An ONNX model of conv blocks then fully connected layers; returns (model, weights)."""
    rng = np.random.default_rng(1234)
    nodes, inits, weights = [], [], {}
    x, (c, h, w) = "x", in_shape

    def param(name, shape, fan_in):
        scale = np.sqrt(6.0 / fan_in) if len(shape) > 1 else 0.1
        value = rng.uniform(-scale, scale, size=shape).astype(np.float32)
        weights[name] = value
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, value.shape, value.ravel()))
        return name

    for i, (name, out, k, s, p, g, lrn, pool) in enumerate(conv):
        wn = param(f"{name}.weight", (out, c // g, k, k), c // g * k * k)
        bn = param(f"{name}.bias", (out,), 1)
        nodes.append(helper.make_node("Conv", [x, wn, bn], [f"c{i}"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, group=g))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
        h, w, c = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, out
        if lrn:
            # The paper's alpha = 1e-4 on the raw sum is ONNX's alpha = 5e-4 over size 5.
            nodes.append(helper.make_node("LRN", [x], [f"l{i}"], size=5, alpha=1e-4 * 5, beta=0.75, bias=2.0))
            x = f"l{i}"
        if pool:
            nodes.append(helper.make_node("MaxPool", [x], [f"p{i}"], kernel_shape=[3, 3], strides=[2, 2]))
            x = f"p{i}"
            h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    x, features = "flat", c * h * w
    for i, (name, out, relu) in enumerate(fc):
        wn = param(f"{name}.weight", (out, features), features)
        bn = param(f"{name}.bias", (out,), 1)
        nodes.append(helper.make_node("Gemm", [x, wn, bn], [f"f{i}"], transB=1))
        x, features = f"f{i}", out
        if relu:
            nodes.append(helper.make_node("Relu", [x], [f"fr{i}"]))
            x = f"fr{i}"
    nodes.append(helper.make_node("Identity", [x], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "alexnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", features])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, weights


@pytest.mark.parametrize(
    "cli_name,conv,fc,shape",
    [("alexnet", PAPER_CONV, PAPER_FC, (3, 227, 227)), ("alexnet-torchvision", TV_CONV, TV_FC, (3, 224, 224))],
)
def test_logits_match_onnxruntime(tmp_path, cli_name, conv, fc, shape):
    model, weights = build(conv, fc, shape)
    save_file(weights, str(tmp_path / "w.safetensors"))
    x = np.random.default_rng(7).uniform(-1, 1, size=(2, *shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [BIN, "infer", "--model", cli_name, "--weights", str(tmp_path / "w.safetensors"), str(tmp_path / "x.npy"), "--save-logits", str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    ours = np.load(tmp_path / "y.npy")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"x": x})
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"{cli_name}: max relative difference {rel:.2e}")
    assert rel < 1e-4, rel
