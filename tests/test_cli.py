"""The command line: help for every command, one-line errors with documented exit codes."""

from __future__ import annotations

import pytest

from edgekd.cli import COMMANDS, build_parser, main
from tests.conftest import run_cli, torch_blocked_env


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert "exit codes" in out


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_explains_every_option(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    out = capsys.readouterr().out
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[name]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{name} {action.option_strings} has no help text"
            assert action.option_strings[-1] in out


def test_help_does_not_import_torch(tmp_path):
    proc = run_cli("--help", env=torch_blocked_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("run", "--help", env=torch_blocked_env(tmp_path))
    assert proc.returncode == 0 and "--set" in proc.stdout


def test_run_without_train_extra_says_what_to_install(tmp_path):
    proc = run_cli("run", "--out", str(tmp_path / "x"), env=torch_blocked_env(tmp_path))
    assert proc.returncode == 7
    assert "pip install 'edgekd[train,ort]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_bad_recipe_value_lists_all_problems_before_any_work(tmp_path):
    proc = run_cli("run", "--out", str(tmp_path / "x"), "--set", "train.epoch=3", "--set",
                   "distill.temperature=hot", "--set", "quantize.calibration=median")
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "3 problem(s)" in err and "did you mean 'train.epochs'" in err
    assert "distill.temperature" in err and "quantize.calibration" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("run", "no-such-recipe", "--out", str(tmp_path / "x"), "--debug")
    assert proc.returncode == 3 and "Traceback" in proc.stderr
    proc = run_cli("run", "no-such-recipe", "--out", str(tmp_path / "x"))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert "recipe not found: no-such-recipe" in proc.stderr and "digits" in proc.stderr
