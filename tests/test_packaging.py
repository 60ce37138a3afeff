"""One installed package: the wheel holds `edgekd` alone, and a user's own `deploy`/`benchmarks` packages live
side by side with it. Imports flow one way (checked on the source, not by convention)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from tests.conftest import ROOT

#: repository folder -> import package it installs as (pyproject's package-dir)
MAPPING = {"edgekd": "edgekd", "deploy": "edgekd.deploy", "benchmarks": "edgekd.benchmarks"}
#: folders that stay in the source checkout (scripts that need the training extra)
CHECKOUT_ONLY = {"benchmarks/suites"}


def _python_files(*folders: str):
    for folder in folders:
        yield from (ROOT / folder).rglob("*.py")


def _imports(path: Path):
    """(line, module) for every import statement of a file, relative imports resolved to None."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def test_pyproject_lists_every_package_folder():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert conf["package-dir"] == {v: k for k, v in MAPPING.items()}
    found = set()
    for folder, package in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).as_posix()
            if any(rel == c or rel.startswith(c + "/") for c in CHECKOUT_ONLY):
                continue
            sub = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([package, *sub]))
    assert set(conf["packages"]) == found


def test_no_bare_deploy_or_benchmarks_imports():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in _python_files("edgekd", "deploy", "benchmarks", "tests")
           for line, mod in _imports(p) if mod.split(".")[0] in ("deploy", "benchmarks")]
    assert not bad, "\n".join(bad)


def test_deploy_never_imports_the_rest_of_edgekd():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in _python_files("deploy")
           for line, mod in _imports(p)
           if mod.split(".")[0] == "edgekd" and not (mod == "edgekd.deploy" or mod.startswith("edgekd.deploy."))]
    assert not bad, "\n".join(bad)


def test_device_runtime_imports_numpy_and_runtimes_only():
    """deploy/runtime: the standard library, numpy, onnxruntime/tensorrt/cuda, tokenizers, PIL and other
    stdlib-only deploy modules — never torch, onnx or edgekd's training side."""
    allowed_third_party = {"numpy", "onnxruntime", "tensorrt", "cuda", "tokenizers", "PIL", "openvino"}
    allowed_deploy = {"edgekd.deploy.errors", "edgekd.deploy.fileio", "edgekd.deploy.typed",
                      "edgekd.deploy.registry"}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for p in _python_files("deploy/runtime"):
        for line, mod in _imports(p):
            top = mod.split(".")[0]
            ok = (top in stdlib or top in allowed_third_party or mod.startswith("edgekd.deploy.runtime")
                  or mod in allowed_deploy)
            if not ok:
                bad.append(f"{p.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (nothing is written into the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("edgekd", "deploy", "benchmarks", "models"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("edgekd-*.whl")
    return path


def test_wheel_installs_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (top,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert z.read(top).decode().split() == ["edgekd"]
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert roots == {"edgekd"}
    for path in ("edgekd/deploy/runtime/bundle.py", "edgekd/benchmarks/harness.py", "edgekd/cli.py",
                 "edgekd/deploy/jetson/setup.sh", "edgekd/deploy/examples/classify_image.py"):
        assert path in names
    assert not [n for n in names if n.startswith("edgekd/benchmarks/suites/")]
    assert any(n.endswith(".data/data/share/edgekd/models/digits.yaml") for n in names)


def test_user_packages_named_deploy_and_benchmarks_live_side_by_side(tmp_path):
    """A user's repository with its own deploy/ and benchmarks/ packages, first on sys.path."""
    for pkg in ("deploy", "benchmarks"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(f"OWNER = 'user-{pkg}'\n")
    (tmp_path / "deploy" / "runtime.py").write_text("WHO = 'user runtime'\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    code = ("import deploy, benchmarks, deploy.runtime\n"
            "from edgekd import load_bundle\n"
            "import edgekd.deploy.runtime, edgekd.benchmarks.harness\n"
            "assert deploy.OWNER == 'user-deploy' and benchmarks.OWNER == 'user-benchmarks'\n"
            "assert deploy.runtime.WHO == 'user runtime'\n"
            "assert load_bundle.__module__ == 'edgekd.deploy.runtime.bundle'\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    cli = subprocess.run([sys.executable, "-m", "edgekd.cli", "bench", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert cli.returncode == 0 and "usage: edgekd bench" in cli.stdout, cli.stderr
