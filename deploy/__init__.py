"""edgekd's deploy stage: export → verify → quantize → engines, and ``deploy.runtime`` for the device.

Never imports :mod:`edgekd`. Heavy libraries (torch, onnxruntime.quantization, tensorrt) are imported
inside the functions that need them.
"""
