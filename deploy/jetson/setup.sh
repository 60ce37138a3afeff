#!/usr/bin/env bash
# Set up edgekd's device side on a Jetson (JetPack 5 or 6), keeping JetPack's own TensorRT and CUDA.
#
#   bash deploy/jetson/setup.sh                      # venv in ~/edgekd-venv
#   ORT_WHEEL=/path/onnxruntime_gpu-*.whl bash deploy/jetson/setup.sh
#
# Environment: VENV (venv folder), EDGEKD_SPEC (what to pip install, default "edgekd"; e.g. "-e ." in a
# checkout), ORT_WHEEL (an onnxruntime-gpu wheel or index spec for this JetPack; see README.md).
set -euo pipefail

VENV="${VENV:-$HOME/edgekd-venv}"
EDGEKD_SPEC="${EDGEKD_SPEC:-edgekd}"

if [[ -f /etc/nv_tegra_release ]]; then
    echo "L4T: $(head -n1 /etc/nv_tegra_release)"
else
    echo "warning: /etc/nv_tegra_release not found: this does not look like a Jetson (continuing)" >&2
fi
dpkg-query -W -f='JetPack: ${Version}\n' nvidia-jetpack 2>/dev/null || echo "JetPack version: unknown"

# --system-site-packages: JetPack installs TensorRT's Python bindings (python3-libnvinfer) system-wide;
# pip must never replace them, so edgekd's TensorRT extra is NOT installed here.
python3 -m venv --system-site-packages "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --upgrade pip
# The device side: numpy, onnx, pyyaml, rich. No torch, no onnxruntime (it would be the CPU build).
# shellcheck disable=SC2086
python -m pip install $EDGEKD_SPEC
if [[ -n "${ORT_WHEEL:-}" ]]; then
    # shellcheck disable=SC2086
    python -m pip install $ORT_WHEEL
fi
python -m pip install cuda-python || echo "warning: cuda-python not installed: edgekd's TensorRT runner needs it" >&2

python - <<'PY'
import importlib
for name in ("tensorrt", "onnxruntime", "cuda"):
    try:
        mod = importlib.import_module(name)
        print(f"ok   {name} {getattr(mod, '__version__', '')}")
    except ImportError as exc:
        print(f"miss {name}: {exc}")
try:
    import onnxruntime as ort
    print("     onnxruntime providers:", ort.get_available_providers())
except ImportError:
    pass
PY
command -v trtexec >/dev/null || [[ -x /usr/src/tensorrt/bin/trtexec ]] \
    && echo "ok   trtexec" || echo "miss trtexec (sudo apt install tensorrt)"
echo "activate with: source $VENV/bin/activate"
