"""The results document: one typed row model and one document model for ``edgekd run``'s ``results.json``,
``edgekd bench --json``, the TensorRT bench and ``edgekd report`` — and the one "versus teacher" comparison.

The JSON Schema in ``docs/results.schema.json`` is generated from these classes
(``python -m edgekd.benchmarks.results --schema``) and tests validate real files against it.

Example:
    >>> doc = ResultsDocument(kind="bench", device=Device(cpu="x"), artifacts=())
    >>> to_json(doc)["schema_version"]
    2
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekd.deploy.errors import InputFileError
from edgekd.deploy.typed import from_json, json_schema

SCHEMA_VERSION = 2
SCHEMA_FILE = "docs/results.schema.json"
Role = Literal["teacher", "student", "baseline"]


@dataclass(frozen=True)
class Latency:
    """Per-call latency statistics in milliseconds (see :func:`edgekd.benchmarks.harness.summarize`).

    With interleaved rounds, ``round_p50s`` holds each round's median and ``spread`` the noise band
    used to call one candidate faster than another."""

    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    runs: int
    warmup_runs: int = 0
    total_s: float = 0.0
    cv: float = 0.0
    noisy: bool = False
    round_p50s: tuple[float, ...] = ()
    spread: float | None = None


@dataclass(frozen=True)
class ColdStart:
    """What an app pays once: creating the session/engine and the first inference (ms)."""

    session_create: float
    first_inference: float
    total: float


@dataclass(frozen=True)
class ResultRow:
    """One artifact timed at one batch size (and sequence length, for text) on one device."""

    name: str
    format: Literal["pytorch", "onnx", "tensorrt"]
    precision: str
    runtime: str
    batch: int = 1
    role: Role | None = None
    variant: str | None = field(default=None, metadata={"doc": "how it was made: static, dynamic, qat, ..."})
    path: str = ""
    size_bytes: int | None = None
    params: int | None = None
    top1: float | None = field(default=None, metadata={"doc": "accuracy on the test split (or --data)"})
    val_top1: float | None = field(default=None, metadata={"doc": "accuracy on the validation split"})
    samples: int | None = None
    seq_len: int | None = field(default=None, metadata={"doc": "text models: tokens per sequence in the timed batch"})
    latency: Latency | None = None
    tokenize: Latency | None = field(default=None, metadata={
        "doc": "text bundles: tokenizing the batch's strings with the bundle's tokenizer (ms per batch)"})
    end_to_end: Latency | None = field(default=None, metadata={
        "doc": "text bundles: strings in, logits out — tokenize then run (ms per batch)"})
    throughput_sps: float | None = None
    throughput_batch: int | None = None
    threads: int | None = None
    providers: tuple[str, ...] = ()
    provider_fallback: tuple[str, ...] = ()
    device: str = "cpu"
    cold_start: ColdStart | None = None
    peak_rss_bytes: int | None = None
    rss_model_bytes: int | None = None
    power: dict[str, Any] | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def p50(self) -> float | None:
        return self.latency.p50 if self.latency else None

    @property
    def noisy(self) -> bool:
        return bool(self.latency and self.latency.noisy)

    @property
    def runtime_name(self) -> str:
        """``onnxruntime`` / ``pytorch`` / ``tensorrt`` (the runtime without its version)."""
        return self.runtime.split()[0] if self.runtime else self.format


@dataclass(frozen=True)
class Device:
    """The machine a document's rows ran on (:func:`edgekd.benchmarks.fingerprint.fingerprint`)."""

    cpu: str = "unknown"
    cores: int | None = None
    machine: str | None = None
    os: str | None = None
    python: str | None = None
    onnxruntime: str | None = None
    numpy: str | None = None
    torch: str | None = None
    isa: tuple[str, ...] = ()
    providers: tuple[str, ...] | None = None
    providers_available: tuple[str, ...] | None = None
    cpu_governor: str | None = None
    gpu: str | None = None
    jetson: dict[str, Any] | None = None
    world_size: int | None = None

    @property
    def label(self) -> str:
        """A short human label, e.g. ``"NVIDIA Jetson Orin Nano (6 cores, aarch64)"``."""
        name = (self.jetson or {}).get("model") or self.cpu or "unknown device"
        return f"{name} ({self.cores or '?'} cores, {self.machine or self.os or '?'})"


@dataclass(frozen=True)
class BundleChoice:
    """Which artifact ships, by which rule, and why each candidate was or was not chosen."""

    chosen: str | None
    rule: str
    reasons: dict[str, str]
    tolerance: float | None = None
    decision: str = ""


@dataclass(frozen=True)
class ResultsDocument:
    """A results file. ``kind`` is ``run`` (``results.json`` of ``edgekd run``) or ``bench``."""

    kind: Literal["run", "bench"]
    device: Device
    artifacts: tuple[ResultRow, ...]
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    edgekd_version: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    bundle: BundleChoice | None = None
    recipe: dict[str, Any] | None = None
    distillation: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    quantize: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    teacher_source: str | None = None
    timings_s: dict[str, float] | None = None
    stages: dict[str, Any] | None = None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def bench_document(rows: list[ResultRow], *, settings: dict, device: Device | None = None) -> ResultsDocument:
    """A ``bench`` document; the device fingerprint names the providers that really ran."""
    from edgekd import __version__
    from edgekd.benchmarks.fingerprint import fingerprint

    providers = sorted({p for r in rows for p in r.providers})
    return ResultsDocument("bench", device or fingerprint(providers), tuple(rows), created=now_iso(),
                           edgekd_version=__version__, settings=settings)


