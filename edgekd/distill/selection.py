"""Checkpoint selection (``train.select``): which epoch's weights a training keeps.

Each rule maps the epoch history (dicts with ``epoch``, ``val_top1``, ``val_loss``) to a score to maximise;
the trainer keeps the weights of the epoch with the highest score. The evidence behind the default is in
docs/distillation.md ("Which epoch is kept").

* ``last`` — the final epoch (with a cosine schedule the learning rate has annealed to ~0 there);
* ``best-val-loss`` — lowest validation cross-entropy (a smooth quantity: one image moves it little);
* ``best-val-top1`` — highest validation accuracy (on a few hundred images, one image is 0.4 points);
* ``smoothed-val-top1`` — highest validation accuracy averaged over the epoch and its two predecessors.

Imports numpy only.
"""

from __future__ import annotations

import numpy as np

from edgekd.deploy.registry import Registry

SELECTION: Registry = Registry("train.select")
SELECTION.register("last", lambda h: float(h[-1]["epoch"]))
SELECTION.register("best-val-loss", lambda h: -float(h[-1]["val_loss"]))
SELECTION.register("best-val-top1", lambda h: float(h[-1]["val_top1"]))
SELECTION.register("smoothed-val-top1", lambda h: float(np.mean([m["val_top1"] for m in h[-3:]])))
