"""Seeded, batched image augmentation whose every view can be replayed: random crop with padding and
horizontal flip, computed on whole batches of in-memory tensors (no PIL, no per-sample Python).

View ``v`` of sample ``i`` is a pure function of ``(seed, i, v)``: the trainer shows the student view
``epoch mod K`` of each image, and the teacher-output cache (:class:`edgekd.distill.cache.ViewCache`) holds the
teacher's logits for exactly those K views — so caching the teacher and augmenting the data combine.

Example:
    >>> aug = Augmentation(padding=2, flip=True, fill=(-0.81,), seed=0)
    >>> x = torch.zeros(4, 1, 28, 28)                      # doctest: +SKIP
    >>> aug(x, torch.arange(4), view=3).shape              # doctest: +SKIP
    torch.Size([4, 1, 28, 28])
"""

from __future__ import annotations

from dataclasses import dataclass, field

_M1, _M2 = 0x7FB5D329728EA185, 0x81DADEF4BC2DD44D - (1 << 64)  # splitmix-style odd constants, as int64


@dataclass(frozen=True)
class Augmentation:
    """Random crop after padding by ``padding`` pixels (0: none) with ``fill`` (per channel: a black pixel after
    normalisation) and, with ``flip``, a horizontal flip with probability ½ — per sample, seeded by
    ``(seed, sample index, view)``."""

    padding: int = 0
    flip: bool = False
    fill: tuple[float, ...] = field(default=(0.0,))
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.padding > 0 or self.flip

    def describe(self) -> str:
        parts = ([f"random crop with {self.padding}-pixel padding"] if self.padding else []) + (
            ["horizontal flip"] if self.flip else [])
        return ", ".join(parts) or "none"

    def __call__(self, x, idx, view):
        """Augment a batch ``x`` (B, C, H, W) of samples ``idx`` (their indices in the split) as view ``view``
        (an int, or one per sample)."""
        import torch

        if not self.active:
            return x
        h = _mix(idx.cpu().to(torch.int64) * 1_000_003 + torch.as_tensor(view, dtype=torch.int64) * 7_919
                 + self.seed)
        if self.padding:
            x = _crop(x, h, self.padding, torch.tensor(self.fill))
        if self.flip:
            flip = ((h >> 40) & 1).bool().to(x.device)[:, None, None, None]
            x = torch.where(flip, x.flip(-1), x)
        return x


def _mix(a):
    """A hash of int64 tensors (wrapping arithmetic), non-negative."""
    a = a * _M1
    a = (a ^ (a >> 31)) * _M2
    return (a ^ (a >> 29)) & ((1 << 62) - 1)


def _crop(x, h, p: int, fill):
    import torch

    b, c, height, width = x.shape
    padded = fill.to(x.device, x.dtype).view(1, -1, 1, 1).expand(b, c, height + 2 * p, width + 2 * p).clone()
    padded[..., p:p + height, p:p + width] = x
    dy, dx = (h % (2 * p + 1)).to(x.device), ((h >> 20) % (2 * p + 1)).to(x.device)
    rows = dy[:, None] + torch.arange(height, device=x.device)
    cols = dx[:, None] + torch.arange(width, device=x.device)
    out = padded[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


class EpochViews:
    """The trainer's augmentation: epoch ``e`` shows view ``e mod views`` of every sample (``views`` None: a
    fresh view each epoch). A teacher-output cache of ``views`` views replays exactly these."""

    def __init__(self, augmentation: Augmentation, views: int | None = None):
        self.augmentation, self.views = augmentation, views

    def view(self, epoch: int) -> int:
        return epoch % self.views if self.views else epoch

    def __call__(self, x, idx, epoch: int):
        return self.augmentation(x, idx, self.view(epoch))
