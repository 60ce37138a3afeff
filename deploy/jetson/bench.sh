#!/usr/bin/env bash
# Benchmark a model on the Jetson with edgekd's harness (lock the clocks first: lock_clocks.sh).
#
#   bash deploy/jetson/bench.sh MODEL.onnx|BUNDLE_DIR|MODEL.engine [extra `edgekd bench` options]
#
# .onnx / bundles run on ONNX Runtime with the CUDA provider (CPU fallback is reported, never silent);
# .engine files run on TensorRT through edgekd's runner (sidecar checked). Results go to JSON beside it.
set -euo pipefail

MODEL="${1:?usage: bench.sh MODEL.onnx|BUNDLE_DIR|MODEL.engine [edgekd bench options]}"
shift
OUT="${OUT:-$(basename "${MODEL%/}")-jetson-bench.json}"
BATCHES="${BATCHES:-1,8,32}"

if command -v nvpmodel >/dev/null; then
    echo "power mode: $(nvpmodel -q 2>/dev/null | head -n1)"
fi
case "$MODEL" in
    *.engine|*.plan|*.trt) edgekd bench "$MODEL" --runtime trt --batch "$BATCHES" --power --json "$OUT" "$@" ;;
    *) edgekd bench "$MODEL" --provider cuda,cpu --batch "$BATCHES" --power --json "$OUT" "$@" ;;
esac
echo "results: $OUT"
