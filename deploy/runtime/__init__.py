"""The device side: load a bundle and run it with numpy + onnxruntime (or TensorRT). Never imports torch."""

from edgekd.deploy.runtime.bundle import Predictor, load_bundle, verify_checksums

__all__ = ["Predictor", "load_bundle", "verify_checksums"]
