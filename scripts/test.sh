#!/usr/bin/env bash
# Runs every test: the Rust workspace (GPU tests on lavapipe when no GPU is present) and the
# parity tests against onnxruntime. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dataset-fashion-mnist
# Headless: lavapipe's libwayland prints "XDG_RUNTIME_DIR is invalid" for every GPU the tests
# open unless the variable names some directory (the CLI sets it itself; tests use the library).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}/alexnet-no-display}"
# Every test's GPU work runs once under the Khronos validation layer (Debian's
# vulkan-validationlayers), set to print any error, warning or performance warning and then
# stop the process with SIGTRAP, so a message fails the test that caused it (in the test
# process or in a CLI it spawned). A first run with info messages on proves the layer loads.
# WGPU_DEBUG=0 keeps naga's debug info out of the SPIR-V: Debian 12's layer (1.3.239) predates
# the WGSL source-language operand that debug info carries and flags every shader for it.
cargo build --locked -p alexnet-cli
vvl="$PWD/target/vvl"
mkdir -p "$vvl/probe" "$vvl/strict"
printf 'khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG\nkhronos_validation.report_flags = info\n' >"$vvl/probe/vk_layer_settings.txt"
printf 'khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG,VK_DBG_LAYER_ACTION_BREAK\nkhronos_validation.report_flags = error,warn,perf\n' >"$vvl/strict/vk_layer_settings.txt"
export VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation WGPU_DEBUG=0
probe=$(VK_LAYER_SETTINGS_PATH="$vvl/probe" target/debug/alexnet devices 2>&1 || true)
if ! grep -q "Khronos Validation Layer Active" <<<"$probe"; then
  echo "error: the Khronos validation layer did not load (apt-get install vulkan-validationlayers)" >&2
  exit 1
fi
echo "==> running the tests under the Khronos validation layer"
VK_LAYER_SETTINGS_PATH="$vvl/strict" cargo test --workspace --locked
unset VK_INSTANCE_LAYERS WGPU_DEBUG
python3 -m pytest -q -s tests/reference
