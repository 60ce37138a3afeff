"""Data sources, registered by name, split into train/val/test with a fixed seed.

Sources (``data.source`` in a recipe):
* ``digits`` — scikit-learn's bundled 8×8 handwritten digits (no download);
* ``torchvision:<Name>`` — a torchvision dataset (``CIFAR10``, ``FashionMNIST``, ``FakeData`` ...) with
  ``data.root`` and ``data.download``;
* ``imagefolder:<dir>`` (or ``imagefolder`` with ``data.root``) — one folder per class;
* ``text:<path>`` — a CSV / TSV / JSON Lines file of texts and labels (:mod:`edgekd.textdata`: columns
  ``data.text_column`` / ``data.label_column``, tokenizer ``data.tokenizer``, ``data.max_length`` tokens);
* ``package.module:function`` — a user factory returning a dataset of ``(image_tensor, label)`` or a
  dict with ``train``/``val``/``test`` datasets.

Every dataset yields ``(x, y, index)`` so the teacher-output cache can look samples up.

A torchvision or image-folder dataset whose decoded images fit in memory (``data.in_memory: auto``, below
:data:`IN_MEMORY_BYTES`) is decoded once into tensors; augmentation then runs on whole batches
(:class:`edgekd.augment.Augmentation`, replayable per view), which lets the teacher-output cache hold the
teacher's logits for a fixed set of augmented views. Larger datasets stay file-backed and are augmented per
sample by torchvision transforms (the teacher then runs online).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.augment import Augmentation
from edgekd.deploy.errors import InputFileError, UsageError
from edgekd.deploy.registry import Registry
from edgekd.deploy.runtime.preprocess import ImagePreprocessing
from edgekd.deploy.runtime.runner import TensorSpec
from edgekd.deploy.runtime.text import TextPreprocessing

log = logging.getLogger(__name__)
#: ``data.source`` schemes: ``name`` or ``name:argument`` → ``loader(cfg, seed, argument)``. Anything else of
#: the form ``package.module:function`` is a user factory (code: see :mod:`edgekd.factories`).
SOURCES: Registry = Registry("data.source")
SOURCES.register_lazy("text", "edgekd.textdata:load_text")
#: ``data.in_memory: auto`` decodes a dataset into tensors when all its images take at most this many bytes
IN_MEMORY_BYTES = 1 << 30
#: given mean/std are "far" from the training data's when a mean is off by more than this many of the data's
#: standard deviations, or a std differs by more than this factor
STATS_MEAN_TOLERANCE, STATS_STD_FACTOR = 0.25, 1.5
_PROGRESS: contextvars.ContextVar = contextvars.ContextVar("edgekd_data_progress", default=None)


@dataclass
class DataSplits:
    """Train (maybe augmented), train_eval (same samples, eval transform), val and test datasets, and what the
    model takes: ``input_specs`` (one float image input by default; text models take token ids and a mask)."""

    train: object
    train_eval: object
    val: object
    test: object
    num_classes: int
    input_shape: tuple[int, ...]
    labels: list[str]
    preprocessing: ImagePreprocessing | TextPreprocessing
    identity: str
    augmented: bool = False
    notes: list[str] = field(default_factory=list)
    input_specs: tuple[TensorSpec, ...] = ()
    task: str = "image-classification"
    #: batch augmentation of an in-memory train split (applied by the trainer); ``None`` when the split is not
    #: augmented or augments itself per sample (file-backed data: ``augmented`` is then true)
    augmentation: Augmentation | None = None
    #: files the run keeps beside the model and the bundle ships (``{"tokenizer.json": its text}`` for text)
    assets: dict[str, str] = field(default_factory=dict)
    #: what the models take from the data (a text vocabulary's ``vocab_size`` and ``pad_id``)
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.input_specs:
            self.input_specs = (TensorSpec("input", "float32", ("batch", *self.input_shape)),)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.input_specs]

    def axes(self, output: str = "logits") -> dict[str, dict[int, str]]:
        """Dynamic axes by input/output name (named dims of the specs), for the exporter."""
        axes = {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in self.input_specs}
        return {**axes, output: {0: "batch"}}

    def arrays(self, split: str, limit: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A split as a feed ``{input name: array}`` and its labels (the eval transform)."""
        x, y = to_numpy(getattr(self, split), limit)
        return dict(zip(self.input_names, x if isinstance(x, tuple) else (x,), strict=True)), y

    def example(self, split: str = "test", n: int = 2) -> tuple:
        """``n`` real samples of ``split`` as model arguments (torch tensors, in input order)."""
        import torch

        feed, _ = self.arrays(split, n)
        return tuple(torch.from_numpy(feed[name]) for name in self.input_names)


