"""The trainer: one loop for the teacher, the baseline and the distilled student.

* SGD/AdamW (no weight decay on biases and norm weights); cosine, step or constant LR with linear
  warm-up; gradient clipping;
* early stopping and best-checkpoint selection on the validation split (never on test);
* CUDA: mixed precision (bf16 where supported, else fp16 with a scaler), channels_last, non_blocking
  copies, and the loss checked every few steps instead of a device sync per step;
* deterministic on CPU given a seed; the shuffle order depends only on (seed, epoch), and so does the batch
  augmentation of in-memory data (``augment``: :class:`edgekd.augment.EpochViews`);
* an atomic checkpoint every epoch (model, optimizer, scaler, loss state, epoch, RNG states, best metric)
  and ``resume=True`` continuing bit-identically on CPU;
* under torchrun: DistributedDataParallel, a DistributedSampler, validation accuracy summed over ranks,
  and rank 0 alone logs, reports and writes;
* the first non-finite loss stops training, naming the step and the loss term; non-finite weights are
  never saved.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgekd import distributed
from edgekd.checkpoint import rng_state, seed_everything, set_rng_state
from edgekd.data import call, make_loader, to_device
from edgekd.deploy.errors import InputFileError, NonFiniteError, ResumeError
from edgekd.deploy.torch_runner import torch_threads
from edgekd.distill.objectives import CEObjective, DistillObjective
from edgekd.distill.selection import SELECTION

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"
__all__ = ["CEObjective", "DistillObjective", "FitResult", "Reporter", "Trainer", "evaluate", "predict_logits",
           "resolve_device", "seed_everything"]


class Reporter:
    """Progress callbacks; the CLI passes one that draws bars. The default only logs."""

    def fit_start(self, name: str, epochs: int, steps_per_epoch: int) -> None:
        log.info("%s: %d epochs × %d steps", name, epochs, steps_per_epoch)

    def step(self, loss: float, acc: float) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict) -> None:
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})

    def fit_end(self) -> None:
        pass


class SilentReporter(Reporter):
    """What ranks other than 0 report: nothing."""

    def fit_start(self, name: str, epochs: int, steps_per_epoch: int) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict) -> None:
        pass


@dataclass
class FitResult:
    """The epoch whose weights were kept (``best_epoch``, by rule ``selected_by``) and its validation top-1."""

    best_val_top1: float
    best_epoch: int
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    selected_by: str = "last"
    best_score: float | None = None


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → this process's CUDA device if there is one, else CPU."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", distributed.local_rank()) if distributed.is_distributed() \
            else torch.device("cuda")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from edgekd.deploy.errors import ResourceError

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
    """SGD (Nesterov when momentum > 0) or AdamW; 0-/1-D tensors (biases, norms) get no weight decay."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


