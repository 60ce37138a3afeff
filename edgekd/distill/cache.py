"""Teacher outputs, computed once when they cannot change between epochs.

With train-time augmentation off, a teacher's logits for sample *i* are the same every epoch, so
:class:`TeacherCache` computes them once (in memory, or memory-mapped on disk for big data) and the
trainer looks them up by index. With replayable batch augmentation (in-memory data,
:class:`edgekd.augment.EpochViews`), it computes the logits of a fixed set of K augmented *views* of every
sample and epoch *e* replays view ``e mod K`` — the student sees exactly the images whose teacher outputs
are cached, so caching keeps what augmentation gives KD (with K ≥ epochs it is the online teacher, computed
once for every seed). With per-sample augmentation (file-backed data), or for feature methods (FitNets, AT:
features cannot come from a logit cache), :class:`OnlineTeacher` runs the teacher under
``torch.inference_mode()`` on the same (augmented) batch. ``kind`` says which path ran (for the report).

Both sources return the logits of one teacher as (B, C) and of K > 1 teachers stacked as (B, K, C): the
multi-teacher loss averages the teachers' *softened probabilities* (at its temperature), which needs each
teacher's logits, so the cache stores all K of them. ``weights`` (``teacher.weights_mix``) are applied by
that loss, not here: :class:`~edgekd.distill.trainer.DistillObjective` hands a source's weights to a
multi-teacher loss built without any.

Example:
    >>> source = make_teacher_source([teacher], splits.train, cache="auto", augmented=False,
    ...                              batch_size=256, device="cpu")        # doctest: +SKIP
    >>> source.kind
    'cache-memory'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from edgekd.deploy.errors import UsageError

log = logging.getLogger(__name__)

#: ``cache: auto`` keeps the logits in memory below this size and memory-maps them on disk above it.
MEMORY_LIMIT_BYTES = 2 << 30


def stack(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """One teacher's (B, C) logits as they are; several stacked as (B, K, C)."""
    return logits[0] if len(logits) == 1 else torch.stack(list(logits), dim=1)


def combine(logits: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """The ensemble's prediction as log-probabilities: ``log Σ_k w_k softmax(z_k)`` (for top-1)."""
    from edgekd.distill.losses import mixture_log_probs

    if len(logits) == 1:
        return logits[0]
    return mixture_log_probs(torch.stack(list(logits), dim=1), 1.0, weights)


def teacher_logits(teachers, dataset, batch_size: int, device, weights=None, workers: int = 0, augment=None,
                   progress=None) -> torch.Tensor:
    """Every teacher's logits over ``dataset`` in index order, on CPU, float32: (N, C) or (N, K, C).

    ``augment(x, idx)`` transforms each batch first (one augmented view); ``progress`` (``advance()``) is told
    about every batch. ``weights`` is accepted for backward compatibility and not used (see the module
    docstring).
    """
    from edgekd.data import call, make_loader, to_device

    outs = []
    with torch.inference_mode():
        for x, _, idx in make_loader(dataset, batch_size, shuffle=False, workers=workers):
            x = to_device(x, device)
            if augment is not None:
                x = augment(x, torch.as_tensor(idx))
            outs.append(stack([call(t, x).float() for t in teachers]).cpu())
            if progress is not None:
                progress.advance()
    return torch.cat(outs).clone()


def _write_memmap(path: Path, array: np.ndarray) -> None:
    from edgekd.deploy.fileio import atomic_write_via

    def writer(tmp: Path) -> None:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=array.shape)
        mm[:] = array
        mm.flush()
        del mm

    atomic_write_via(path, writer)


