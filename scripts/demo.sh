#!/usr/bin/env bash
# The main job end to end on real data: build (which compiles the networks, forward and
# backward, to WGSL), train AlexNetMini briefly on real Fashion-MNIST on the GPU (lavapipe on
# a CPU-only machine), evaluate it and classify test images; then run the paper's AlexNet on
# real photos. No pretrained AlexNet weights can be had here, so that last part uses the
# paper's random initialisation: the point there is the 227×227 pipeline, not the labels.
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
# Preprocessed as alexnet's 1-channel nets take images: 0-1, minus Fashion-MNIST's mean pixel.
np.save(f"{sys.argv[1]}/fashion8.npy", (images / 255.0 - 0.2860).astype(np.float32))
print("true labels:", labels.tolist())
PY

echo "==> cargo build --release (compiles the built-in networks to WGSL, validated by naga)"
cargo build --release --locked -p alexnet-cli
bin=target/release/alexnet

$bin devices
$bin info --model alexnet-mini
echo "==> training AlexNetMini on 4,000 Fashion-MNIST images (one epoch; about 2-3 minutes on a 2-core lavapipe machine)"
$bin train --model alexnet-mini --init he --limit 4000 --val 500 --eval-limit 1000 --epochs 1 --batch 64 --seed 0 --out "$data/mini-run"
echo "==> evaluating on 1,000 test images, showing 8"
$bin eval --model alexnet-mini --weights "$data/mini-run/weights.safetensors" --limit 1000 --show 8
$bin infer --model alexnet-mini --weights "$data/mini-run/weights.safetensors" "$data/fashion8.npy" --top 1 --save-logits "$data/fashion8-logits.npy"
echo "==> the paper's AlexNet (random initialisation) on real photos"
$bin init --model alexnet --seed 0 --out "$data/alexnet-init.safetensors"
$bin infer --model alexnet --weights "$data/alexnet-init.safetensors" "$data"/photos/*.jpg --top 3
$bin shaders --model alexnet-mini --out "$data/shaders-alexnet-mini"
echo "==> done: see $data/ for the run (checkpoint, weights, metrics.jsonl), logits and the generated WGSL"
