"""The export stage: student and teacher to ONNX, each gated on parity with PyTorch before it is kept.

:func:`export_model` is also the library function behind ``edgekd export RUN_DIR``.
"""

from __future__ import annotations

from pathlib import Path

from edgekd import __version__
from edgekd.artifacts import ExportArtifact, ModelFile, OnnxModel
from edgekd.deploy.fileio import sha256_file

#: test samples the parity gate compares on (plus batches of 1 and 7)
PARITY_SAMPLES = 256


def export_model(model, splits, weights: Path, out: Path, *, role: str, cfg, simplify: bool | None = None):
    """Export ``model`` (trained weights ``weights``) to ``out`` with the data's preprocessing contract and
    labels in its metadata, gated on parity with PyTorch on real test inputs.

    Returns:
        :class:`~edgekd.deploy.export.ExportOutcome`.
    """
    import torch

    from edgekd.deploy.export import export_metadata, export_verified

    feed, _ = splits.arrays("test", PARITY_SAMPLES)
    text = splits.task == "text-classification"
    # a batch of 2: an exporter may specialise a batch of 1 (an LSTM's initial state) into a fixed size
    example = tuple(torch.from_numpy(feed[name][:2 if text else 1]) for name in splits.input_names)
    meta = export_metadata(__version__, source_sha256=sha256_file(weights), preprocessing=splits.preprocessing,
                           labels=splits.labels, role=role)
    model = model.cpu().eval()
    extra = {}
    if text:  # parity at several sequence lengths, the largest bounded
        extra = {"dim_max": dict(splits.preprocessing.axis_sizes()), "batch_sizes": (1, 3, 8)}
        feed = text_feeds(feed, splits.preprocessing.max_length)
    return export_verified(model, example, out, feed, atol=cfg.atol, opset=cfg.opset, metadata=meta,
                           input_names=splits.input_names, output_names=["logits"], dynamic_axes=splits.axes(),
                           exporter=cfg.exporter, fallback=cfg.fallback,
                           simplify=cfg.simplify if simplify is None else simplify, **extra)


def text_feeds(feed: dict, max_length: int) -> list[dict]:
    """Token feeds of real test texts at several sequence lengths (:func:`edgekd.deploy.verify.sequence_feeds`):
    cut to 8 and 32 tokens, padded only to the longest text among them (what the device feeds), and at the
    full ``max_length``."""
    from edgekd.deploy.verify import sequence_feeds

    mask = feed.get("attention_mask")
    longest = int(mask.sum(1).max()) if mask is not None else max_length
    return sequence_feeds(feed, (8, 32, longest))


def run_export(ctx) -> ExportArtifact:
    r, models, used = ctx.recipe, [], set()
    for name in ("student", "teacher"):
        trained = ctx.artifact("distill").student if name == "student" else ctx.artifact("teacher").model
        outcome = export_model(ctx.model(name), ctx.splits, ctx.run.path(trained.weights.path),
                               ctx.run.onnx(name), role=name, cfg=r.export)
        ctx.model(name).to(ctx.device)
        details = {"parity": outcome.parity.to_dict(), "exporter": outcome.exporter,
                   "fallback_reason": outcome.fallback_reason,
                   "simplified": outcome.simplified.reason if outcome.simplified else None}
        models.append(OnnxModel(f"{name}-onnx-fp32", name, name, "fp32", "export",
                                ModelFile(ctx.run.rel(outcome.path), sha256_file(outcome.path)), trained.params,
                                details))
        used.add(outcome.exporter)
        ctx.ui.done("export", f"{outcome.path.name} ({outcome.exporter}"
                              f"{', fallback: ' + outcome.fallback_reason if outcome.fallback_reason else ''}): "
                              + "; ".join(outcome.parity.lines))
    return ExportArtifact(r.export.opset, "+".join(sorted(used)), tuple(models))
