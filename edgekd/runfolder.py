"""The run folder: every file name of a run lives here, and each stage's record is saved and loaded here.

::

    RUN/
      recipe.yaml            the recipe the run used (validated)
      data.json              the data stage's record (shapes, labels, preprocessing contract, identity)
      stages/<stage>.json    each stage's typed record: what it made, from which inputs (digests)
      weights/*.safetensors  trained models          onnx/*.onnx   exported and quantized models
      checkpoints/<name>/    per-epoch training checkpoints (resume)
      results.json  report.md  pareto.png  bundle/   what the report stage writes
      tune.db  tune.md  tune.png  best_recipe.yaml   the search (tune stage, edgekd tune)
      students.png           the student choice (select stage): latency vs accuracy, with the budget
      RUN_COMPLETE           written last, only when every stage's record is present and fresh

A stage record carries the digests of its inputs (the recipe sections it depends on and the records of
the stages it needs); a record whose inputs changed since is *stale* and counts as missing.

Example:
    >>> run = RunFolder("runs/digits")
    >>> run.onnx("student").as_posix()
    'runs/digits/onnx/student.onnx'
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgekd.deploy.errors import InputFileError, UsageError
from edgekd.deploy.fileio import write_json
from edgekd.deploy.typed import from_json, to_json

COMPLETE_MARK = "RUN_COMPLETE"
RECORD_FORMAT = 1


@dataclass(frozen=True)
class StageRecord:
    """A stage's saved record: the artifact, and the digests of what it was made from."""

    stage: str
    edgekd_version: str
    created: str
    inputs: dict[str, str]
    artifact: dict
    format: int = RECORD_FORMAT

    @property
    def digest(self) -> str:
        """Identifies this record's content (what downstream records remember as their input)."""
        return digest_of({"stage": self.stage, "inputs": self.inputs, "artifact": self.artifact})


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def digest_of(obj) -> str:
    return hashlib.sha256(json.dumps(to_json(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunFolder:
    """Owns the file names of one run folder."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # ------------------------------------------------------------------------------------------ names
    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data.json"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def pareto(self) -> Path:
        return self.root / "pareto.png"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def complete(self) -> Path:
        return self.root / COMPLETE_MARK

    @property
    def lock(self) -> Path:
        return self.root / ".edgekd.lock"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    # the search and the student choice (edgekd tune; the select and tune stages)
    @property
    def tune_db(self) -> Path:
        return self.root / "tune.db"

    @property
    def best_recipe(self) -> Path:
        return self.root / "best_recipe.yaml"

    @property
    def tune_report(self) -> Path:
        return self.root / "tune.md"

    @property
    def tune_plot(self) -> Path:
        return self.root / "tune.png"

    @property
    def students_plot(self) -> Path:
        return self.root / "students.png"

    def weights(self, name: str) -> Path:
        return self.root / "weights" / f"{name}.safetensors"

    def onnx(self, name: str) -> Path:
        return self.root / "onnx" / f"{name}.onnx"

    def checkpoints(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def record_path(self, stage: str) -> Path:
        return self.data if stage == "data" else self.root / "stages" / f"{stage}.json"

    def rel(self, path: str | os.PathLike) -> str:
        """``path`` relative to the run folder (results and records stay valid when the folder moves)."""
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def path(self, rel: str) -> Path:
        """A path a record stores (relative) back to a file, refusing anything outside the folder."""
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts:
            raise InputFileError(f"{self.root}: a stage record names {rel!r}, outside the run folder",
                                 hint="the run folder was edited by hand; re-run the stage")
        return self.root / p

    # ------------------------------------------------------------------------------------------ state
    def exists(self) -> bool:
        return self.recipe.is_file()

    def is_run(self) -> bool:
        """A folder edgekd made: it holds ``recipe.yaml`` and a data record."""
        return self.recipe.is_file() and self.data.is_file()

    def save_record(self, record: StageRecord) -> Path:
        return write_json(self.record_path(record.stage), to_json(record))

    def load_record(self, stage: str) -> StageRecord | None:
        """The stage's saved record, or ``None`` when there is none (corrupt records are errors)."""
        path = self.record_path(stage)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputFileError(f"stage record {path} is corrupt: {exc}",
                                 hint=f"re-run the stage: edgekd run --stages {stage} --out {self.root}") from None
        return from_json(StageRecord, data, str(path), hint=f"re-run the stage: --stages {stage}")

    @contextlib.contextmanager
    def writer(self) -> Iterator[None]:
        """Be the one process writing this run folder: a second ``edgekd run`` into the same ``--out`` fails,
        naming the process that holds it. The lock (``flock``) dies with its process, so a run killed with
        SIGKILL leaves no lock behind that blocks the next one; the lock file is removed on exit."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = self._take_lock()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"edgekd pid {os.getpid()} on {socket.gethostname()}, started {_now()}\n".encode(), 0)
            try:
                yield
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.lock)
        finally:
            os.close(fd)

    def _take_lock(self) -> int:
        while True:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise UsageError(f"{self.root} is being written by {holder}; one run writes a folder at a time",
                                 hint="wait for it to finish, or choose another --out folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file the previous holder unlinked while we opened it
                return fd
            os.close(fd)

    def snapshot(self) -> dict[str, tuple[int, int, str]]:
        """Every file under the folder with (size, mtime_ns, sha256): to prove a refused command touched
        nothing (tests) and to report what a run holds."""
        out = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file():
                st = path.stat()
                out[path.relative_to(self.root).as_posix()] = (st.st_size, st.st_mtime_ns,
                                                               hashlib.sha256(path.read_bytes()).hexdigest())
        return out