@torch.no_grad()
def _predict(model, dataset, batch_size: int, device, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = device or next(model.parameters()).device
    model.eval()
    logits, labels = [], []
    for x, y, _ in make_loader(dataset, batch_size, shuffle=False, workers=workers):
        logits.append(call(model, to_device(x, device)).float().cpu())
        labels.append(torch.as_tensor(y))
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def predict_logits(model, dataset, batch_size: int = 256, device=None, workers: int = 0) -> torch.Tensor:
    """The model's float32 logits over a split, on CPU, in index order."""
    return _predict(model, dataset, batch_size, device, workers)[0]


def evaluate(model, dataset, batch_size: int = 256, device=None, workers: int = 0) -> float:
    """Top-1 accuracy on a split."""
    logits, labels = _predict(model, dataset, batch_size, device, workers)
    if not len(labels):
        from edgekd.deploy.errors import UsageError

        raise UsageError("top-1 on an empty split: there is nothing to measure", hint="check data.limit and the "
                                                                                      "split fractions")
    return float((logits.argmax(1) == labels).float().mean())


class Trainer:
    """Train ``model`` on ``train_set`` with ``objective``, select the best epoch on ``val_set``.

    Example:
        >>> result = Trainer(model, splits.train, splits.val, recipe.train, CEObjective()).fit()  # doctest: +SKIP
    """

    def __init__(self, model, train_set, val_set, cfg, objective, *, name: str = "model", seed: int = 0,
                 batch_size: int = 64, eval_batch_size: int = 256, workers: int = 0, device=None,
                 checkpoint_dir: str | Path | None = None, fingerprint: dict | None = None,
                 reporter: Reporter | None = None, pin_memory: bool | None = None, augment=None):
        self.cfg, self.objective, self.name, self.seed = cfg, objective, name, seed
        self.augment = augment
        self.train_set, self.val_set = train_set, val_set
        self.batch_size, self.eval_batch_size, self.workers = batch_size, eval_batch_size, workers
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device)
        self.world = distributed.world_size()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.fingerprint = fingerprint or {}
        self.reporter = (reporter or Reporter()) if distributed.is_main() else SilentReporter()
        self.amp = amp_dtype(cfg, self.device)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type == "cuda"
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.module = model.to(self.device)
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = self._wrap(self.module)
        getattr(objective, "to", lambda d: None)(self.device)
        self.extra_params = list(getattr(objective, "extra_parameters", lambda: [])())
        self._broadcast(self.extra_params)  # DDP syncs the model; the loss's own parameters too
        self.optimizer = make_optimizer(cfg, list(self.module.parameters()) + self.extra_params)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp is torch.float16)
        per_rank = math.ceil(len(train_set) / self.world)
        self.steps_per_epoch = max(math.ceil(per_rank / batch_size), 1)
        self.sync_every = 1 if self.device.type == "cpu" else 25
        self.step, self.epoch, self.stopped = 0, 0, False
        self.best = (-1.0, -1)
        self.best_state: dict | None = None
        self.history: list[dict] = []
        self._pending: list[tuple] = []
        self._totals = [0.0, 0, 0]

    def _wrap(self, module):
        if not distributed.is_distributed():
            return module
        from torch.nn.parallel import DistributedDataParallel

        distributed.init()
        ids = [self.device.index] if self.device.type == "cuda" and self.device.index is not None else None
        return DistributedDataParallel(module, device_ids=ids)

    # ----------------------------------------------------------------------------------- checkpoints
    def _checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / CHECKPOINT if self.checkpoint_dir else None

    def save_checkpoint(self) -> None:
        """Write ``last.pt`` atomically (rank 0 only); refuses non-finite weights."""
        from edgekd.checkpoint import save_object
        from edgekd.deploy.export import check_finite_weights

        path = self._checkpoint_path()
        if path is None or not distributed.is_main():
            return
        check_finite_weights(self.module)
        loss_fn = getattr(self.objective, "loss_fn", None)
        if isinstance(loss_fn, torch.nn.Module):
            check_finite_weights(loss_fn)  # FitNets projections
        save_object({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                     "stopped": self.stopped, "best_metric": self.best[0], "best_epoch": self.best[1],
                     "best_state": self.best_state, "history": self.history, "rng": rng_state(),
                     "fingerprint": self.fingerprint,
                     "extra": getattr(self.objective, "state_dict", lambda: {})()}, path)

    def load_checkpoint(self) -> int:
        """Restore everything :meth:`save_checkpoint` wrote; returns the epoch it was written after."""
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
        if not isinstance(ck, dict):
            raise ResumeError(f"--resume: {path} is not an edgekd training checkpoint")
        self._check_fingerprint(ck.get("fingerprint", {}), path)
        try:
            self._restore(ck)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ResumeError(f"--resume: checkpoint {path} does not fit this run ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]})",
                              hint="resume with the same recipe, or start a new --out folder") from None
        if distributed.is_main():  # a kill inside a save leaves its temp file behind
            for stale in path.parent.glob(f".{CHECKPOINT}.*.tmp"):
                stale.unlink(missing_ok=True)
        log.info("%s: resumed from %s after epoch %d", self.name, path, self.epoch)
        return self.epoch

    def _restore(self, ck: dict) -> None:
        self.module.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        if ck.get("extra") and hasattr(self.objective, "load_state_dict"):
            self.objective.load_state_dict(ck["extra"])
        self.epoch, self.step, self.stopped = ck["epoch"], ck["step"], bool(ck.get("stopped", False))
        self.best = (ck["best_metric"], ck["best_epoch"])
        self.best_state, self.history = ck["best_state"], ck["history"]
        set_rng_state(ck["rng"])

    def _check_fingerprint(self, saved: dict, path: Path) -> None:
        diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}" for k, v in self.fingerprint.items()
                 if saved.get(k) != v]
        diffs += [f"{k}: checkpoint {v!r} vs now missing" for k, v in saved.items() if k not in self.fingerprint]
        if diffs:
            raise ResumeError(f"--resume refused for {self.name}: the run changed since {path}: "
                              + "; ".join(diffs), hint="resume with the same recipe, data and teacher, "
                                                       "or start a new --out folder")

    # -------------------------------------------------------------------------------------- training
    def _set_lr(self) -> None:
        factor = lr_factor(self.cfg, self.step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * factor

    def _train_step(self, x, y, idx) -> None:
        self._set_lr()
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.objective(self.model, x, y, idx)
        loss = out["loss"]
        correct = (out["logits"].detach().argmax(1) == y).sum()
        self._pending.append((self.step, loss.detach(), out["parts"], correct, len(y)))
        if len(self._pending) >= self.sync_every:
            self._flush()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self._sync_extra_grads()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1

    @staticmethod
    def _broadcast(tensors) -> None:
        """Copy rank 0's values to every rank (no-op outside torchrun)."""
        if not tensors or not distributed.is_distributed():
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def _sync_extra_grads(self) -> None:
        """Average the loss's own gradients (FitNets projections) over ranks: DDP covers only the model."""
        if not self.extra_params or not distributed.is_distributed():
            return
        import torch.distributed as dist

        for p in self.extra_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world

    def _flush(self) -> None:
        """Check the pending steps' losses (one device sync), then report them."""
        if not self._pending:
            return
        losses = torch.stack([p[1].float() for p in self._pending])
        bad = ~torch.isfinite(losses)
        flag = bad.any().float()
        if distributed.is_distributed():
            import torch.distributed as dist

            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            self._raise_non_finite(bad)
        corrects = torch.stack([p[3] for p in self._pending]).tolist()
        for (_, _, _, _, n), loss, c in zip(self._pending, losses.tolist(), corrects, strict=True):
            self._totals[0] += loss * n
            self._totals[1] += c
            self._totals[2] += n
            self.reporter.step(loss, self._totals[1] / self._totals[2])
        self._pending.clear()

    def _raise_non_finite(self, bad: torch.Tensor) -> None:
        if not bad.any():
            raise NonFiniteError(f"{self.name}: another rank hit a non-finite loss at epoch {self.epoch + 1}",
                                 hint="lower train.lr, set train.grad_clip, or check the input data")
        step, loss, parts, _, _ = self._pending[int(bad.nonzero()[0])]
        terms = [k for k, v in parts.items() if not torch.isfinite(v).all()] or ["loss"]
        raise NonFiniteError(f"{self.name}: non-finite loss {loss.item()} at epoch {self.epoch + 1}, step "
                             f"{step} (term(s): {', '.join(terms)})",
                             hint="lower train.lr, set train.grad_clip, or check the input data")

    def _loader(self):
        sampler = None
        if distributed.is_distributed():
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(self.train_set, num_replicas=self.world, rank=distributed.rank(),
                                         shuffle=True, seed=self.seed)
            sampler.set_epoch(self.epoch)
        return make_loader(self.train_set, self.batch_size, shuffle=True, seed=self.seed, epoch=self.epoch,
                           workers=self.workers, pin_memory=self.pin_memory, sampler=sampler)

    def _run_epoch(self) -> dict:
        self.model.train()
        self._totals = [0.0, 0, 0]
        getattr(self.objective, "start_epoch", lambda e: None)(self.epoch)
        for x, y, idx in self._loader():
            x = to_device(x, self.device)
            if self.augment is not None:
                x = self.augment(x, torch.as_tensor(idx), self.epoch)
            if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            self._train_step(x, y.to(self.device, non_blocking=True), idx)
        self._flush()
        self._broadcast(list(self.module.buffers()))  # BN statistics: every rank validates rank 0's model
        loss, correct, seen = self._totals
        return {"train_loss": loss / max(seen, 1), "train_top1": correct / max(seen, 1)}

    def _validate(self) -> tuple[float, float]:
        """Validation top-1 and cross-entropy; under torchrun each rank scores a shard and the sums are added."""
        from torch.utils.data import Subset

        shard = self.val_set if not distributed.is_distributed() else Subset(
            self.val_set, range(distributed.rank(), len(self.val_set), self.world))
        logits, labels = _predict(self.module, shard, self.eval_batch_size, self.device, self.workers)
        sums = torch.tensor([float((logits.argmax(1) == labels).sum()) if len(labels) else 0.0,
                             float(F.cross_entropy(logits, labels, reduction="sum")) if len(labels) else 0.0,
                             float(len(labels))], dtype=torch.float64)
        if distributed.is_distributed():
            import torch.distributed as dist

            on = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
            sums = sums.to(on)
            dist.all_reduce(sums)
        n = float(sums[2].clamp(min=1))
        return float(sums[0]) / n, float(sums[1]) / n

    def _end_epoch(self, metrics: dict) -> None:
        self.epoch += 1
        metrics["epoch"] = self.epoch
        self.history.append(metrics)
        score = SELECTION.get(self.cfg.select)(self.history)
        if score > self.best[0]:
            self.best = (score, self.epoch)
            self.best_state = {k: v.detach().clone().cpu() for k, v in self.module.state_dict().items()}
        self.reporter.epoch_end(self.epoch, metrics)
        patience = self.cfg.early_stop_patience
        # early stopping watches validation loss under "last" (which always improves), else the rule's score
        since = self._epochs_since_best_loss() if self.cfg.select == "last" else self.epoch - self.best[1]
        self.stopped = bool(patience) and since >= patience
        self.save_checkpoint()
        if self.stopped:
            log.info("%s: early stop at epoch %d (best %d)", self.name, self.epoch, self.best[1])

    def _epochs_since_best_loss(self) -> int:
        losses = [m["val_loss"] for m in self.history]
        return len(losses) - 1 - int(np.argmin(losses))

    def fit(self, resume: bool = False) -> FitResult:
        """Train to ``cfg.epochs`` (or an early stop); ``resume`` continues from ``checkpoint_dir``."""
        resumed = self.load_checkpoint() if resume else None
        if not resume:
            seed_everything(self.seed)
        with torch_threads(self.cfg.threads):  # set for this training when the recipe says; restored after
            self._fit_epochs()
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)
        kept = self.history[self.best[1] - 1]["val_top1"] if self.best[1] >= 1 else -1.0
        return FitResult(kept, self.best[1], self.epoch, self.history, self.stopped, resumed, self.cfg.select,
                         self.best[0])

    def _fit_epochs(self) -> None:
        self.reporter.fit_start(self.name, self.cfg.epochs, self.steps_per_epoch)
        while self.epoch < self.cfg.epochs and not self.stopped:
            metrics = self._run_epoch()
            metrics["val_top1"], metrics["val_loss"] = self._validate()
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            self._end_epoch(metrics)
        self.reporter.fit_end()
