"""edgekd's benchmark harness (latency statistics, accuracy, device fingerprint, result rows) and suites.

The harness imports numpy (and onnxruntime when it times an ONNX model) only; PyTorch artifacts are timed
by passing a callable, so every row is produced by the same statistics code.
"""
