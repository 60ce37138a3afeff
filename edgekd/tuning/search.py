"""The distillation search (the ``tune`` stage): Optuna's TPE sampler over the knobs of
:mod:`edgekd.tuning.space`, a pruner fed each epoch's validation top-1, and Optuna's own storage.

* **Objective**: the best validation top-1 of the trial's epochs — the number the trainer already selects
  the epoch by and the bundle rule judges by, so the search optimises what the pipeline ships. (Validation
  loss would reward confident-but-wrong students and does not compare across temperatures and methods,
  whose losses are on different scales.) Ties keep the earlier trial, and the recipe's own configuration
  is trial 0 when it lies inside the search space, so a change of knobs must *beat* it on validation.
* **Pruning**: a :class:`PruningReporter` (the trainer's progress hook, no trainer fork) reports the best
  validation top-1 so far after every epoch and stops the trial when the pruner says so.
* **Storage and resume**: ``sqlite:///RUN/tune.db`` by default, any RDB URL with ``tune.storage``; the
  study is named by what its trials depend on (data, teacher, student, the fixed recipe keys and the
  search space — not the budget), created with ``load_if_exists``. Finished trials (complete or pruned)
  count against ``tune.trials``; ``tune.timeout_s`` counts their summed duration, so a resumed search runs
  only what is left. A trial left RUNNING by a killed process on this machine is marked failed at once
  (its process is gone) and its knobs are queued again. One left by a process on *another* machine stays
  RUNNING (it never counts as finished, so the budget is still met): Optuna's heartbeat, which would fail
  it, is experimental in Optuna 4–5 and warns on every use.

Example:
    >>> art = run_search(ctx)  # doctest: +SKIP  (the tune stage; see edgekd.tuning.tune)
"""

from __future__ import annotations

import logging
import os
import socket

from edgekd.artifacts import Knobs, TrialResult, TuneArtifact
from edgekd.deploy.errors import NonFiniteError, require
from edgekd.distill.trainer import Reporter
from edgekd.tuning import PRUNERS
from edgekd.tuning.space import default_knobs, default_params, knobs_from_params, suggest, trial_epochs

log = logging.getLogger(__name__)

OBJECTIVE = "best validation top-1 over the trial's epochs (maximised)"


class Pruned(Exception):
    """Raised inside the trainer's epoch hook when the pruner stops a trial."""


class PruningReporter(Reporter):
    """Reports the best validation top-1 so far to the Optuna trial after every epoch; raises :class:`Pruned`
    when the trial should stop."""

    def __init__(self, trial):
        self.trial, self.best, self.epochs = trial, 0.0, 0

    def fit_start(self, name: str, epochs: int, steps_per_epoch: int) -> None:
        pass

    def epoch_end(self, epoch: int, metrics: dict) -> None:
        self.best, self.epochs = max(self.best, float(metrics["val_top1"])), epoch
        self.trial.report(self.best, epoch)
        if self.trial.should_prune():
            raise Pruned(f"pruned after epoch {epoch} (best validation top-1 {self.best:.2%})")


# ------------------------------------------------------------------------------------------- pruners
def median_pruner(epochs: int, trials: int | None):
    """Stop a trial whose best-so-far is below the median of earlier trials at the same epoch (after a few
    complete trials and the first third of the epochs)."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=_startup(trials), n_warmup_steps=max(epochs // 3, 1))


def hyperband_pruner(epochs: int, trials: int | None):
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)


def none_pruner(epochs: int, trials: int | None):
    import optuna

    return optuna.pruners.NopPruner()


def _startup(trials: int | None) -> int:
    """Random trials before TPE (and the median pruner) start modelling: a third of the budget, 2 to 10."""
    return min(max((trials or 30) // 3, 2), 10)


# ------------------------------------------------------------------------------------------- storage
def storage_url(cfg, run) -> str:
    return cfg.storage or f"sqlite:///{run.tune_db.resolve()}"


def shown_url(url: str, run) -> str:
    """The storage as a record may show it: the run folder's own database relative, passwords hidden."""
    if url == f"sqlite:///{run.tune_db.resolve()}":
        return f"sqlite:///{run.tune_db.name} (in the run folder)"
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def study_name(recipe, select, identity: str) -> str:
    """Named by what the trials depend on; the budget (trials, timeout, storage, pruner) is not part of it,
    so raising the budget continues the same study."""
    from edgekd.runfolder import digest_of
    from edgekd.tuning.space import student_spec

    t = recipe.tune
    space = {k: getattr(t, k) for k in ("methods", "temperature", "alpha", "lr", "epochs", "epochs_per_trial")}
    fixed = {k: getattr(recipe, k) for k in ("seed", "teacher", "distill", "train")}
    return f"{recipe.name}-{digest_of([space, fixed, student_spec(recipe, select), identity])}"


