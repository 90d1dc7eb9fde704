#!/usr/bin/env bash
# Runs every test: the Rust workspace (GPU tests on lavapipe when no GPU is present) and the
# parity tests against onnxruntime. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dataset-fashion-mnist
# Headless: lavapipe's libwayland prints "XDG_RUNTIME_DIR is invalid" for every GPU the tests
# open unless the variable names some directory (the CLI sets it itself; tests use the library).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}/alexnet-no-display}"
cargo test --workspace --locked
cargo build --locked -p alexnet-cli
python3 -m pytest -q -s tests/reference