class TeacherCache:
    """Logits of (possibly several) teachers, keyed by sample index — and, with ``views`` (an
    :class:`~edgekd.augment.EpochViews` of K views), by augmented view; ``kind`` is cache-memory/cache-disk.

    The store is (V, N, C) or (V, N, K, C) with V = 1 without augmentation. The trainer calls
    :meth:`start_epoch`, which picks the view its augmentation shows that epoch. With ``disk_path`` the logits
    live in a ``.npy`` file opened memory-mapped; a file of the right shape already there (its name is the
    cache key: teacher, data and augmentation) is reused. Under torchrun only rank 0 writes it; the others wait
    for it and open it.
    """

    kind = "cache"

    def __init__(self, teachers, dataset, batch_size: int, device, weights=None, disk_path: Path | None = None,
                 workers: int = 0, views=None, progress=None):
        from edgekd import distributed

        for t in teachers:
            t.eval()
        self.weights, self.num_teachers, self.views, self.view = weights, len(teachers), views, 0
        count = views.views if views is not None else 1
        if views is not None and not views.views:
            raise UsageError("a teacher-output cache of augmented views needs a fixed number of views",
                             hint="set distill.cache_views")
        steps = count * -(-len(dataset) // batch_size)
        bar = progress("teacher outputs", steps) if progress else None

        def compute() -> torch.Tensor:
            if views is None:
                return teacher_logits(teachers, dataset, batch_size, device, workers=workers, progress=bar)[None]
            return torch.stack([teacher_logits(teachers, dataset, batch_size, device, workers=workers,
                                               augment=lambda x, idx, v=v: views.augmentation(x, idx, v),
                                               progress=bar) for v in range(count)])

        try:
            if disk_path is None:
                self.kind = "cache-memory"
                self._store = compute()
            else:
                disk_path = Path(disk_path)
                if distributed.is_main() and not _reusable(disk_path, count, len(dataset)):
                    _write_memmap(disk_path, compute().numpy())
                distributed.barrier()
                self.kind = "cache-disk"
                self._store = np.load(disk_path, mmap_mode="r")
        finally:
            if bar:
                bar.close()
        log.info("teacher logits cached for %d samples × %d view(s) (%s)", len(self), count, self.kind)

    def __len__(self) -> int:
        return self._store.shape[1]

    def start_epoch(self, epoch: int) -> None:
        """Serve the view the trainer's augmentation shows in ``epoch`` (0 without augmentation)."""
        self.view = self.views.view(epoch) if self.views is not None else 0

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if isinstance(self._store, np.ndarray):
            rows = torch.from_numpy(np.ascontiguousarray(self._store[self.view][idx.cpu().numpy()]))
        else:
            rows = self._store[self.view][idx.cpu()]
        device = x[0].device if isinstance(x, tuple | list) else x.device
        return rows.to(device, non_blocking=True)


class OnlineTeacher:
    """Run the teacher(s) on each (augmented) batch under ``torch.inference_mode()``."""

    kind = "online"

    def __init__(self, teachers, weights=None):
        self.teachers, self.weights = list(teachers), weights
        self.num_teachers = len(self.teachers)
        for t in self.teachers:
            t.eval()

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        from edgekd.data import call

        with torch.inference_mode():
            out = stack([call(t, x) for t in self.teachers])
        return out.clone()


def make_teacher_source(teachers, dataset, *, cache: str = "auto", augmented: bool = False,
                        needs_features: bool = False, batch_size: int = 256, device="cpu", workers: int = 0,
                        disk_path: Path | None = None, num_classes: int | None = None, views=None,
                        progress=None):
    """Pick the teacher path a recipe asks for (``distill.cache``) and the data allows.

    ``views`` (:class:`~edgekd.augment.EpochViews`) is the trainer's replayable augmentation; ``augmented``
    means the data augments itself per sample (not replayable). ``off`` → online; ``auto`` → online with
    per-sample augmentation or feature methods, else cached in memory — every view of ``views`` — and
    memory-mapped at ``disk_path`` when the logits would exceed :data:`MEMORY_LIMIT_BYTES`;
    ``memory``/``disk`` → cached, refused where the cache could not hold what the teacher would see.

    Raises:
        UsageError: a cache was asked for where cached logits would be wrong.
    """
    replayable = views is not None
    if cache in ("memory", "disk") and ((augmented and not replayable) or needs_features):
        why = ("the data is augmented per sample (file-backed; data.in_memory: on makes augmentation replayable)"
               if not needs_features else "the method needs teacher features")
        raise UsageError(f"distill.cache: {cache} cannot be used because {why}: the teacher must run on "
                         "every batch", hint="set distill.cache: auto (or off)")
    if cache == "off" or (augmented and not replayable) or needs_features:
        return OnlineTeacher(teachers)
    count = views.views if replayable else 1
    if cache == "disk" or (cache == "auto" and disk_path is not None and _cache_bytes(
            len(dataset), len(teachers), num_classes) * count > MEMORY_LIMIT_BYTES):
        if disk_path is None:
            raise UsageError("distill.cache: disk needs a folder for the cache file (the run's --out)")
        return TeacherCache(teachers, dataset, batch_size, device, disk_path=disk_path, workers=workers,
                            views=views, progress=progress)
    return TeacherCache(teachers, dataset, batch_size, device, workers=workers, views=views, progress=progress)


def _reusable(path: Path, views: int, n: int) -> bool:
    """A cache file of this key with the expected leading shape (views, samples) is complete: it is written
    atomically under a name that digests the teacher, the data and the augmentation."""
    if not path.is_file():
        return False
    try:
        return np.load(path, mmap_mode="r").shape[:2] == (views, n)
    except (OSError, ValueError):
        return False


def _cache_bytes(n: int, k: int, num_classes: int | None) -> int:
    return n * k * (num_classes or 1000) * 4