def open_storage(recipe, run):
    """Optuna's storage for ``tune.storage`` (default: the run folder's SQLite file)."""
    optuna = require("optuna", "tune", "edgekd tune (the distillation search)")
    optuna.logging.disable_default_handler()  # Optuna's messages go through logging: the CLI decides;
    optuna.logging.enable_propagation()       # its per-trial INFO lines repeat the stage's own trial lines
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.RDBStorage(storage_url(recipe.tune, run))


def open_study(recipe, storage, name: str, epochs: int):
    """Create or load the study, then attach the recipe's pruner and a TPE sampler seeded by the recipe's seed
    *and the number of trials already stored* (a resumed search must not redraw the knobs it drew before) —
    and, with a shared ``tune.storage``, by this process (workers starting together must not draw alike)."""
    import optuna

    optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    known = len(optuna.load_study(study_name=name, storage=storage).trials)
    t = recipe.tune
    salt = os.getpid() if t.storage else 0
    sampler = optuna.samplers.TPESampler(seed=(recipe.seed * 100_003 + known + salt) % 2**32,
                                         n_startup_trials=_startup(t.trials))
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                             pruner=PRUNERS.get(t.pruner)(epochs, t.trials))


# ------------------------------------------------------------------------------------------- budget
def _finished(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _spent_s(trials) -> float:
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
               if t.datetime_complete and t.datetime_start)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine: cannot tell from here
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dead(study, storage) -> list[int]:
    """Fail the RUNNING trials whose process on this machine is gone, and queue their knobs (when drawn) again."""
    from optuna.trial import TrialState

    dead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not _alive(t.user_attrs.get("worker", ""))]
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in dead:
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, t.number),
                                       TrialState.FAIL)
        if t.params:  # killed before it drew its knobs: nothing to run again
            study.enqueue_trial(t.params, user_attrs={"origin": f"rerun of #{t.number} (its process was killed)"})
    return [t.number for t in dead]


def remaining(study, cfg) -> tuple[int | None, float | None]:
    """What is left of the budget: ``(trials, seconds)``; ``None`` where that budget is not set."""
    done = _finished(study)
    trials = None if cfg.trials is None else max(cfg.trials - len(done), 0)
    seconds = None if cfg.timeout_s is None else max(cfg.timeout_s - _spent_s(done), 0.0)
    return trials, seconds