def load_results(path: str | os.PathLike) -> ResultsDocument:
    """Read and strictly check a results file (schema_version 2)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"results file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise InputFileError(f"{path} is not an edgekd results file (no 'artifacts' list)",
                             hint="pass a results.json from `edgekd run` or a file from `edgekd bench --json`")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputFileError(f"{path} has schema_version {data.get('schema_version')!r}; this edgekd reads "
                             f"{SCHEMA_VERSION}", hint="re-create it with this edgekd version")
    return from_json(ResultsDocument, data, str(path), hint=f"the format is {SCHEMA_FILE}")


def results_schema() -> dict:
    return json_schema(ResultsDocument, "edgekd results document (results.json, edgekd bench --json)")


# ------------------------------------------------------------------------------------- versus teacher
@dataclass(frozen=True)
class Comparison:
    """A row against the teacher. ``speedup`` compares like with like — the teacher in the *same* runtime,
    format, batch and threads (student ONNX vs teacher ONNX); ``cross_speedup`` is against the teacher in
    PyTorch, the user's starting point, shown in its own column. ``top1_delta`` is a fraction (render pp)."""

    reference: str | None = None
    speedup: float | None = None
    cross_reference: str | None = None
    cross_speedup: float | None = None
    size_ratio: float | None = None
    top1_delta: float | None = None


def _same_setup(a: ResultRow, b: ResultRow) -> bool:
    return a.batch == b.batch and a.threads == b.threads and a.seq_len == b.seq_len and a.device == b.device


def versus_teacher(row: ResultRow, rows: list[ResultRow]) -> Comparison:
    """The one comparison of a row with the teacher rows among ``rows``."""
    teachers = [r for r in rows if r.role == "teacher" and r.p50 and _same_setup(r, row)]
    same = next((t for t in teachers if t.runtime_name == row.runtime_name and t.format == row.format
                 and t.precision == "fp32"), None)
    cross = next((t for t in teachers if t.format == "pytorch" and t.precision == "fp32"), None)
    if cross is not None and cross.runtime_name == row.runtime_name:
        cross = None  # the same comparison as `speedup`: no second column
    any_teacher = same or cross or next((r for r in rows if r.role == "teacher"), None)
    return Comparison(
        reference=same.name if same else None,
        speedup=same.p50 / row.p50 if same and row.p50 else None,
        cross_reference=cross.name if cross else None,
        cross_speedup=cross.p50 / row.p50 if cross and row.p50 else None,
        size_ratio=(row.size_bytes / any_teacher.size_bytes if any_teacher and row.size_bytes
                    and any_teacher.size_bytes else None),
        top1_delta=(row.top1 - any_teacher.top1 if any_teacher and row.top1 is not None
                    and any_teacher.top1 is not None else None))


# ------------------------------------------------------------------------------------- RESULTS.md
def update_results_md(path, section: str, markdown: str, after: str | None = None) -> None:
    """Replace (or append) one suite's section of ``benchmarks/RESULTS.md``, between HTML-comment markers.

    Other sections of the file are left as they are, so several suites (and engineers) share the file.
    A new section goes right after the section ``after`` when that one exists, else at the end.
    """
    from edgekd.deploy.fileio import write_text

    path = Path(path)
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    elif after and f"<!-- {after}:end -->" in text:
        head, rest = text.split(f"<!-- {after}:end -->", 1)
        text = f"{head}<!-- {after}:end -->\n\n{block}{rest}"
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_text(path, text)


HARNESS_INTRO = """## Harness

Suites of the benchmark harness (`benchmarks/suites/*.py`), each a script you can run; every table names
the machine it ran on. Latencies are per call in ms (p50 unless said otherwise), measured after warm-up with
`perf_counter_ns`. See docs/benchmarking.md for what each number means."""


def publish(args, suite: str, title: str, body: str) -> None:
    """Print a suite's Markdown, or (unless ``--no-write``) write it into RESULTS.md and print that."""
    print(body if args.no_write else write_suite_section(args.results_md, suite, title, body))


def write_suite_section(path, suite: str, title: str, body: str) -> str:
    """Put one suite's table for *this machine* into RESULTS.md under ``## Harness``; return the Markdown.

    Each (suite, machine) pair owns one block, so running a suite on a second device adds a table
    instead of replacing the first one's.
    """
    from edgekd.benchmarks.fingerprint import fingerprint

    label = fingerprint().label
    slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
    md = f"### {title} — {label}\n\n{body.strip()}"
    if "<!-- harness:start -->" not in (Path(path).read_text() if Path(path).exists() else ""):
        update_results_md(path, "harness", HARNESS_INTRO)
    text = Path(path).read_text()
    ours = re.findall(r"<!-- (harness(?:/[^ ]*)?):end -->", text)
    update_results_md(path, f"harness/{suite}/{slug}", md, after=ours[-1] if ours else "harness")
    return md


def machine_line() -> str:
    """One line naming the machine, ISA and runtime versions, for a RESULTS.md section."""
    from edgekd.benchmarks.fingerprint import fingerprint

    d = fingerprint()
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    load = f"; load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""
    return (f"Machine: {d.label}, ISA {', '.join(d.isa) or 'none detected'}, {d.os}, Python {d.python}, "
            f"onnxruntime {d.onnxruntime}, numpy {d.numpy}; measured {when}{load}.")


if __name__ == "__main__":  # python -m edgekd.benchmarks.results --schema > docs/results.schema.json
    if sys.argv[1:] == ["--schema"]:
        print(json.dumps(results_schema(), indent=2))
    else:
        sys.exit("usage: python -m edgekd.benchmarks.results --schema")
