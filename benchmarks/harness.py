"""Latency statistics: warm-up by time and count, then at least ``min_runs`` runs and ``min_time_s``.

Example:
    >>> stats = measure(lambda: session.run(None, feed), min_runs=200, min_time_s=2.0)  # doctest: +SKIP
    >>> stats.p50_ms, stats.cv  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

#: Coefficient of variation above which a measurement is flagged as too noisy to trust.
NOISY_CV = 0.25


@dataclass
class LatencyStats:
    runs: int
    warmup_runs: int
    total_s: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    cv: float
    noisy: bool

    def latency_dict(self) -> dict:
        """The ``latency_ms`` object of results.json."""
        return {"p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms, "mean": self.mean_ms}

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_ns: np.ndarray, warmup_runs: int = 0, noisy_cv: float = NOISY_CV) -> LatencyStats:
    """Percentiles and spread of per-run times given in nanoseconds."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    mean, std = float(ms.mean()), float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    # Robust spread: the interquartile range scaled to a normal's sigma, so one OS hiccup does not
    # flag a run, while a bimodal or drifting run does.
    q1, q3 = np.percentile(ms, [25, 75])
    cv = float(((q3 - q1) / 1.349) / p50) if p50 > 0 else 0.0
    return LatencyStats(len(ms), warmup_runs, float(ms.sum() / 1e3), float(p50), float(p90), float(p95),
                        float(p99), mean, std, float(ms.min()), float(ms.max()), cv, cv > noisy_cv)


def measure(fn: Callable[[], object], *, warmup_s: float = 0.5, warmup_runs: int = 10, min_runs: int = 200,
            min_time_s: float = 2.0, max_runs: int = 100_000, sync: Callable[[], object] | None = None,
            noisy_cv: float = NOISY_CV) -> LatencyStats:
    """Time ``fn``: warm up for ``warmup_runs`` calls *and* ``warmup_s`` seconds, then measure at least
    ``min_runs`` calls *and* ``min_time_s`` seconds (whichever is longer), each with ``perf_counter_ns``.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called after each run so device work is counted.
    """
    clock = time.perf_counter_ns
    done, start = 0, clock()
    while done < warmup_runs or (clock() - start) < warmup_s * 1e9:
        fn()
        if sync:
            sync()
        done += 1
    timed = fn if sync is None else (lambda: (fn(), sync()))
    samples: list[int] = []
    append, limit_ns = samples.append, min_time_s * 1e9
    start = clock()
    while len(samples) < max_runs and (len(samples) < min_runs or (clock() - start) < limit_ns):
        t0 = clock()
        timed()
        append(clock() - t0)
    return summarize(np.array(samples), warmup_runs=done, noisy_cv=noisy_cv)


def throughput(fn: Callable[[], object], batch: int, **kwargs) -> tuple[float, LatencyStats]:
    """Samples per second at ``batch`` (from the mean latency of a measured run)."""
    stats = measure(fn, **kwargs)
    return batch / (stats.mean_ms / 1e3), stats


def noise_advice(stats: LatencyStats) -> str | None:
    """What to do when ``stats`` is too noisy to trust; ``None`` when it is not.

    Example:
        >>> noise_advice(summarize(np.array([1e6] * 50 + [3e6] * 50)))  # doctest: +ELLIPSIS
        'latency spread is high (CV ...
    """
    if not stats.noisy:
        return None
    return (f"latency spread is high (CV {stats.cv:.0%}, p50 {stats.p50_ms:.4g} ms, p99 {stats.p99_ms:.4g} ms): "
            "these numbers are too noisy to trust. Pin the clocks (Linux: `cpupower frequency-set -g "
            "performance`; Jetson: `sudo nvpmodel -m 0 && sudo jetson_clocks`), close other programs, "
            "and measure longer (--min-runs / --min-time-s).")


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process so far, in bytes (``None`` where it cannot be read)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def rss_bytes() -> int | None:
    """Current resident memory of this process in bytes (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")
