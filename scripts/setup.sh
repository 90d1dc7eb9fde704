#!/usr/bin/env bash
# Installs what alexnet needs on a fresh Debian/Ubuntu machine, skipping what is present:
# Mesa's software Vulkan (lavapipe) for CPU-only machines, the Khronos validation layer the tests run under, DejaVu fonts for the training plots,
# and the Python packages of the independent references (onnx, onnxruntime, jax) used by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in mesa-vulkan-drivers libvulkan1 vulkan-validationlayers fonts-dejavu-core "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! python3 -c "import numpy, onnx, onnxruntime, safetensors, pytest, jax" >/dev/null 2>&1; then
  echo "==> installing Python references (tests/reference/requirements.txt)"
  python3 -m pip install -q --disable-pip-version-check -r tests/reference/requirements.txt
fi
