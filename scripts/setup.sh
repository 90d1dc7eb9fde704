#!/usr/bin/env bash
# Installs what alexnet needs on a fresh Debian/Ubuntu machine, skipping what is present:
# Mesa's software Vulkan (lavapipe) for CPU-only machines, the Khronos validation layer the tests run under, DejaVu fonts for the training plots,
# and the Python packages of the independent references (onnx, onnxruntime, jax) used by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=()
for pkg in mesa-vulkan-drivers libvulkan1 vulkan-validationlayers fonts-dejavu-core "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Opt-in: ALEXNET_MESA_BACKPORTS=1 on Debian 12 installs lavapipe from Mesa 25
# (bookworm-backports). Debian 12's own Mesa 22.3 loads a storage buffer inside a loop lane by
# lane, each lane's value inserted through the stack; Mesa 25 runs the same kernels 1.7-3.3x
# as fast but compiles each about 5x as slowly (minutes for the paper net's first run), so
# the stock driver stays the default (README, "Lavapipe from Mesa 25").
. /etc/os-release 2>/dev/null || true
if [ "${VERSION_CODENAME:-}" = bookworm ] && [ -n "${ALEXNET_MESA_BACKPORTS:-}" ]; then
  have=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 0)
  if ! dpkg --compare-versions "$have" ge 24; then
    echo "==> installing Mesa's lavapipe from bookworm-backports (have $have)"
    echo "deb http://deb.debian.org/debian bookworm-backports main" |
      $SUDO tee /etc/apt/sources.list.d/alexnet-bookworm-backports.list >/dev/null
    if ! { $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports \
        mesa-vulkan-drivers >/dev/null; }; then
      echo "warning: bookworm-backports unreachable; keeping Mesa $have" >&2
    fi
  fi
fi

if ! python3 -c "import numpy, onnx, onnxruntime, safetensors, pytest, jax" >/dev/null 2>&1; then
  echo "==> installing Python references (tests/reference/requirements.txt)"
  python3 -m pip install -q --disable-pip-version-check -r tests/reference/requirements.txt
fi
