"""Device profiles: an ``edgekd bench --json`` document made on the target, read back to time models there.

Each ONNX row of ``edgekd bench`` carries the model's :func:`structural_signature` (``extra.signature``): a
hash of its operator counts, parameter count and input shapes (the batch axis left out). A model exported
again from the same architecture has the same signature whatever its weights or file name, so the
hardware-aware student choice (:mod:`edgekd.tuning.students`) can match each candidate it exports to the row
the device measured. Standard library only (it runs on the device).

Example:
    >>> sig = structural_signature(read_onnx("student.onnx"))  # doctest: +SKIP
    >>> rows = profile_rows(load_results("jetson.json"), batch=1)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

SIGNATURE_VERSION = "s1"


def structure(info) -> dict:
    """What the signature hashes: ``{"ops": {domain:op: count}, "params": n, "inputs": [[dtype, dims]]}``
    (symbolic axes such as the batch written ``"?"``)."""
    ops = Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in info.nodes)
    inputs = [[v.elem_type, [d if isinstance(d, int) else "?" for d in v.dims]] for v in info.graph_inputs]
    return {"ops": dict(sorted(ops.items())), "params": info.params, "inputs": inputs}


def structural_signature(info) -> str:
    """A short, stable identity of an ONNX graph's structure (see the module docstring).

    Example:
        >>> structural_signature(read_onnx("student.onnx"))  # doctest: +SKIP
        's1-3f9c0a4e2b7d1c55'
    """
    text = json.dumps(structure(info), sort_keys=True)
    return f"{SIGNATURE_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def describe(info) -> str:
    """A one-line human summary of the structure (for error messages)."""
    s = structure(info)
    top = ", ".join(f"{k.split(':')[-1]}×{v}" for k, v in sorted(s["ops"].items(), key=lambda kv: -kv[1])[:4])
    return f"{s['params']:,} params, input {s['inputs'][0][1] if s['inputs'] else '?'}, {top}"


def profile_rows(doc, batch: int) -> dict[str, list]:
    """The timed rows of a results document at ``batch``, by signature (rows without one are left out)."""
    out: dict[str, list] = {}
    for row in doc.artifacts:
        sig = (row.extra or {}).get("signature")
        if sig and row.batch == batch and row.latency is not None and not row.error:
            out.setdefault(sig, []).append(row)
    return out
