"""The README's quickstart is the contract: CI runs its test command verbatim, its commands exist."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quickstart_is_exactly_two_commands():
    cmds = _quickstart_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    install, run = cmds[0].split(" && ")
    assert install == 'pip install -e ".[train,ort,dev]"' and run == "edgekd run"
    assert cmds[1] == 'pip install -e ".[train,ort,dev]" && pytest'


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quickstart_commands()[1] in ci


def test_readme_figures_come_from_a_real_run_table():
    """Every artifact named in the README's table is one the pipeline produces."""
    from tests.test_pipeline import ARTIFACTS

    text = (ROOT / "README.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("│ ")]
    names = {line.split("│")[1].strip().rstrip(" ★") for line in table}
    assert names == ARTIFACTS