class Indexed:
    """Wrap a dataset so items are ``(x, y, index)``."""

    def __init__(self, base, indices=None):
        self.base = base
        self.indices = np.arange(len(base)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        x, y = read_sample(self.base, int(self.indices[i]))
        return x, int(y), i


def read_sample(dataset, index: int):
    """``dataset[index][:2]``; a file that cannot be decoded is an :class:`InputFileError` naming it."""
    try:
        return dataset[index][:2]
    except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError (OSError), truncated files
        samples = getattr(dataset, "samples", None)
        where = samples[index][0] if isinstance(samples, list) else f"sample {index} of {type(dataset).__name__}"
        raise InputFileError(f"cannot read {where}: {str(exc).splitlines()[0][:200] if str(exc) else exc!r}",
                             hint="replace or remove the corrupt file") from None


class TensorSplit:
    """An in-memory split: ``x`` a normalised float tensor (N, C, H, W) — or a tuple of tensors for several
    inputs (token ids, mask) — and ``y`` a long tensor."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def rows(self, index):
        """The samples at ``index`` (an int or an index tensor), as one tensor or a tuple."""
        return tuple(t[index] for t in self.x) if isinstance(self.x, tuple) else self.x[index]

    def __getitem__(self, i):
        return self.rows(i), int(self.y[i]), i


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """Per-class shuffled split; returns index arrays (train, val, test), each sorted."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_test, n_val = round(len(idx) * test_fraction), round(len(idx) * val_fraction)
        test += list(idx[:n_test])
        val += list(idx[n_test:n_test + n_val])
        train += list(idx[n_test + n_val:])
    return np.sort(train), np.sort(val), np.sort(test)


def content_identity(dataset) -> str:
    """A digest of a dataset's *content*, so caches and ``--resume`` see replaced samples, not just names.

    In-memory arrays (``.data``: MNIST, CIFAR, …) are hashed whole; file-backed folders (``.samples``:
    ImageFolder) by every file's path, size and modification time; anything else sample by sample. The full
    label list is always part of it.
    """
    h = hashlib.sha256()
    data = getattr(dataset, "data", None)
    samples = getattr(dataset, "samples", None)
    if data is not None and hasattr(data, "shape"):
        h.update(np.ascontiguousarray(np.asarray(data)).tobytes())
    elif isinstance(samples, list) and samples and isinstance(samples[0], tuple):
        for path, label in samples:
            st = os.stat(path)
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    else:
        for i in range(len(dataset)):
            x, y = read_sample(dataset, i)
            h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
            h.update(f"|{y}".encode())
    h.update(np.asarray(_targets(dataset), dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _identity(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


@SOURCES.register("digits")
def _digits(cfg, seed: int, arg: str = "") -> DataSplits:
    import torch
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = ds.images.astype(np.float32)[:, None]  # (N, 1, 8, 8), values 0..16
    y = ds.target.astype(np.int64)
    if cfg.limit:
        x, y = x[:cfg.limit], y[:cfg.limit]
    tr, va, te = stratified_split(y, cfg.val_fraction, cfg.test_fraction, seed)
    scale = 1.0 / 16.0
    mean = cfg.transforms.mean or [float((x[tr] * scale).mean())]
    std = cfg.transforms.std or [float((x[tr] * scale).std())]
    # The digits are 32×32 bitmaps counted in 4×4 blocks (0..16): a photo is resized by area ("box")
    pre = ImagePreprocessing(8, 8, 1, tuple(mean), tuple(std), pixel_max=16.0, scale=scale, pixel_dtype="float32",
                             channel_order="L", interpolation="box")
    xn = torch.from_numpy(pre.apply(x))
    yt = torch.from_numpy(y)
    splits = [TensorSplit(xn[i], yt[i]) for i in (tr, va, te)]
    if cfg.augment:
        log.warning("data.augment is ignored for digits (8×8 images): no augmentation applied")
    ident = _identity("digits", len(y), hashlib.sha256(x.tobytes()).hexdigest()[:16], tr.tolist()[:50],
                      cfg.val_fraction, cfg.test_fraction, seed, mean, std)
    return DataSplits(splits[0], splits[0], splits[1], splits[2], 10, (1, 8, 8),
                      [str(i) for i in range(10)], pre, ident, augmented=False)


def crop_padding(cfg, size: tuple[int, int]) -> int:
    """``data.transforms.padding``, or ⅛ of the image's shorter side (4 pixels at 32×32, as for CIFAR)."""
    pad = cfg.transforms.padding
    return int(pad) if pad is not None else min(size) // 8


def _geometry(cfg) -> list:
    """The deterministic part of the image pipeline: resize, then centre crop (fixed shapes)."""
    from torchvision import transforms as T

    t = cfg.transforms
    ops = []
    if t.resize:  # the short side (then cropped), or both sides when there is no crop: fixed shapes
        ops.append(T.Resize(t.resize if t.crop else (t.resize, t.resize)))
    if t.crop:
        ops.append(T.CenterCrop(t.crop))
    return ops


def _image_transforms(cfg, mean, std, train: bool, size: tuple[int, int] | None = None):
    """Per-sample transforms of file-backed data; the train split's crop (``padding``) and flip augment."""
    from torchvision import transforms as T

    ops = _geometry(cfg)
    augment = train and cfg.augment
    if augment and size and crop_padding(cfg, size):
        ops.append(T.RandomCrop(size, padding=crop_padding(cfg, size)))
    if augment and cfg.transforms.flip:
        ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(ops)


#: images read to estimate mean/std when the recipe gives none
STATS_SAMPLES = 10_000


def channel_stats(build: Callable, cfg, indices: np.ndarray, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the *training* images (resized/cropped as for evaluation, scaled to [0, 1])."""
    from torchvision import transforms as T

    ds = build(True, T.Compose([*_geometry(cfg), T.ToTensor()]))
    pick = indices if len(indices) <= STATS_SAMPLES else np.random.default_rng(0).choice(
        indices, STATS_SAMPLES, replace=False)
    s1, s2, n = np.zeros(channels), np.zeros(channels), 0
    for i in pick:
        x = np.asarray(read_sample(ds, int(i))[0], dtype=np.float64).reshape(channels, -1)
        s1 += x.sum(1)
        s2 += (x * x).sum(1)
        n += x.shape[1]
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 1e-12))
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def _image_contract(cfg, channels: int, size: tuple[int, int], mean, std) -> ImagePreprocessing:
    t = cfg.transforms
    return ImagePreprocessing(size[0], size[1], channels, tuple(mean), tuple(std),
                              channel_order="L" if channels == 1 else "RGB",
                              resize=t.resize, crop=t.crop)


def _from_datasets(name: str, build: Callable, cfg, seed: int, has_test_split: bool) -> DataSplits:
    """Common path for torchvision-style datasets. ``build(train: bool, transform)`` makes a dataset."""
    from torchvision import transforms as T

    probe = build(True, None)
    first = read_sample(probe, 0)[0]
    channels = len(first.getbands()) if hasattr(first, "getbands") else int(np.shape(first)[0])
    labels = np.asarray(_targets(probe))
    if cfg.limit:
        labels = labels[:cfg.limit]
    test_frac = 0.0 if has_test_split else cfg.test_fraction
    tr, va, te = stratified_split(labels, cfg.val_fraction, test_frac, seed)
    geometry = build(True, T.Compose([*_geometry(cfg), T.ToTensor()]))
    shape = tuple(int(d) for d in read_sample(geometry, 0)[0].shape)
    test_base = build(False, None) if has_test_split else None
    n_test = 0 if test_base is None else min(len(test_base), max(cfg.limit // 5, 1)) if cfg.limit else len(test_base)
    classes = list(getattr(probe, "classes", None) or [str(i) for i in range(int(labels.max()) + 1)])
    in_memory = cfg.in_memory == "on" or (
        cfg.in_memory == "auto" and (len(labels) + n_test) * int(np.prod(shape)) * 4 <= IN_MEMORY_BYTES)
    ident = [name, content_identity(probe), cfg.limit, cfg.val_fraction, test_frac, seed, cfg.transforms,
             cfg.augment, content_identity(test_base) if has_test_split else None]
    if in_memory:
        return _decoded(name, geometry, build, cfg, seed, labels, (tr, va, te), n_test, shape, classes,
                        ident)
    given = cfg.transforms.mean and cfg.transforms.std
    mean, std = channel_stats(build, cfg, tr, channels)
    if given:
        warn_if_far(name, cfg.transforms.mean, cfg.transforms.std, mean, std, min(len(tr), STATS_SAMPLES))
        mean, std = cfg.transforms.mean, cfg.transforms.std
    else:
        log.info("%s: mean %s, std %s computed from %d training images", name, mean, std,
                 min(len(tr), STATS_SAMPLES))
    eval_tf = _image_transforms(cfg, mean, std, False)
    full_train = build(True, _image_transforms(cfg, mean, std, True, shape[1:]))
    full_eval = build(True, eval_tf)
    pre = _image_contract(cfg, channels, shape[1:], mean, std)
    test = Indexed(build(False, eval_tf), np.arange(n_test)) if has_test_split else Indexed(full_eval, te)
    return DataSplits(Indexed(full_train, tr), Indexed(full_eval, tr), Indexed(full_eval, va), test,
                      len(classes), shape, [str(c) for c in classes], pre, _identity(*ident, pre.to_dict()),
                      augmented=bool(cfg.augment))


def _decoded(name, geometry, build, cfg, seed, labels, parts, n_test, shape, classes, ident) -> DataSplits:
    """Decode every image once (resize/crop, scaled to [0, 1]), take mean/std from *all* training images
    unless the recipe gives them, normalise as tensors; augmentation then runs per batch."""
    import torch

    tr, va, te = parts
    x = _decode_all(geometry, len(labels), f"decoding {name}")
    mean = x[torch.from_numpy(tr)].mean(dim=(0, 2, 3)).tolist()
    std = x[torch.from_numpy(tr)].std(dim=(0, 2, 3), unbiased=False).tolist()
    if cfg.transforms.mean and cfg.transforms.std:
        warn_if_far(name, cfg.transforms.mean, cfg.transforms.std, mean, std, len(tr))
        mean, std = list(cfg.transforms.mean), list(cfg.transforms.std)
    else:
        mean, std = [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
        log.info("%s: mean %s, std %s computed from the %d training images", name, mean, std, len(tr))
    m, sd = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    x = x.sub_(m).div_(sd)  # what T.Normalize computes, on the whole array
    y = torch.from_numpy(labels.astype(np.int64))
    train = TensorSplit(x[torch.from_numpy(tr)], y[torch.from_numpy(tr)])
    val = TensorSplit(x[torch.from_numpy(va)], y[torch.from_numpy(va)])
    if n_test:
        from torchvision import transforms as T

        test_geo = build(False, T.Compose([*_geometry(cfg), T.ToTensor()]))
        xt = _decode_all(test_geo, n_test, f"decoding {name} (test)").sub_(m).div_(sd)
        test = TensorSplit(xt, torch.as_tensor(_targets(test_geo)[:n_test], dtype=torch.long))
    else:
        test = TensorSplit(x[torch.from_numpy(te)], y[torch.from_numpy(te)])
    pre = _image_contract(cfg, shape[0], shape[1:], mean, std)
    aug = None
    if cfg.augment:
        fill = tuple(float((0.0 - mu) / s) for mu, s in zip(mean, std, strict=True))  # a black pixel, normalised
        aug = Augmentation(crop_padding(cfg, shape[1:]), bool(cfg.transforms.flip), fill, seed)
        if not aug.active:
            log.warning("data.augment is on but data.transforms has neither padding nor flip: nothing to augment")
            aug = None
    return DataSplits(train, train, val, test, len(classes), shape, [str(c) for c in classes], pre,
                      _identity(*ident, pre.to_dict(), "memory"), augmented=aug is not None, augmentation=aug)


def _decode_all(dataset, n: int, what: str):
    """Samples ``0..n-1`` of ``dataset`` stacked into one float32 tensor, with progress for long reads."""
    import torch

    fast = _from_array(dataset, n)
    if fast is not None:
        return fast
    first = read_sample(dataset, 0)[0]
    out = torch.empty((n, *first.shape), dtype=torch.float32)
    step = 1024
    with _progress(what, -(-n // step)) as bar:
        for start in range(0, n, step):
            for i in range(start, min(start + step, n)):
                out[i] = read_sample(dataset, i)[0]
            bar.advance()
    return out


def _from_array(dataset, n: int):
    """The images of a dataset holding them as one uint8 array (``.data``: MNIST family, CIFAR) converted in
    one go — what ``ToTensor()`` gives per sample — when the transform is nothing more; checked against the
    per-sample path on the first and last sample, else ``None``."""
    import torch

    data = getattr(dataset, "data", None)
    if data is None or getattr(data, "dtype", None) not in (np.uint8, torch.uint8) or np.ndim(data) not in (3, 4):
        return None
    x = torch.as_tensor(np.asarray(data[:n]))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, H, W) or (N, H, W, C) → NCHW
    x = x.to(torch.float32).div_(255.0)
    for i in (0, n - 1):
        sample = read_sample(dataset, i)[0]
        if not (isinstance(sample, torch.Tensor) and sample.shape == x[i].shape and torch.equal(sample, x[i])):
            return None
    return x


@contextlib.contextmanager
def _progress(what: str, total: int):
    factory = _PROGRESS.get()
    bar = factory(what, total) if factory else None
    try:
        yield bar or _Quiet()
    finally:
        if bar:
            bar.close()


class _Quiet:
    def advance(self, n: int = 1) -> None:
        pass


def warn_if_far(name: str, mean, std, data_mean, data_std, n: int) -> None:
    """Warn when the recipe's normalisation does not match the training images (e.g. 0.5/0.5 given for
    Fashion-MNIST, whose mean/std are 0.286/0.353): a model trained elsewhere with the right statistics would
    score far lower here."""
    far = [c for c, (m, s, dm, ds) in enumerate(zip(mean, std, data_mean, data_std, strict=False))
           if abs(m - dm) > STATS_MEAN_TOLERANCE * ds or not 1 / STATS_STD_FACTOR <= s / max(ds, 1e-12) <= STATS_STD_FACTOR]
    if far:
        log.warning("%s: data.transforms mean %s / std %s are far from the training images' %s / %s (%d images, "
                    "channel(s) %s): check them (omit both to use the data's own)", name, list(mean), list(std),
                    [round(float(v), 4) for v in data_mean], [round(float(v), 4) for v in data_std], n, far)


def _targets(ds) -> list[int]:
    for attr in ("targets", "labels"):
        if hasattr(ds, attr):
            return list(getattr(ds, attr))
    return [int(ds[i][1]) for i in range(len(ds))]


@SOURCES.register("torchvision")
def _torchvision(cfg, seed: int, name: str) -> DataSplits:
    import torchvision

    cls = getattr(torchvision.datasets, name, None)
    if cls is None:
        raise UsageError(f"unknown torchvision dataset '{name}'",
                         hint="see torchvision.datasets, e.g. CIFAR10, FashionMNIST, FakeData")
    kwargs = dict(cfg.kwargs)
    if name == "FakeData":
        kwargs.setdefault("size", 256)
        kwargs.setdefault("image_size", (3, 32, 32))
        kwargs.setdefault("num_classes", 10)

        def build(train, tf):
            return cls(transform=tf, random_offset=0, **kwargs)

        return _from_datasets(name, build, cfg, seed, has_test_split=False)
    if not cfg.root:
        raise UsageError(f"data.source torchvision:{name} needs data.root (where the files are or go)")

    def build(train, tf):
        try:
            return cls(root=cfg.root, train=train, transform=tf, download=cfg.download, **kwargs)
        except RuntimeError as exc:
            raise InputFileError(f"dataset {name} not found under {cfg.root}: {exc}",
                                 hint="set data.download: true (needs internet) or point data.root "
                                      "at the extracted files") from None

    return _from_datasets(name, build, cfg, seed, has_test_split=True)


@SOURCES.register("imagefolder")
def _imagefolder(cfg, seed: int, root: str = "") -> DataSplits:
    import torchvision

    root = root or cfg.root
    if not root or not Path(root).is_dir():
        raise InputFileError(f"image folder not found: {root}",
                             hint="point data.source at imagefolder:<dir> with one sub-folder per class")

    def build(train, tf):
        try:
            return torchvision.datasets.ImageFolder(root, transform=tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise InputFileError(f"{root} is not a usable image folder: {exc}",
                                 hint="it needs one sub-folder per class holding image files") from None

    return _from_datasets(f"imagefolder:{Path(root).resolve()}", build, cfg, seed, has_test_split=False)


def _factory(spec: str, cfg, seed: int) -> DataSplits:
    from edgekd import factories

    result = factories.resolve(spec, "data.source")(**cfg.kwargs)
    if isinstance(result, dict):
        return _from_dict(spec, result, cfg, seed)
    x0 = _first_tensor(spec, result)
    labels = np.asarray(_targets(result))
    if cfg.limit:
        labels = labels[:cfg.limit]
    tr, va, te = stratified_split(labels, cfg.val_fraction, cfg.test_fraction, seed)
    ident = _identity(spec, cfg.kwargs, content_identity(result), cfg.limit, cfg.val_fraction, cfg.test_fraction, seed)
    classes = list(getattr(result, "classes", None) or [str(i) for i in range(int(labels.max()) + 1)])
    return DataSplits(Indexed(result, tr), Indexed(result, tr), Indexed(result, va), Indexed(result, te),
                      len(classes), tuple(x0.shape), [str(c) for c in classes], _factory_contract(x0), ident)


def _factory_contract(x0) -> ImagePreprocessing:
    """A factory's images are already the model's input: identity normalisation, no pixel range."""
    c, h, w = (int(d) for d in x0.shape)
    return ImagePreprocessing(h, w, c, (0.0,) * c, (1.0,) * c, pixel_max=None, pixel_min=None, scale=1.0,
                              pixel_dtype="float32", channel_order="L" if c == 1 else "RGB")


def _first_tensor(spec: str, dataset):
    """The first sample's image, which must be a (C, H, W) tensor (the factory applies its transforms)."""
    try:
        x0 = dataset[0][0]
    except (TypeError, IndexError, KeyError) as exc:
        raise UsageError(f"data factory '{spec}' must return a dataset of (image, label) items: {exc}") from None
    if getattr(x0, "ndim", None) != 3:
        raise UsageError(f"data factory '{spec}' yields {type(x0).__name__} images of shape "
                         f"{getattr(x0, 'shape', None)}, expected (C, H, W) float tensors",
                         hint="apply ToTensor()/normalisation inside the factory")
    return x0


def _from_dict(spec: str, parts: dict, cfg, seed: int) -> DataSplits:
    missing = [k for k in ("train", "val", "test") if k not in parts]
    if missing:
        raise UsageError(f"data factory '{spec}' returned a dict without {missing}")
    x0 = _first_tensor(spec, parts["train"])
    labels = np.asarray(_targets(parts["train"]))
    classes = parts.get("classes") or [str(i) for i in range(int(labels.max()) + 1)]
    pre = parts.get("preprocessing") or _factory_contract(x0)
    if not isinstance(pre, ImagePreprocessing):
        raise UsageError(f"data factory '{spec}': 'preprocessing' must be an ImagePreprocessing, got "
                         f"{type(pre).__name__}", hint="from edgekd.deploy.runtime.preprocess import ImagePreprocessing")
    ident = _identity(spec, cfg.kwargs, *(content_identity(parts[k]) for k in ("train", "val", "test")), seed)
    return DataSplits(Indexed(parts["train"]), Indexed(parts.get("train_eval", parts["train"])),
                      Indexed(parts["val"]), Indexed(parts["test"]), len(classes), tuple(x0.shape),
                      [str(c) for c in classes], pre, ident, augmented=bool(cfg.augment))


def load_data(cfg, seed: int = 0, progress: Callable | None = None) -> DataSplits:
    """Build the splits named by a recipe's ``data`` section; ``progress(name, total)`` (a UI's) shows long
    decoding."""
    token = _PROGRESS.set(progress)
    try:
        return _load(cfg, seed)
    finally:
        _PROGRESS.reset(token)


def _load(cfg, seed: int) -> DataSplits:
    scheme, colon, arg = cfg.source.partition(":")
    if scheme in SOURCES:
        return SOURCES.get(scheme)(cfg, seed, arg)
    if colon:
        return _factory(cfg.source, cfg, seed)
    raise UsageError(f"unknown data.source {cfg.source!r}{SOURCES.suggest(scheme)}",
                     hint=f"use {', '.join(SOURCES.names())} (with :<name> or :<dir> where they take one) or "
                          "package.module:function")


class TensorLoader:
    """Batches of an in-memory :class:`TensorSplit` by tensor indexing, in the order a DataLoader with the
    same sampler would give (no per-sample Python calls, no collation)."""

    def __init__(self, split: TensorSplit, batch_size: int, order, pin_memory: bool, drop_last: bool):
        self.split, self.batch_size, self.order = split, batch_size, order
        self.pin_memory, self.drop_last = pin_memory, drop_last

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        import torch

        idx = torch.as_tensor(list(self.order), dtype=torch.long)
        for batch in idx.split(self.batch_size):
            if self.drop_last and len(batch) < self.batch_size:
                return
            x, y = self.split.rows(batch), self.split.y[batch]
            if self.pin_memory:
                x = tuple(t.pin_memory() for t in x) if isinstance(x, tuple) else x.pin_memory()
                y = y.pin_memory()
            yield x, y, batch


def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, workers: int = 0,
                pin_memory: bool = False, sampler=None, drop_last: bool = False):
    """A loader whose shuffle order depends only on (seed, epoch): resumable and reproducible.

    In-memory splits are batched by indexing (:class:`TensorLoader`); others use a DataLoader.
    """
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if isinstance(dataset, TensorSplit):
        torch.empty((), dtype=torch.int64).random_(generator=gen)  # what a DataLoader draws first
        order = sampler if sampler is not None else \
            RandomSampler(dataset, generator=gen) if shuffle else range(len(dataset))
        return TensorLoader(dataset, batch_size, order, pin_memory and torch.cuda.is_available(), drop_last)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=gen, num_workers=workers, pin_memory=pin_memory, drop_last=drop_last,
                      persistent_workers=False)


def to_numpy(dataset, limit: int | None = None):
    """Stack a split (eval transform) into ``(x, y int64)``: ``x`` one array (float32 NCHW images), or a tuple of
    arrays when samples hold several inputs (token ids and a mask)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if isinstance(dataset, TensorSplit):
        x = tuple(t[:n].numpy() for t in dataset.x) if isinstance(dataset.x, tuple) else dataset.x[:n].numpy()
        return x, dataset.y[:n].numpy()
    xs, ys = zip(*[dataset[i][:2] for i in range(n)], strict=True)
    if isinstance(xs[0], tuple | list):
        return tuple(np.stack([np.asarray(x[k]) for x in xs]) for k in range(len(xs[0]))), np.asarray(ys, np.int64)
    return np.stack([np.asarray(x, dtype=np.float32) for x in xs]), np.asarray(ys, dtype=np.int64)


def to_device(x, device):
    """A batch's model input on ``device``: one tensor, or a tuple of tensors (several inputs)."""
    if isinstance(x, tuple | list):
        return tuple(t.to(device, non_blocking=True) for t in x)
    return x.to(device, non_blocking=True)


def call(model, x):
    """Run ``model`` on one input tensor or on a tuple of them (positional arguments, in input order)."""
    return model(*x) if isinstance(x, tuple | list) else model(x)
