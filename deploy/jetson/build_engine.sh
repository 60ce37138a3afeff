#!/usr/bin/env bash
# Build a TensorRT engine ON the Jetson (an engine only runs where it was built).
#
#   bash deploy/jetson/build_engine.sh MODEL.onnx [fp16|int8|fp32] [MAX_BATCH]
#
# With TensorRT's Python bindings (JetPack's python3-libnvinfer): `edgekd engine`, which also checks layer
# precisions and writes the sidecar that `edgekd bench --runtime trt` requires. Without them: trtexec,
# with the command edgekd prints (strongly typed when this trtexec supports it, builder flags otherwise).
set -euo pipefail

MODEL="${1:?usage: build_engine.sh MODEL.onnx [fp16|int8|fp32] [MAX_BATCH]}"
PRECISION="${2:-fp16}"
MAX_BATCH="${3:-32}"
ENGINE="${ENGINE:-${MODEL%.onnx}-${PRECISION}.engine}"

if python3 -c "import tensorrt" 2>/dev/null; then
    edgekd engine "$MODEL" --out "$ENGINE" --precision "$PRECISION" --max-batch "$MAX_BATCH"
    exit 0
fi

TRTEXEC="$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)"
[[ -x "$TRTEXEC" ]] || { echo "error: neither TensorRT's Python bindings nor trtexec found" >&2; exit 7; }
PLAN="$(edgekd engine "$MODEL" --out "$ENGINE" --precision "$PRECISION" --max-batch "$MAX_BATCH" --print-trtexec)"
HELP_TEXT="$("$TRTEXEC" --help 2>&1 || true)"
if grep -q -- "--stronglyTyped" <<<"$HELP_TEXT"; then
    CMD="$(echo "$PLAN" | grep -v '^#' | sed -n 1p)"     # TensorRT >= 10
else
    CMD="$(echo "$PLAN" | grep -v '^#' | sed -n 2p)"     # TensorRT 8.x (JetPack 5)
fi
echo "+ $CMD"
eval "${CMD/#trtexec/$TRTEXEC}"
echo "built $ENGINE with trtexec (no sidecar: benchmark it with: $TRTEXEC --loadEngine=$ENGINE)"
