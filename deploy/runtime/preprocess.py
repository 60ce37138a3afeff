"""The preprocessing contract: how raw input becomes what the model takes — one definition shared by training,
the ONNX file's ``metadata_props``, a bundle's ``model.json``, ``load_bundle`` and the example app.

An app that gets it wrong loses accuracy silently (a digits model fed 0–255 pixels instead of 0–16 drops to
~48 % top-1), so the contract is explicit and checked: pixel range, scale, mean/std, layout, channel order,
resize and crop policy, and whether the model normalises inside its own graph (``in_graph``).

Imports numpy only (Pillow lazily, for :meth:`ImagePreprocessing.load_image`).

Example:
    >>> pre = ImagePreprocessing(height=8, width=8, channels=1, pixel_max=16.0, scale=1 / 16, mean=(0.3,),
    ...                          std=(0.4,), channel_order="L")
    >>> pre.apply(np.zeros((2, 8, 8), np.float32)).shape
    (2, 1, 8, 8)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgekd.deploy.errors import InputFileError, ResourceError, UsageError
from edgekd.deploy.registry import Registry
from edgekd.deploy.typed import from_json, to_json

#: The ONNX ``metadata_props`` key that carries the contract (JSON).
METADATA_KEY = "edgekd.preprocessing"
PREPROCESSING: Registry[type] = Registry("preprocessing kind")


@PREPROCESSING.register("image")
@dataclass(frozen=True)
class ImagePreprocessing:
    """Raw pixels → model input: ``(pixels · scale − mean) / std`` per channel, in ``layout``.

    ``pixels`` are what a decoded image holds, in ``[pixel_min, pixel_max]`` (0–255 for 8-bit images; a
    dataset of another range, like scikit-learn's 0–16 digits, says so; ``None`` leaves a side unchecked,
    for data a user's factory already normalised). Photos of another size are resized (the
    shorter side to ``resize`` when ``crop`` is set, else to exactly height × width) with ``interpolation``,
    then centre-cropped to ``crop``. With ``in_graph`` the model itself takes raw ``pixel_dtype`` pixels in
    ``layout`` and does the cast, scale and normalisation inside its graph.
    """

    height: int
    width: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: Literal["image"] = "image"
    pixel_max: float | None = 255.0
    pixel_min: float | None = 0.0
    scale: float = 1.0 / 255.0
    pixel_dtype: Literal["uint8", "float32"] = "uint8"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR", "L"] = "RGB"
    resize: int | None = None
    crop: int | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest", "box"] = "bilinear"
    in_graph: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("height", "width", "channels"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            problems.append(f"mean/std need {self.channels} value(s) (one per channel), got {len(self.mean)}/"
                            f"{len(self.std)}")
        if not all(math.isfinite(v) for v in self.mean):
            problems.append(f"mean must be finite, got {list(self.mean)}")
        if not all(math.isfinite(v) and v > 0 for v in self.std):
            problems.append(f"std values must be finite and > 0, got {list(self.std)}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            problems.append(f"scale must be finite and > 0, got {self.scale}")
        if self.pixel_max is not None and not (math.isfinite(self.pixel_max) and self.pixel_max > 0):
            problems.append(f"pixel_max must be finite and > 0 (or null), got {self.pixel_max}")
        if self.pixel_min is not None and not math.isfinite(self.pixel_min):
            problems.append(f"pixel_min must be finite (or null), got {self.pixel_min}")
        if self.layout == "NHWC" and not self.in_graph:
            problems.append("layout NHWC needs in_graph: true (float models take NCHW)")
        if (self.channel_order == "L") != (self.channels == 1):
            problems.append(f"channel_order {self.channel_order!r} does not fit {self.channels} channel(s)")
        if problems:
            raise ValueError("; ".join(problems))

    # ------------------------------------------------------------------------------------ describe
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model's per-sample input shape in its layout."""
        c, h, w = self.channels, self.height, self.width
        return (h, w, c) if self.layout == "NHWC" and self.in_graph else (c, h, w)

    @property
    def input_dtype(self) -> str:
        return self.pixel_dtype if self.in_graph else "float32"

    def to_dict(self) -> dict:
        return to_json(self)

    def metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` entry."""
        return {METADATA_KEY: json.dumps(self.to_dict(), sort_keys=True)}

    # ------------------------------------------------------------------------------------ apply
    def pixels_to_nchw(self, images) -> np.ndarray:
        """One image or a batch, channels first or last, as float32 ``(N, C, H, W)`` raw pixels."""
        c, h, w = self.channels, self.height, self.width
        x = np.asarray(images)
        if x.dtype.kind not in "biuf":
            raise UsageError(f"images have dtype {x.dtype}; expected numbers (uint8 or float pixels)")
        x = x.astype(np.float32, copy=False)
        if x.ndim == 2 and c == 1 and x.shape == (h, w):
            x = x[None, None]
        elif x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
            x = x[:, None]
        elif x.ndim == 3 and x.shape in ((c, h, w), (h, w, c)):
            x = x[None]
        if x.ndim == 4 and x.shape[1:] == (h, w, c) and x.shape[1:] != (c, h, w):
            x = x.transpose(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1:] != (c, h, w):
            raise UsageError(f"images have shape {tuple(np.shape(images))}; this model takes "
                             f"(N, {c}, {h}, {w}) or (N, {h}, {w}, {c}) pixels",
                             hint="resize them to the model's input first (ImagePreprocessing.load_image does)")
        return x

    def check_pixels(self, x: np.ndarray) -> None:
        """Refuse non-finite pixels and pixels outside ``[pixel_min, pixel_max]`` (a wrong range is a wrong
        answer, not a slightly worse one)."""
        if x.size == 0:
            raise UsageError("no images given (an empty batch)")
        if not np.isfinite(x).all():
            raise UsageError("images contain NaN or infinite pixels", hint="pass decoded image pixels")
        lo, hi = float(x.min()), float(x.max())
        low_ok = self.pixel_min is None or lo >= self.pixel_min - 1e-6 * max(abs(self.pixel_min), 1)
        high_ok = self.pixel_max is None or hi <= self.pixel_max * (1 + 1e-6)
        if not (low_ok and high_ok):
            want = f"[{self.pixel_min if self.pixel_min is not None else '-∞'}, " \
                   f"{self.pixel_max if self.pixel_max is not None else '∞'}]"
            hint = ("pass 8-bit pixel values (0..255), not already-normalised ones" if self.pixel_max == 255 else
                    f"rescale them first (e.g. x * {self.pixel_max:g} / 255 for 8-bit images)"
                    if self.pixel_max else "pass inputs in the range the model was trained on")
            raise UsageError(f"pixel values span [{lo:g}, {hi:g}], but this model takes pixels in {want}",
                             hint=hint)

    def apply(self, images) -> np.ndarray:
        """Raw pixels → the model's input (float32 NCHW normalised, or raw pixels when ``in_graph``)."""
        x = self.pixels_to_nchw(images)
        self.check_pixels(x)
        if self.in_graph:
            x = x.transpose(0, 2, 3, 1) if self.layout == "NHWC" else x
            return np.ascontiguousarray(x.round() if self.pixel_dtype == "uint8" else x,
                                        dtype=self.pixel_dtype)
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x * np.float32(self.scale) - mean) / std, dtype=np.float32)

    def feed(self, raw, input_names, folder=None) -> dict[str, np.ndarray]:
        """Raw pixels → the model's feed ``{input name: array}``."""
        return {input_names[0]: self.apply(raw)}

    def synthetic(self, n: int = 2, max_bytes: int = 256 << 20) -> np.ndarray:
        """``n`` mid-range images; a declared size that cannot fit in memory is refused before allocation."""
        size = self.height * self.width * self.channels * 4
        if size > max_bytes:
            raise ResourceError(f"the preprocessing declares a {self.height}×{self.width}×{self.channels} input "
                                f"({size / 2**20:.0f} MiB per sample): refusing to allocate it",
                                hint="check model.json; re-create the bundle with `edgekd bundle`")
        lo, hi = self.pixel_min or 0.0, self.pixel_max if self.pixel_max is not None else 1.0
        return np.full((n, self.height, self.width, self.channels), (lo + hi) / 2, np.float32)

    def load_image(self, source) -> np.ndarray:
        """An image file (or PIL image) → raw pixels ``(H, W, C)`` in ``[0, pixel_max]``, resized and cropped
        by the contract. Needs Pillow (``pip install 'edgekd[images]'``)."""
        from edgekd.deploy.errors import DependencyError

        if self.pixel_max is None:
            raise UsageError("this model's preprocessing has no pixel range: it cannot read image files",
                             hint="feed arrays prepared like its training data")
        try:
            from PIL import Image
        except ImportError:
            raise DependencyError("reading image files needs Pillow, which is not installed",
                                  hint="pip install 'edgekd[images]'") from None
        image = source
        if not isinstance(source, Image.Image):
            try:
                image = Image.open(source)
                image.load()
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise InputFileError(f"cannot read image {source}: {exc}") from None
        image = image.convert("L" if self.channels == 1 else "RGB")
        image = self._resize(image, Image)
        x = np.asarray(image, dtype=np.float32)
        x = x[..., None] if x.ndim == 2 else x[..., ::-1] if self.channel_order == "BGR" else x
        return x * np.float32(self.pixel_max / 255.0) if self.pixel_max != 255.0 else x

    def _resize(self, image, image_mod):
        method = {"bilinear": image_mod.Resampling.BILINEAR, "bicubic": image_mod.Resampling.BICUBIC,
                  "nearest": image_mod.Resampling.NEAREST, "box": image_mod.Resampling.BOX}[self.interpolation]
        if self.crop and self.resize:  # shorter side to `resize`, then centre crop
            w, h = image.size
            s = self.resize / min(w, h)
            image = image.resize((max(round(w * s), self.crop), max(round(h * s), self.crop)), method)
        elif not self.crop:
            return image.resize((self.width, self.height), method) if image.size != (self.width,
                                                                                      self.height) else image
        w, h = image.size
        left, top = (w - self.width) // 2, (h - self.height) // 2
        if left < 0 or top < 0:
            image = image.resize((max(w, self.width), max(h, self.height)), method)
            w, h = image.size
            left, top = (w - self.width) // 2, (h - self.height) // 2
        return image.crop((left, top, left + self.width, top + self.height))


def parse_preprocessing(data, source: str = "preprocessing"):
    """Strictly parse a contract (``kind`` picks the class); raises :class:`~edgekd.deploy.typed.DocumentError`."""
    if not isinstance(data, dict):
        raise InputFileError(f"{source}: expected a mapping, got {type(data).__name__}")
    kind = data.get("kind", "image")
    if kind not in PREPROCESSING:
        raise InputFileError(f"{source}: unknown preprocessing kind {kind!r}{PREPROCESSING.suggest(kind)}",
                             hint=f"valid: {', '.join(PREPROCESSING.names())}")
    return from_json(PREPROCESSING.get(kind), data, source)


def from_metadata(props: dict[str, str], source: str | os.PathLike = "model") -> object | None:
    """The contract stored in an ONNX file's ``metadata_props`` (``None`` when the file has none)."""
    text = props.get(METADATA_KEY)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{source}: metadata {METADATA_KEY!r} is not valid JSON: {exc}") from None
    return parse_preprocessing(data, f"{source} metadata {METADATA_KEY}")


# the text contract registers itself in PREPROCESSING (imported here so the registry always holds it)
from edgekd.deploy.runtime import text as _text  # noqa: E402,F401
