"""`alexnet step` (one SGD step of the paper's rule on the GPU) agrees with JAX.

The network is AlexNetMini written here from its declaration in `alexnet/src/models.rs`
with JAX's own convolution, pooling and autodiff in float64: nothing is shared with our
compiler, kernels or CPU reference. LRN uses the paper's raw alpha (b = a / (k + alpha *
sum a^2)^beta over n channels centred on c). With zero momentum the paper's update is
w <- w - lr * (decay * w + dL/dw); dropout is off in `alexnet step`.
"""

import os
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("ALEXNET_BIN", str(ROOT / "target" / "debug" / "alexnet"))

# (name, out, kernel, pad, groups, lrn, pool as (k, s, p) or None)
MINI_CONV = [
    ("conv1", 32, 5, 2, 1, True, (3, 2, 1)),
    ("conv2", 64, 3, 1, 2, True, (3, 2, 1)),
    ("conv3", 96, 3, 1, 1, False, None),
    ("conv4", 96, 3, 1, 2, False, None),
    ("conv5", 64, 3, 1, 2, False, (3, 2, 0)),
]
MINI_FC = [("fc6", 256, True), ("fc7", 256, True), ("fc8", 10, False)]


def lrn(a, n=5, alpha=1e-4, beta=0.75, k=2.0):
    sq = a * a
    c = a.shape[1]
    lo, hi = (n - 1) // 2, n // 2
    padded = jnp.pad(sq, ((0, 0), (lo, hi), (0, 0), (0, 0)))
    window = sum(padded[:, j : j + c] for j in range(n))
    return a / (k + alpha * window) ** beta


def forward(params, x):
    for name, _, _, pad, groups, has_lrn, pool in MINI_CONV:
        x = jax.lax.conv_general_dilated(
            x, params[f"{name}.weight"], (1, 1), [(pad, pad), (pad, pad)], feature_group_count=groups, dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        x = jax.nn.relu(x + params[f"{name}.bias"][None, :, None, None])
        if has_lrn:
            x = lrn(x)
        if pool:
            k, s, p = pool
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, k, k), (1, 1, s, s), [(0, 0), (0, 0), (p, p), (p, p)])
    x = x.reshape(x.shape[0], -1)
    for name, _, relu in MINI_FC:
        x = x @ params[f"{name}.weight"].T + params[f"{name}.bias"]
        if relu:
            x = jax.nn.relu(x)
    return x


def loss_fn(params, x, labels):
    logp = jax.nn.log_softmax(forward(params, x))
    return -jnp.mean(logp[jnp.arange(labels.shape[0]), labels])


def test_one_sgd_step_matches_jax(tmp_path):
    rng = np.random.default_rng(7)
    weights, c = {}, 1
    for name, out, k, _, groups, _, _ in MINI_CONV:
        fan_in = c // groups * k * k
        weights[f"{name}.weight"] = rng.uniform(-1, 1, (out, c // groups, k, k)).astype(np.float32) * np.float32(np.sqrt(6 / fan_in))
        weights[f"{name}.bias"] = rng.uniform(-0.1, 0.1, out).astype(np.float32)
        c = out
    features = 64 * 3 * 3
    for name, out, _ in MINI_FC:
        weights[f"{name}.weight"] = rng.uniform(-1, 1, (out, features)).astype(np.float32) * np.float32(np.sqrt(6 / features))
        weights[f"{name}.bias"] = rng.uniform(-0.1, 0.1, out).astype(np.float32)
        features = out
    x = rng.uniform(-0.3, 0.7, (3, 1, 28, 28)).astype(np.float32)
    labels = np.array([3, 7, 0], dtype=np.int64)
    lr, decay = 0.1, 0.0005
    save_file(weights, str(tmp_path / "w.safetensors"))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)

    run = subprocess.run(
        [BIN, "step", "--model", "alexnet-mini", "--weights", str(tmp_path / "w.safetensors"), "--input", str(tmp_path / "x.npy"),
         "--labels", str(tmp_path / "y.npy"), "--lr", str(lr), "--decay", str(decay), "--out", str(tmp_path / "w2.safetensors")],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    updated = load_file(str(tmp_path / "w2.safetensors"))

    params = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in weights.items()}
    loss, grads = jax.value_and_grad(loss_fn)(params, jnp.asarray(x, dtype=jnp.float64), jnp.asarray(labels))
    assert f"loss {float(loss):.4f}" in run.stdout, (run.stdout, float(loss))
    worst = 0.0
    for name, w in weights.items():
        want = -lr * (decay * np.asarray(params[name]) + np.asarray(grads[name]))
        got = updated[name].astype(np.float64) - w.astype(np.float64)
        err = np.abs(got - want).max() / np.abs(want).max()
        worst = max(worst, err)
        assert err < 1e-3, f"{name}: the step differs from JAX's by {err:.2e}"
    print(f"alexnet step vs JAX: loss {float(loss):.6f}, worst relative difference of a tensor's update {worst:.2e}")
