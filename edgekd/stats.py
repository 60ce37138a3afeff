"""Seed statistics: the KD gain as a paired difference over seeds, with a Student-t interval.

One seed says nothing about noise: a student and its baseline trained with seeds 0, 1, 2 give three paired
differences ``d_k = student_k − baseline_k`` (same seed: same initialisation and data order); their mean ± std
and a 95 % t-interval say whether distillation helps beyond seed noise. Standard library + numpy only.

Example:
    >>> g = paired_gain([0.981, 0.978, 0.983], [0.975, 0.974, 0.976])
    >>> g.verdict, round(g.mean, 4)
    ('gain', 0.0057)
"""

from __future__ import annotations

import numpy as np

from edgekd.artifacts import Gain

#: two-sided 95 % quantiles of Student's t by degrees of freedom (1..30); the normal 1.96 above
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_quantile_975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def paired_gain(student: list[float], baseline: list[float]) -> Gain:
    """Mean ± std of ``student − baseline`` over seeds, its 95 % t-interval and a plain verdict."""
    d = np.asarray(student, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n, mean = len(d), float(d.mean())
    if n < 2:
        return Gain(n, mean, None, None, None, 0.95, "one seed",
                    f"KD gain {100 * mean:+.2f} pp on one seed — no interval: run with --seeds 3 (or more) to "
                    "know whether it exceeds seed noise")
    std = float(d.std(ddof=1))
    half = t_quantile_975(n - 1) * std / np.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "gain" if low > 0 else "loss" if high < 0 else "within noise"
    what = {"gain": "a gain beyond seed noise", "loss": "a loss beyond seed noise",
            "within noise": "within seed noise (the interval includes 0)"}[verdict]
    return Gain(n, mean, std, float(low), float(high), 0.95, verdict,
                f"KD gain {100 * mean:+.2f} ± {100 * std:.2f} pp over {n} seeds "
                f"(95% interval [{100 * low:+.2f}, {100 * high:+.2f}] pp): {what}")
