"""The select stage: the hardware-aware student choice (:mod:`edgekd.tuning.students`).

Off while ``students.candidates`` is empty: it then returns a "skipped" artifact at once and the recipe's
``student`` is trained.
"""

from __future__ import annotations

from edgekd.artifacts import SelectArtifact
from edgekd.deploy.errors import UsageError


def refuse_distributed(stage: str) -> None:
    """The search and the choice run in one process (a study is shared through its storage instead)."""
    from edgekd import distributed

    if distributed.is_distributed():
        raise UsageError(f"the {stage} stage does not run under torchrun",
                         hint="run `edgekd tune` without torchrun (several processes or machines can share one "
                              "study through tune.storage), then distil under torchrun with the best recipe")


def run_select(ctx) -> SelectArtifact:
    if not ctx.recipe.students.candidates:
        return SelectArtifact(False, decision="off (students.candidates is empty): the recipe's student is used")
    refuse_distributed("select")
    from edgekd.tuning.students import choose_student

    return choose_student(ctx)
