"""Training objectives: what one step computes, as ``{"loss", "logits", "parts"}``.

* :class:`CEObjective` — plain cross-entropy (teacher and baseline);
* :class:`DistillObjective` — a KD loss from :mod:`edgekd.distill.losses` against a teacher source from
  :mod:`edgekd.distill.cache`; for feature losses it taps the student's and the teacher's named layers
  with forward hooks (:mod:`edgekd.distill.features`) during the step.

The trainer optimises ``objective.extra_parameters()`` with the model and checkpoints
``objective.state_dict()``.

Example:
    >>> source = TeacherCache([teacher], splits.train_eval, 256, "cpu")     # doctest: +SKIP
    >>> out = DistillObjective(KDLoss(4.0, 0.9), source)(student, x, y, idx)  # doctest: +SKIP
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from edgekd.data import call
from edgekd.deploy.errors import UsageError
from edgekd.distill.features import FeatureTaps


class CEObjective:
    """Plain cross-entropy (teacher and baseline training)."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def start_epoch(self, epoch: int) -> None:
        pass

    def __call__(self, model, x, y, idx) -> dict:
        logits = call(model, x)
        ce = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return {"loss": ce, "logits": logits, "parts": {"ce": ce.detach()}}


class DistillObjective:
    """Student logits vs. teacher outputs (from a cache or an online teacher) through a KD loss.

    For feature losses (``loss_fn.uses_features``) it taps the named student and teacher layers with
    forward hooks during the step; that needs an online teacher source. The loss's own parameters (FitNets
    projections) are exposed through :meth:`extra_parameters` and saved in checkpoints.
    """

    def __init__(self, loss_fn, teacher_source):
        self.loss_fn, self.teacher = loss_fn, teacher_source
        self.kind = getattr(teacher_source, "kind", "online")
        self.uses_features = bool(getattr(loss_fn, "uses_features", False))
        self._teacher_taps = None
        self._check_teachers()
        if self.uses_features:
            teachers = getattr(teacher_source, "teachers", None)
            if not teachers:
                raise UsageError(f"{type(loss_fn).__name__} needs teacher features, which a {self.kind} "
                                 "teacher source cannot give (a logit cache holds no features)",
                                 hint="run the teacher online: distill.cache: auto or off")
            self._teacher_taps = FeatureTaps(teachers[0], loss_fn.teacher_layers, "teacher")

    def _check_teachers(self) -> None:
        """Several teachers need the multi-teacher loss, which takes the source's mix weights."""
        k = getattr(self.teacher, "num_teachers", 1)
        multi = hasattr(self.loss_fn, "weights")
        if k > 1 and not multi:
            raise UsageError(f"{k} teachers given, but {type(self.loss_fn).__name__} distils from one",
                             hint="set distill.method: multi (or drop teacher.extra)")
        source_w = getattr(self.teacher, "weights", None)
        if multi and source_w is not None:
            if self.loss_fn.weights is None:
                self.loss_fn.weights = list(source_w)
            elif list(self.loss_fn.weights) != list(source_w):
                raise UsageError(f"teacher mix weights differ: loss {self.loss_fn.weights} vs teacher source "
                                 f"{list(source_w)}", hint="pass teacher.weights_mix in one place")

    def start_epoch(self, epoch: int) -> None:
        """Tell the teacher source which epoch starts (a cache of augmented views serves that epoch's view)."""
        getattr(self.teacher, "start_epoch", lambda e: None)(epoch)

    def __call__(self, model, x, y, idx) -> dict:
        if not self.uses_features:
            logits = call(model, x)
            out = self.loss_fn(logits, self.teacher(x, idx), y)
            return {"loss": out["loss"], "logits": logits, "parts": out["parts"]}
        with FeatureTaps(model, self.loss_fn.student_layers, "student") as s_taps:
            logits = call(model, x)
        with self._teacher_taps as t_taps:
            t_logits = self.teacher(x, idx)
        t_feats = [f.clone() for f in t_taps.outputs()]  # inference tensors -> normal tensors
        out = self.loss_fn(logits, t_logits, y, s_taps.outputs(), t_feats)
        return {"loss": out["loss"], "logits": logits, "parts": out["parts"]}

    def extra_parameters(self) -> list[nn.Parameter]:
        if not isinstance(self.loss_fn, nn.Module):
            return []
        return [p for p in self.loss_fn.parameters() if p.requires_grad]

    def state_dict(self) -> dict:
        return self.loss_fn.state_dict() if isinstance(self.loss_fn, nn.Module) else {}

    def load_state_dict(self, state: dict) -> None:
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn.load_state_dict(state)

    def to(self, device) -> DistillObjective:
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn.to(device)
        return self
