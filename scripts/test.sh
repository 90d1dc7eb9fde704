#!/usr/bin/env bash
# Runs every test: the Rust workspace (GPU tests on lavapipe when no GPU is present) and the
# parity tests against onnxruntime. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dataset-fashion-mnist
cargo test --workspace --locked
cargo build --locked -p alexnet-cli
python3 -m pytest -q -s tests/reference
