"""edgekd: teacher to edge device in one command — distill, export, quantize, benchmark, ship.

``import edgekd`` never imports torch; heavy modules load when a function needs them.

Example:
    >>> from edgekd import load_bundle          # numpy + onnxruntime only
    >>> predictor = load_bundle("runs/digits/bundle")  # doctest: +SKIP
"""

from edgekd import _checkout

_checkout.install()

__version__ = "0.1.0"

__all__ = ["__version__", "load_bundle", "load_recipe", "run_pipeline"]


def __getattr__(name: str):
    if name == "load_bundle":
        from edgekd.deploy.runtime import load_bundle

        return load_bundle
    if name == "load_recipe":
        from edgekd.recipe import load_recipe

        return load_recipe
    if name == "run_pipeline":
        from edgekd.pipeline import run_pipeline

        return run_pipeline
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
