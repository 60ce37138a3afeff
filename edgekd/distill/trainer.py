"""The trainer: one loop for the teacher, the baseline and the distilled student.

* SGD/AdamW; cosine, step or constant LR with linear warm-up; weight decay; gradient clipping;
* early stopping and best-checkpoint selection on the validation split (never on test);
* CUDA: mixed precision (bf16 where supported, else fp16 with a scaler), channels_last, non_blocking;
* deterministic on CPU given a seed; the shuffle order depends only on (seed, epoch);
* an atomic checkpoint every epoch (model, optimizer, scheduler, scaler, epoch, RNG states, best metric)
  and ``resume=True`` continuing bit-identically;
* the first non-finite loss stops training, naming the step and the loss term.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deploy.errors import InputFileError, NonFiniteError, ResumeError
from edgekd.data import make_loader

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"


class Reporter:
    """Progress callbacks; the CLI passes one that draws bars. The default only logs."""

    def fit_start(self, name: str, epochs: int, steps_per_epoch: int) -> None:
        log.info("%s: %d epochs × %d steps", name, epochs, steps_per_epoch)

    def step(self, loss: float, acc: float) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict) -> None:
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items()
                                         if isinstance(v, float)})

    def fit_end(self) -> None:
        pass


@dataclass
class FitResult:
    best_val_top1: float
    best_epoch: int
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from_epoch: int | None = None


class CEObjective:
    """Plain cross-entropy (teacher and baseline training)."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, model, x, y, idx) -> dict:
        logits = model(x)
        ce = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return {"loss": ce, "logits": logits, "parts": {"ce": ce.detach()}}


class DistillObjective:
    """Student logits vs. teacher logits (from a cache or an online teacher) through a KD loss."""

    def __init__(self, loss_fn, teacher_source):
        self.loss_fn, self.teacher = loss_fn, teacher_source

    def __call__(self, model, x, y, idx) -> dict:
        logits = model(x)
        out = self.loss_fn(logits, self.teacher(x, idx), y)
        return {"loss": out["loss"], "logits": logits, "parts": out["parts"]}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from deploy.errors import ResourceError

        raise ResourceError(f"train.device is '{name}' but no CUDA GPU is available here",
                            hint="set train.device: auto (or cpu)")
    return dev


