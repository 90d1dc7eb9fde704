#!/usr/bin/env bash
# Benchmarks the paper's AlexNet forward pass with each fusion setting (on, epilogue, off) and
# an AlexNetMini training step, in one run on the default adapter, with per-kernel times.
# Usage: bash scripts/fusion_bench.sh [BATCH...]   (default batches: 1 8)
# On a software adapter `fusion: on` runs the plan's program for such adapters (the epilogue
# fusion, see README); ALEXNET_VARIANT=gpu times the blocks (in their GPU form) there instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -q -p alexnet-cli
bin=target/debug/alexnet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for fusion in on epilogue off; do
  cat > "$dir/alexnet-$fusion.alexnet" <<NET
/// The paper's AlexNet (as alexnet::models::AlexNet) with fusion: $fusion.
pub AlexNet {
    input: [3, 227, 227],
    max_batch: 128,
    fusion: $fusion,
    conv1: conv(96, k = 11, s = 4) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2),
    conv2: conv(256, k = 5, p = 2, groups = 2) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2),
    conv3: conv(384, k = 3, p = 1) -> relu,
    conv4: conv(384, k = 3, p = 1, groups = 2) -> relu,
    conv5: conv(256, k = 3, p = 1, groups = 2) -> relu -> maxpool(k = 3, s = 2),
    fc6: linear(4096) -> relu -> dropout(0.5),
    fc7: linear(4096) -> relu -> dropout(0.5),
    fc8: linear(1000) -> softmax,
}
NET
done
batches=("$@")
[ ${#batches[@]} -gt 0 ] || batches=(1 8)
for batch in "${batches[@]}"; do
  for fusion in on epilogue off; do
    echo "== AlexNet, fusion $fusion, batch $batch"
    "$bin" bench --model "$dir/alexnet-$fusion.alexnet" --batch "$batch" --iters 3 --kernels
  done
done
echo "== AlexNetMini training step, batch 64"
"$bin" bench --model alexnet-mini --batch 64 --iters 3 --train
