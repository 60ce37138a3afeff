"""The tune stage: the distillation search (:mod:`edgekd.tuning.search`) on the student the select stage
chose, then ``best_recipe.yaml``, ``tune.md`` and ``tune.png`` in the run folder.

Off unless ``tune.enabled``: it then returns a "skipped" artifact at once and the recipe's knobs are used.
The distill stage trains with the best knobs (:func:`edgekd.tuning.space.effective_recipe`).
"""

from __future__ import annotations

import dataclasses

from edgekd.artifacts import TuneArtifact


def run_tune(ctx) -> TuneArtifact:
    if not ctx.recipe.tune.enabled:
        return TuneArtifact(False)
    from edgekd.stages.select import refuse_distributed
    from edgekd.tuning.report import summary_rows, write_tune_files
    from edgekd.tuning.search import run_search
    from edgekd.tuning.space import student_spec

    refuse_distributed("tune")
    select = ctx.artifact("select")
    recipe = dataclasses.replace(ctx.recipe, student=student_spec(ctx.recipe, select))
    art = run_search(ctx, recipe, recipe.student, select)
    art = dataclasses.replace(art, files=write_tune_files(ctx.run, ctx.recipe, art, select))
    ctx.ui.done("tune", "; ".join(f"{k}: {v}" for k, v in summary_rows(art)[1:3]))
    return art
