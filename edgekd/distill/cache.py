"""Teacher outputs, computed once when they cannot change between epochs.

With train-time augmentation off, a teacher's logits for sample *i* are the same every epoch, so
:class:`TeacherCache` computes them once (in memory, or memory-mapped on disk for big data) and the
trainer looks them up by index. With augmentation on, :class:`OnlineTeacher` runs the teacher under
``torch.inference_mode()`` on the same (augmented) batch. ``kind`` says which path ran (for the report).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


@torch.inference_mode()
def teacher_logits(teachers, dataset, batch_size: int, device, weights=None, workers: int = 0) -> torch.Tensor:
    """Weighted mean of the teachers' logits over ``dataset`` in index order, on CPU, float32."""
    from edgekd.data import make_loader

    outs = []
    for x, _, _ in make_loader(dataset, batch_size, shuffle=False, workers=workers):
        outs.append(combine([t(x.to(device)) for t in teachers], weights).float().cpu())
    return torch.cat(outs)


def combine(logits: list[torch.Tensor], weights=None) -> torch.Tensor:
    if len(logits) == 1:
        return logits[0]
    w = weights or [1.0 / len(logits)] * len(logits)
    return sum(wi * li.float() for wi, li in zip(w, logits))


class TeacherCache:
    """Logits of (possibly several) teachers, keyed by sample index."""

    kind = "cache"

    def __init__(self, teachers, dataset, batch_size: int, device, weights=None, disk_path: Path | None = None,
                 workers: int = 0):
        for t in teachers:
            t.eval()
        logits = teacher_logits(teachers, dataset, batch_size, device, weights, workers)
        if disk_path is not None:
            disk_path = Path(disk_path)
            disk_path.parent.mkdir(parents=True, exist_ok=True)
            mm = np.lib.format.open_memmap(disk_path, mode="w+", dtype=np.float32, shape=tuple(logits.shape))
            mm[:] = logits.numpy()
            mm.flush()
            del mm
            self.kind = "cache-disk"
            self._store = np.load(disk_path, mmap_mode="r")
        else:
            self.kind = "cache-memory"
            self._store = logits
        log.info("teacher logits cached for %d samples (%s)", len(logits), self.kind)

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if isinstance(self._store, np.ndarray):
            rows = torch.from_numpy(np.ascontiguousarray(self._store[idx.cpu().numpy()]))
        else:
            rows = self._store[idx.cpu()]
        return rows.to(x.device, non_blocking=True)


class OnlineTeacher:
    """Run the teacher(s) on each (augmented) batch under ``torch.inference_mode()``."""

    kind = "online"

    def __init__(self, teachers, weights=None):
        self.teachers, self.weights = teachers, weights
        for t in teachers:
            t.eval()

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = combine([t(x) for t in self.teachers], self.weights)
        return out.clone()