def amp_dtype(cfg, device: torch.device):
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def lr_factor(cfg, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine / step / constant, as a multiplier of ``cfg.lr``."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if warm and step < warm:
        return (step + 1) / warm
    total = max(cfg.epochs * steps_per_epoch - warm, 1)
    t = min(max(step - warm, 0) / total, 1.0)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.schedule == "step":
        return cfg.gamma ** (step // (cfg.step_size * steps_per_epoch))
    return 1.0


def make_optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def predict_logits(model, dataset, batch_size: int = 256, device=None, workers: int = 0) -> torch.Tensor:
    device = device or next(model.parameters()).device
    model.eval()
    outs = [model(x.to(device)).float().cpu()
            for x, _, _ in make_loader(dataset, batch_size, shuffle=False, workers=workers)]
    return torch.cat(outs)


def evaluate(model, dataset, batch_size: int = 256, device=None, workers: int = 0) -> float:
    """Top-1 accuracy on a split."""
    logits = predict_logits(model, dataset, batch_size, device, workers)
    labels = torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))]) if not hasattr(dataset, "y") \
        else dataset.y
    return float((logits.argmax(1) == labels).float().mean())


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
            "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((s["python_version"], tuple(s["python"]), s["python_gauss"]))
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train ``model`` on ``train_set`` with ``objective``, select the best epoch on ``val_set``.

    Example:
        >>> result = Trainer(model, splits.train, splits.val, recipe.train, CEObjective()).fit()  # doctest: +SKIP
    """

    def __init__(self, model, train_set, val_set, cfg, objective, *, name: str = "model", seed: int = 0,
                 batch_size: int = 64, eval_batch_size: int = 256, workers: int = 0, device=None,
                 checkpoint_dir: str | Path | None = None, fingerprint: dict | None = None,
                 reporter: Reporter | None = None, pin_memory: bool | None = None):
        self.cfg, self.objective, self.name, self.seed = cfg, objective, name, seed
        self.train_set, self.val_set = train_set, val_set
        self.batch_size, self.eval_batch_size, self.workers = batch_size, eval_batch_size, workers
        self.device = device or resolve_device(cfg.device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.fingerprint = fingerprint or {}
        self.reporter = reporter or Reporter()
        self.amp = amp_dtype(cfg, self.device)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type == "cuda"
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(cfg, [p for p in self.model.parameters() if p.requires_grad]
                                        + list(getattr(objective, "extra_parameters", lambda: [])()))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        self.steps_per_epoch = max(len(train_set) // batch_size + (len(train_set) % batch_size > 0), 1)
        self.step = 0
        self.epoch = 0
        self.best = (-1.0, -1)
        self.best_state: dict | None = None
        self.history: list[dict] = []

    # ----------------------------------------------------------------------------------- checkpoints
    def _checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / CHECKPOINT if self.checkpoint_dir else None

    def save_checkpoint(self) -> None:
        from deploy.export import check_finite_weights
        from edgekd.checkpoint import save_object

        path = self._checkpoint_path()
        if path is None:
            return
        check_finite_weights(self.model)
        save_object({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                     "best_metric": self.best[0], "best_epoch": self.best[1], "best_state": self.best_state,
                     "history": self.history, "rng": _rng_state(), "fingerprint": self.fingerprint,
                     "extra": getattr(self.objective, "state_dict", lambda: {})()}, path)

    def load_checkpoint(self) -> int:
        from edgekd.checkpoint import load_tensors

        path = self._checkpoint_path()
        if path is None or not path.exists():
            raise ResumeError(f"--resume: no checkpoint for {self.name} at {path}",
                              hint="run without --resume to start from scratch")
        try:
            ck = load_tensors(path)
        except InputFileError as exc:
            raise ResumeError(f"--resume: checkpoint {path} is corrupt ({exc.message})",
                              hint="delete it and run without --resume") from None
        self._check_fingerprint(ck.get("fingerprint", {}), path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        if ck.get("extra") and hasattr(self.objective, "load_state_dict"):
            self.objective.load_state_dict(ck["extra"])
        self.epoch, self.step = ck["epoch"], ck["step"]
        self.best, self.best_state, self.history = (ck["best_metric"], ck["best_epoch"]), ck["best_state"], \
            ck["history"]
        _set_rng_state(ck["rng"])
        log.info("%s: resumed from %s after epoch %d", self.name, path, self.epoch)
        return self.epoch

    def _check_fingerprint(self, saved: dict, path: Path) -> None:
        diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}" for k, v in self.fingerprint.items()
                 if saved.get(k) != v]
        if diffs:
            raise ResumeError(f"--resume refused for {self.name}: the run changed since {path}: "
                              + "; ".join(diffs), hint="resume with the same recipe, data and teacher, "
                                                       "or start a new --out folder")

    # -------------------------------------------------------------------------------------- training
    def _set_lr(self) -> None:
        factor = lr_factor(self.cfg, self.step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * factor

    def _train_step(self, x, y, idx) -> tuple[float, int]:
        self._set_lr()
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.objective(self.model, x, y, idx)
        loss = out["loss"]
        if not torch.isfinite(loss):
            bad = [k for k, v in out["parts"].items() if not torch.isfinite(v).all()] or ["loss"]
            raise NonFiniteError(f"{self.name}: non-finite loss {loss.item()} at epoch {self.epoch + 1}, step "
                                 f"{self.step} (term(s): {', '.join(bad)})",
                                 hint="lower train.lr, set train.grad_clip, or check the input data")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        correct = int((out["logits"].detach().argmax(1) == y).sum())
        return float(loss.detach()), correct

    def _run_epoch(self) -> dict:
        self.model.train()
        loader = make_loader(self.train_set, self.batch_size, shuffle=True, seed=self.seed, epoch=self.epoch,
                             workers=self.workers, pin_memory=self.pin_memory)
        total_loss, correct, seen = 0.0, 0, 0
        for x, y, idx in loader:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(self.device, non_blocking=True)
            loss, c = self._train_step(x, y, idx)
            total_loss += loss * len(y)
            correct += c
            seen += len(y)
            self.reporter.step(loss, correct / seen)
        return {"train_loss": total_loss / max(seen, 1), "train_top1": correct / max(seen, 1)}

    def fit(self, resume: bool = False) -> FitResult:
        resumed = self.load_checkpoint() if resume else None
        if not resume:
            seed_everything(self.seed)
        self.reporter.fit_start(self.name, self.cfg.epochs, self.steps_per_epoch)
        stopped = False
        while self.epoch < self.cfg.epochs:
            metrics = self._run_epoch()
            metrics["val_top1"] = evaluate(self.model, self.val_set, self.eval_batch_size, self.device)
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            self.epoch += 1
            metrics["epoch"] = self.epoch
            self.history.append(metrics)
            if metrics["val_top1"] > self.best[0]:
                self.best = (metrics["val_top1"], self.epoch)
                self.best_state = {k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()}
            self.reporter.epoch_end(self.epoch, metrics)
            patience = self.cfg.early_stop_patience
            stopped = bool(patience) and self.epoch - self.best[1] >= patience
            self.save_checkpoint()
            if stopped:
                log.info("%s: early stop at epoch %d (best %d)", self.name, self.epoch, self.best[1])
                break
        self.reporter.fit_end()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return FitResult(self.best[0], self.best[1], self.epoch, self.history, stopped, resumed)