# ------------------------------------------------------------------------------------------- search
def make_objective(ctx, recipe, spec, base: Knobs, progress):
    """The trial function: draw knobs, distil briefly, return the best validation top-1."""
    import optuna

    from edgekd.tuning.space import apply_knobs
    from edgekd.tuning.trial import short_distill

    cfg = recipe.tune

    def objective(trial) -> float:
        trial.set_user_attr("worker", _worker())
        knobs = suggest(trial, cfg, base)
        epochs = trial_epochs(cfg, knobs)

        def said(outcome: str) -> None:
            progress.advance(1)
            ctx.ui.stage("tune", f"trial {trial.number}: {knobs.method} T={knobs.temperature:.3g} "
                                 f"alpha={knobs.alpha:.3g} lr={knobs.lr:.3g}, {epochs} epochs → {outcome}")

        try:
            fit = short_distill(ctx, apply_knobs(recipe, knobs), spec, epochs, name=f"trial {trial.number}",
                                reporter=PruningReporter(trial))
        except Pruned as exc:
            said(str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except NonFiniteError as exc:  # a diverging configuration is a bad one, not a broken search
            trial.set_user_attr("note", f"diverged: {exc.message}")
            said("diverged (non-finite loss): counted as pruned")
            raise optuna.TrialPruned("diverged") from None
        said(f"validation top-1 {fit.best_val_top1:.2%}")
        return fit.best_val_top1

    return objective


def run_search(ctx, recipe, spec, select) -> TuneArtifact:
    """Run (or continue) the study for ``recipe`` (``tune`` section) on student ``spec``; returns the artifact."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    cfg, base = recipe.tune, default_knobs(recipe)
    storage = open_storage(recipe, ctx.run)
    study = open_study(recipe, storage, study_name(recipe, select, ctx.splits.identity),
                       trial_epochs(cfg, base) if not cfg.epochs else cfg.epochs[1])
    found = len(_finished(study))
    rerun = recover_dead(study, storage)
    _enqueue_default(study, cfg, base)
    n, seconds = remaining(study, cfg)
    ctx.ui.stage("tune", _start_line(study, cfg, found, rerun, n, seconds))
    if n != 0 and seconds != 0:
        progress = ctx.ui.progress("tune", n or 0)
        try:
            callbacks = [MaxTrialsCallback(cfg.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))] \
                if cfg.trials else []
            study.optimize(make_objective(ctx, recipe, spec, base, progress), n_trials=n, timeout=seconds,
                           callbacks=callbacks)
        finally:
            progress.close()
    return summarize(study, cfg, base, shown_url(storage_url(cfg, ctx.run), ctx.run), found)


def _enqueue_default(study, cfg, base: Knobs) -> None:
    params = default_params(cfg, base)
    if params is None:
        log.info("the recipe's own knobs lie outside the search space: not evaluated as a trial")
    elif not study.trials:
        study.enqueue_trial(params, user_attrs={"origin": "recipe"})


def _start_line(study, cfg, found: int, rerun: list[int], n, seconds) -> str:
    budget = " and ".join(x for x in (f"{cfg.trials} trials" if cfg.trials else "",
                                      f"{cfg.timeout_s:g} s" if cfg.timeout_s else "") if x)
    text = f"study {study.study_name}: {found} finished trial(s) found, budget {budget}"
    if rerun:
        text += f"; trial(s) {rerun} were left running by a killed process: marked failed, their knobs queued again"
    if n == 0 or seconds == 0:
        return text + "; nothing left to run"
    return text + f"; running {'up to ' + str(n) + ' trial(s)' if n else 'trials'}" + \
        (f" for up to {seconds:.0f} s" if seconds else "")


def summarize(study, cfg, base: Knobs, storage: str, found: int) -> TuneArtifact:
    """The study's trials as a :class:`TuneArtifact` (best = highest value; ties keep the earlier trial)."""
    trials = tuple(_trial_result(t, base) for t in study.get_trials(deepcopy=False))
    complete = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    best = max(complete, key=lambda t: (t.value, -t.number), default=None)
    default = next((t.value for t in complete if t.origin == "recipe"), None)
    finished = sum(t.state in ("COMPLETE", "PRUNED") for t in trials)
    space = {k: getattr(cfg, k) for k in ("methods", "temperature", "alpha", "lr", "epochs", "epochs_per_trial")}
    return TuneArtifact(True, study.study_name, storage, OBJECTIVE, space, trials, best.knobs if best else None,
                        best.value if best else None, default, found, max(finished - found, 0))


def _trial_result(t, base: Knobs) -> TrialResult:
    params_ok = {"method", "temperature", "alpha", "lr"} <= set(t.params)
    duration = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    note = t.user_attrs.get("note", "")
    if t.state.name == "PRUNED" and not note:
        note = f"pruned after epoch {max(t.intermediate_values, default=0)}"
    return TrialResult(t.number, t.state.name, knobs_from_params(t.params, base) if params_ok else None,
                       t.value if t.value is not None else _last(t), duration,
                       max(t.intermediate_values, default=0), t.user_attrs.get("origin", "sampled"), note)


def _last(t) -> float | None:
    """A pruned trial's value: its last reported best-so-far."""
    return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
