"""Compares `alexnet infer --model alexnet-torchvision` with torchvision's own AlexNet.

Needs PyTorch and torchvision (not installed by scripts/setup.sh: they are large). The weights
are torchvision's own random initialisation, saved with its state_dict names, so this also
checks that our parameter names, shapes and layouts are torchvision's.

    ALEXNET_BIN=target/release/alexnet python3 scripts/torchvision_check.py
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

binary = os.environ.get("ALEXNET_BIN", "target/release/alexnet")
torch.manual_seed(0)
model = torchvision.models.alexnet(weights=None).eval()
x = torch.rand(4, 3, 224, 224) * 2 - 1
with torch.no_grad():
    theirs = model(x).numpy()
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "w.safetensors"))
    np.save(tmp / "x.npy", x.numpy())
    run = subprocess.run(
        [binary, "infer", "--model", "alexnet-torchvision", "--weights", str(tmp / "w.safetensors"), str(tmp / "x.npy"), "--save-logits", str(tmp / "y.npy")],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(run.stderr)
    ours = np.load(tmp / "y.npy")
rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
print(f"torchvision {torchvision.__version__}: max relative difference of logits {rel:.2e} over {len(x)} images")
sys.exit(0 if rel < 1e-4 else 1)
