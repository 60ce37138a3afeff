"""Latency statistics: warm-up by time and count, then at least ``min_runs`` runs and ``min_time_s``.

Example:
    >>> stats = measure(lambda: session.run(None, feed), min_runs=200, min_time_s=2.0)  # doctest: +SKIP
    >>> stats.p50, stats.cv  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

from edgekd.benchmarks.results import Latency

#: Coefficient of variation above which a measurement is flagged as too noisy to trust.
NOISY_CV = 0.25


def summarize(samples_ns: np.ndarray, warmup_runs: int = 0, noisy_cv: float = NOISY_CV,
              round_p50s: tuple[float, ...] = ()) -> Latency:
    """Percentiles and spread of per-run times given in nanoseconds, as a :class:`Latency` in ms."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    mean, std = float(ms.mean()), float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    # Robust spread: the interquartile range scaled to a normal's sigma, so one OS hiccup does not
    # flag a run, while a bimodal or drifting run does.
    q1, q3 = np.percentile(ms, [25, 75])
    cv = float(((q3 - q1) / 1.349) / p50) if p50 > 0 else 0.0
    spread = float(max(round_p50s) - min(round_p50s)) if len(round_p50s) > 1 else None
    return Latency(p50, p90, p95, p99, mean, std, float(ms.min()), float(ms.max()), len(ms), warmup_runs,
                   float(ms.sum() / 1e3), cv, cv > noisy_cv, tuple(round_p50s), spread)


def _warm(fn: Callable[[], object], warmup_s: float, warmup_runs: int) -> int:
    clock, done, start = time.perf_counter_ns, 0, time.perf_counter_ns()
    while done < warmup_runs or (clock() - start) < warmup_s * 1e9:
        fn()
        done += 1
    return done


def _timed(fn: Callable[[], object], min_runs: int, min_time_s: float, max_runs: int) -> list[int]:
    clock = time.perf_counter_ns
    samples: list[int] = []
    append, limit_ns, start = samples.append, min_time_s * 1e9, clock()
    while len(samples) < max_runs and (len(samples) < min_runs or (clock() - start) < limit_ns):
        t0 = clock()
        fn()
        append(clock() - t0)
    return samples


def _with_sync(fn: Callable[[], object], sync: Callable[[], object] | None) -> Callable[[], object]:
    return fn if sync is None else (lambda: (fn(), sync()))


def measure(fn: Callable[[], object], *, warmup_s: float = 0.5, warmup_runs: int = 10, min_runs: int = 200,
            min_time_s: float = 2.0, max_runs: int = 100_000, sync: Callable[[], object] | None = None,
            noisy_cv: float = NOISY_CV) -> Latency:
    """Time ``fn``: warm up for ``warmup_runs`` calls *and* ``warmup_s`` seconds, then measure at least
    ``min_runs`` calls *and* ``min_time_s`` seconds (whichever is longer), each with ``perf_counter_ns``.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called after each run so device work is counted.
    """
    fn = _with_sync(fn, sync)
    done = _warm(fn, warmup_s, warmup_runs)
    return summarize(np.array(_timed(fn, min_runs, min_time_s, max_runs)), warmup_runs=done, noisy_cv=noisy_cv)


def measure_interleaved(calls: dict[str, Callable[[], object]], *, rounds: int = 5, warmup_s: float = 0.5,
                        warmup_runs: int = 10, min_runs: int = 200, min_time_s: float = 2.0,
                        max_runs: int = 100_000, noisy_cv: float = NOISY_CV) -> dict[str, Latency]:
    """Time several candidates in ``rounds`` interleaved rounds (A B C, B C A, C A B, …), so a slow spell of
    the machine hits all of them, not one. ``min_runs``/``min_time_s`` are per candidate, split over the
    rounds. Each result pools its samples and keeps its per-round medians (``round_p50s``), the noise band
    :func:`faster` compares.

    Example:
        >>> stats = measure_interleaved({"fp32": run_fp32, "int8": run_int8}, rounds=5)  # doctest: +SKIP
        >>> faster(stats["int8"], stats["fp32"])  # doctest: +SKIP
        False
    """
    names = list(calls)
    warm = {n: _warm(calls[n], warmup_s, warmup_runs) for n in names}
    samples: dict[str, list[int]] = {n: [] for n in names}
    p50s: dict[str, list[float]] = {n: [] for n in names}
    per_runs, per_time = max(min_runs // rounds, 1), min_time_s / rounds
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            got = _timed(calls[name], per_runs, per_time, max(max_runs // rounds, 1))
            samples[name] += got
            p50s[name].append(float(np.median(got)) / 1e6)
    return {n: summarize(np.array(samples[n]), warm[n], noisy_cv, tuple(p50s[n])) for n in names}


def faster(a: Latency, b: Latency) -> bool:
    """Whether ``a`` is faster than ``b`` beyond the measured noise.

    With interleaved rounds: every round's median of ``a`` is below every round's median of ``b`` (their
    bands do not overlap). With one measurement each: ``a``'s p50 plus its robust spread (``cv``) stays below
    ``b``'s p50 minus ``b``'s. Anything else is a tie, decided by accuracy and size, not by noise.
    """
    if a.round_p50s and b.round_p50s and len(a.round_p50s) > 1 and len(b.round_p50s) > 1:
        return max(a.round_p50s) < min(b.round_p50s)
    band_a, band_b = a.p50 * (1 + a.cv), b.p50 * (1 - b.cv)
    return band_a < band_b


def throughput(fn: Callable[[], object], batch: int, **kwargs) -> tuple[float, Latency]:
    """Samples per second at ``batch`` (from the mean latency of a measured run)."""
    stats = measure(fn, **kwargs)
    return batch / (stats.mean / 1e3), stats


def noise_advice(stats: Latency) -> str | None:
    """What to do when ``stats`` is too noisy to trust; ``None`` when it is not.

    Example:
        >>> noise_advice(summarize(np.array([1e6] * 50 + [3e6] * 50)))  # doctest: +ELLIPSIS
        'latency spread is high (CV ...
    """
    if not stats.noisy:
        return None
    return (f"latency spread is high (CV {stats.cv:.0%}, p50 {stats.p50:.4g} ms, p99 {stats.p99:.4g} ms): "
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
