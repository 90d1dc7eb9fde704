#!/usr/bin/env bash
# The main job end to end on real data: build (which compiles the networks to WGSL), inspect
# them, initialise weights, and classify real photos and Fashion-MNIST test images on the GPU
# (lavapipe on a CPU-only machine). No pretrained AlexNet weights can be had here and
# training arrives with the training issue, so the predictions come from the paper's random
# initialisation: the point is the pipeline, not the labels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dataset-fashion-mnist unzip

data=data
mkdir -p "$data"
if [ ! -d "$data/photos" ]; then
  echo "==> fetching 4 ImageNet photos (PyPI foolbox 3.3.4, foolbox/data)"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" foolbox==3.3.4
  mkdir -p "$data/photos"
  unzip -q -j -o "$tmp"/foolbox-3.3.4-py3-none-any.whl 'foolbox/data/imagenet_0[0-3]_*.jpg' -d "$data/photos"
  rm -rf "$tmp"
fi
echo "==> 8 Fashion-MNIST test images from /usr/share/datasets/fashion-mnist"
python3 - "$data" <<'PY'
import gzip, sys, numpy as np
root = "/usr/share/datasets/fashion-mnist"
with gzip.open(f"{root}/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:8]
with gzip.open(f"{root}/t10k-labels-idx1-ubyte.gz") as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[:8]
np.save(f"{sys.argv[1]}/fashion8.npy", (images / 255.0).astype(np.float32))
print("true labels:", labels.tolist())
PY

echo "==> cargo build --release (compiles the built-in networks to WGSL, validated by naga)"
cargo build --release --locked -p alexnet-cli
bin=target/release/alexnet

$bin devices
$bin info --model alexnet
$bin init --model alexnet --seed 0 --out "$data/alexnet-init.safetensors"
$bin infer --model alexnet --weights "$data/alexnet-init.safetensors" "$data"/photos/*.jpg --top 3
$bin init --model alexnet-mini --seed 0 --out "$data/mini-init.safetensors"
$bin infer --model alexnet-mini --weights "$data/mini-init.safetensors" "$data/fashion8.npy" --top 1 --save-logits "$data/fashion8-logits.npy"
$bin shaders --model alexnet --out "$data/shaders-alexnet"
echo "==> done: see $data/ for weights, logits and the generated WGSL"
