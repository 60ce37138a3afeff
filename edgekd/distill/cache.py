"""Teacher outputs, computed once when they cannot change between epochs.

With train-time augmentation off, a teacher's logits for sample *i* are the same every epoch, so
:class:`TeacherCache` computes them once (in memory, or memory-mapped on disk for big data) and the
trainer looks them up by index. With augmentation on, or for feature methods (FitNets, AT: features
cannot come from a logit cache), :class:`OnlineTeacher` runs the teacher under ``torch.inference_mode()``
on the same (augmented) batch. ``kind`` says which path ran (for the report).

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


def teacher_logits(teachers, dataset, batch_size: int, device, weights=None, workers: int = 0) -> torch.Tensor:
    """Every teacher's logits over ``dataset`` in index order, on CPU, float32: (N, C) or (N, K, C).

    ``weights`` is accepted for backward compatibility and not used (see the module docstring).
    """
    from edgekd.data import call, make_loader, to_device

    outs = []
    with torch.inference_mode():
        for x, _, _ in make_loader(dataset, batch_size, shuffle=False, workers=workers):
            x = to_device(x, device)
            outs.append(stack([call(t, x).float() for t in teachers]).cpu())
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
    """Logits of (possibly several) teachers, keyed by sample index; ``kind`` is cache-memory/cache-disk.

    With ``disk_path`` the logits live in a ``.npy`` file opened memory-mapped. Under torchrun only rank 0
    writes that file; the others wait for it and open it.
    """

    kind = "cache"

    def __init__(self, teachers, dataset, batch_size: int, device, weights=None, disk_path: Path | None = None,
                 workers: int = 0):
        from edgekd import distributed

        for t in teachers:
            t.eval()
        self.weights, self.num_teachers = weights, len(teachers)
        if disk_path is None:
            self.kind = "cache-memory"
            self._store = teacher_logits(teachers, dataset, batch_size, device, workers=workers)
        else:
            disk_path = Path(disk_path)
            if distributed.is_main():
                logits = teacher_logits(teachers, dataset, batch_size, device, workers=workers)
                _write_memmap(disk_path, logits.numpy())
            distributed.barrier()
            self.kind = "cache-disk"
            self._store = np.load(disk_path, mmap_mode="r")
        log.info("teacher logits cached for %d samples (%s)", len(self._store), self.kind)

    def __len__(self) -> int:
        return len(self._store)

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if isinstance(self._store, np.ndarray):
            rows = torch.from_numpy(np.ascontiguousarray(self._store[idx.cpu().numpy()]))
        else:
            rows = self._store[idx.cpu()]
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
                        disk_path: Path | None = None, num_classes: int | None = None):
    """Pick the teacher path a recipe asks for (``distill.cache``) and the data allows.

    ``off`` → online; ``auto`` → online with augmentation or feature methods, else cached in memory
    (memory-mapped at ``disk_path`` when the logits would exceed :data:`MEMORY_LIMIT_BYTES`);
    ``memory``/``disk`` → cached, refused with augmentation or feature methods.

    Raises:
        UsageError: a cache was asked for where cached logits would be wrong.
    """
    if cache in ("memory", "disk") and (augmented or needs_features):
        why = "train-time augmentation is on" if augmented else "the method needs teacher features"
        raise UsageError(f"distill.cache: {cache} cannot be used because {why}: the teacher must run on "
                         "every batch", hint="set distill.cache: auto (or off)")
    if cache == "off" or augmented or needs_features:
        return OnlineTeacher(teachers)
    if cache == "disk" or (cache == "auto" and disk_path is not None
                           and _cache_bytes(len(dataset), len(teachers), num_classes) > MEMORY_LIMIT_BYTES):
        if disk_path is None:
            raise UsageError("distill.cache: disk needs a folder for the cache file (the run's --out)")
        return TeacherCache(teachers, dataset, batch_size, device, disk_path=disk_path, workers=workers)
    return TeacherCache(teachers, dataset, batch_size, device, workers=workers)


def _cache_bytes(n: int, k: int, num_classes: int | None) -> int:
    return n * k * (num_classes or 1000) * 4
