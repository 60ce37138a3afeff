"""The device side: load a bundle and run it with numpy + onnxruntime (or TensorRT). Never imports torch or onnx."""

from edgekd.deploy.runtime.bundle import (
           Bundle,
           BundleManifest,
           Predictor,
           load_bundle,
           open_bundle,
           verify_checksums,
)
from edgekd.deploy.runtime.preprocess import ImagePreprocessing
from edgekd.deploy.runtime.text import TextPreprocessing

__all__ = ["Bundle", "BundleManifest", "ImagePreprocessing", "Predictor", "TextPreprocessing", "load_bundle",
           "open_bundle", "verify_checksums"]
