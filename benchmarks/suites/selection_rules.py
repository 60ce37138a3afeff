"""Which epoch should a training keep? Every ``train.select`` rule scored on the test split, over seeds.

A recipe trains teacher, distilled student and baseline; each records, per epoch, validation top-1,
validation loss *and* (here only, for the evidence) test top-1. Each selection rule then picks an epoch from
the validation history alone, and the table shows what its picks score on test: student and baseline
mean ± std over seeds, the KD gain (paired by seed) and the epochs picked. A rule a small validation split
can fool shows up as a baseline or student far below its last epoch, or as a gain inflated by a baseline
picked early.

Run (the default recipe, 5 seeds: about 10 minutes on 2 CPU cores):
    python -m edgekd.benchmarks.suites.selection_rules --recipe digits --seeds 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

RESULTS_MD = Path(__file__).resolve().parents[1] / "RESULTS.md"
SECTION = "selection-rules"


def histories(recipe_name: str, seeds: int, threads: int | None) -> tuple[list[dict], dict]:
    """Train the teacher once, then per seed a KD student and a baseline; every epoch's metrics."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    from edgekd.data import load_data
    from edgekd.distill.cache import TeacherCache
    from edgekd.distill.losses import create_loss
    from edgekd.distill.trainer import CEObjective, DistillObjective, Trainer, _predict
    from edgekd.models import count_params, model_from_config
    from edgekd.recipe import load_recipe

    r = load_recipe(recipe_name)
    train_cfg = dataclasses.replace(r.train, select="last", threads=threads)
    s = load_data(r.data, r.seed)

    class Probe(Trainer):
        """The trainer, also scoring test after each epoch (never used by any rule)."""

        def _end_epoch(self, metrics):
            logits, labels = _predict(self.module, s.test, 512, self.device, 0)
            metrics["test_top1"] = float((logits.argmax(1) == labels).float().mean())
            metrics["test_loss"] = float(F.cross_entropy(logits, labels))
            super()._end_epoch(metrics)

    torch.manual_seed(r.seed)
    teacher = model_from_config(r.teacher, s.num_classes, s.input_shape)
    Trainer(teacher, s.train, s.val, dataclasses.replace(r.teacher.train, threads=threads), CEObjective(),
            name="teacher", seed=r.seed, batch_size=r.data.batch_size).fit()
    teacher.eval()
    cache = TeacherCache([teacher], s.train_eval, 256, "cpu")
    rows = []
    for seed in range(r.seed, r.seed + seeds):
        for kind in ("kd", "baseline"):
            torch.manual_seed(seed)
            student = model_from_config(r.student, s.num_classes, s.input_shape)
            objective = CEObjective() if kind == "baseline" else DistillObjective(
                create_loss(r.distill.method, r.distill, student=student, teacher=teacher), cache)
            t = Probe(student, s.train, s.val, train_cfg, objective, name=kind, seed=seed,
                      batch_size=r.data.batch_size)
            t.fit()
            rows.append({"seed": seed, "kind": kind, "history": t.history})
            print(f"seed {seed} {kind}: last-epoch test top-1 {t.history[-1]['test_top1']:.2%}", flush=True)
    setup = {"recipe": r.name, "val": len(s.val), "test": len(s.test), "epochs": r.train.epochs,
             "student_params": count_params(student), "schedule": r.train.schedule}
    return rows, setup


def score(rows: list[dict], rules: list[str]) -> list[dict]:
    """Each rule's picks (from validation only) and their test top-1, per kind."""
    from edgekd.distill.selection import SELECTION

    out = []
    for rule in rules:
        picked = {"kd": [], "baseline": []}
        for row in rows:
            h = row["history"]
            # the trainer keeps the first epoch reaching the highest score (a later tie does not replace it)
            best = max(range(1, len(h) + 1), key=lambda e, h=h: (SELECTION.get(rule)(h[:e]), -e))
            picked[row["kind"]].append((best, h[best - 1]["test_top1"]))
        kd = np.array([t for _, t in picked["kd"]])
        base = np.array([t for _, t in picked["baseline"]])
        out.append({"rule": rule, "kd": kd, "baseline": base, "gain": kd - base,
                    "epochs": ([e for e, _ in picked["kd"]], [e for e, _ in picked["baseline"]])})
    return out


def markdown(scored: list[dict], setup: dict, args) -> str:
    def ms(a: np.ndarray) -> str:
        return f"{100 * a.mean():.2f}% ± {100 * a.std(ddof=1):.2f}" if len(a) > 1 else f"{100 * a.mean():.2f}%"

    lines = ["## Which epoch is kept (`train.select`)", "",
             f"`python -m edgekd.benchmarks.suites.selection_rules --recipe {args.recipe} --seeds {args.seeds}`", "",
             f"Recipe `{setup['recipe']}`: {setup['epochs']} epochs, {setup['schedule']} schedule, student of "
             f"{setup['student_params']:,} parameters; validation split {setup['val']} images (one image = "
             f"{100 / setup['val']:.2f} points), test {setup['test']}. Each rule picks an epoch from validation "
             "alone; the table scores the picks on test (mean ± std over seeds; the gain is paired by seed). "
             f"Measured {time.strftime('%Y-%m-%d')}.", "",
             "| rule | KD student test top-1 | baseline test top-1 | KD gain (pp) | epochs picked (KD / baseline) |",
             "|---|---|---|---|---|"]
    for s in scored:
        g = 100 * s["gain"]
        spread = f" ± {g.std(ddof=1):.2f}" if len(g) > 1 else ""
        lines.append(f"| {s['rule']} | {ms(s['kd'])} | {ms(s['baseline'])} | {g.mean():+.2f}{spread} | "
                     f"{s['epochs'][0]} / {s['epochs'][1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from edgekd.distill.selection import SELECTION

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="digits")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    p.add_argument("--results", type=Path, default=RESULTS_MD, help="RESULTS.md to update")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    rows, setup = histories(args.recipe, args.seeds, args.threads)
    md = markdown(score(rows, SELECTION.names()), setup, args)
    print(md)
    if not args.no_write:
        from edgekd.benchmarks.results import update_results_md

        update_results_md(args.results, SECTION, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
