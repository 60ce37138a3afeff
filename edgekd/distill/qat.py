"""Quantization-aware distillation (QAT-KD): fine-tune a trained student with fake INT8 quantization while the FP32
teacher's soft targets guide it, then export explicit Q/DQ ONNX that ONNX Runtime and TensorRT both take.

Post-training INT8 can only buy accuracy back by keeping layers in float (speed given back). QAT lets the weights
adapt to the rounding instead (Jacob et al., CVPR 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference"), with a distillation loss from the FP32 teacher (Mishra & Marr, ICLR 2018,
"Apprentice"; Polino et al., ICLR 2018). The scheme is TensorRT's (docs.nvidia.com, "Explicit Quantization"):

* **BatchNorm folded** into the preceding convolution first (``torch.fx`` conv–BN fusion, else adjacent
  ``Sequential`` children), so the graph that trains is the graph that ships;
* **weights**: symmetric INT8 per output channel (zero point 0, scale ``max|w| / 127``, or ``/ 63`` on presets
  with ``reduce_range``), re-derived from the weights at every step;
* **activations**: symmetric INT8 per tensor (zero point 0) at the input and output of every Conv/Linear (the
  model's last layer keeps float logits); scales calibrated as ``max|x| / 127`` on training batches — the
  post-training start point — then learned with the weights (LSQ: Esser et al., ICLR 2020,
  "Learned Step Size Quantization"), straight-through rounding;
* biases stay float (TensorRT's parser takes only INT8 DequantizeLinear; ONNX Runtime fuses a float bias too).

Exported with the dynamo exporter through ``torch.ops.quantized_decomposed`` quantize/dequantize ops, which it
lowers to QuantizeLinear/DequantizeLinear with INT8 weight initializers — no float weights, no fake-quant ops to
fold. The file is gated on :func:`edgekd.deploy.qdq.check_explicit_qdq` and on parity with the fake-quant PyTorch
model (top-1 agreement) before it is written.

Example:
    >>> qmodel = prepare_qat(student, torch.zeros(1, 1, 8, 8))           # doctest: +SKIP
    >>> calibrate(qmodel, loader, batches=8); top1 = evaluate(qmodel, val)  # the post-training start point
    >>> Trainer(qmodel, train, val, cfg, DistillObjective(KDLoss(4, 0.9), teacher_source)).fit()
    >>> export_qat(qmodel, x[:1], "student-int8-qat.onnx", x_val)
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

QMIN, QMAX = -128, 127
EPS = 1e-8
#: what the dynamo exporter lowers to QuantizeLinear/DequantizeLinear (registered by this import)
_DECOMPOSED = "torch.ao.quantization.fx._decomposed"


def _qd():
    import importlib

    importlib.import_module(_DECOMPOSED)
    return torch.ops.quantized_decomposed


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (ties to even, as QuantizeLinear), gradient 1 (straight-through)."""
    return x + (torch.round(x) - x).detach()


class QuantAct(nn.Module):
    """Per-tensor symmetric INT8 fake quantization of an activation, zero point 0, learned scale (LSQ)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("amax", torch.tensor(0.0))
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.amax = torch.maximum(self.amax, x.detach().abs().max().float())
            return x
        if self.training:
            s = self.scale.abs() + EPS
            return torch.clamp(_round_ste(x / s), QMIN, QMAX) * s
        return _qdq(x, self.frozen_scale())

    def frozen_scale(self) -> float:
        return float(self.scale.detach().abs()) + EPS


class FrozenAct(nn.Module):
    """:class:`QuantAct` for export: the scale is a Python constant (the Q/DQ scale initializer)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _qdq(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


def _qdq(x: torch.Tensor, scale: float) -> torch.Tensor:
    """QuantizeLinear → DequantizeLinear, symmetric INT8 (what the exporter emits for these ops)."""
    qd = _qd()
    q = qd.quantize_per_tensor(x, scale, 0, QMIN, QMAX, torch.int8)
    return qd.dequantize_per_tensor(q, scale, 0, QMIN, QMAX, torch.int8)


class QuantLayer(nn.Module):
    """A Conv/Linear with fake-quantized input, per-channel symmetric weights and (optionally) output."""

    def __init__(self, layer: nn.Module, weight_qmax: int = QMAX, quantize_output: bool = True) -> None:
        super().__init__()
        self.layer, self.weight_qmax = layer, weight_qmax
        self.input_q = QuantAct()
        self.output_q = QuantAct() if quantize_output else None

    def weight_scale(self) -> torch.Tensor:
        w = self.layer.weight.detach()
        return (w.abs().amax(dim=tuple(range(1, w.dim()))).clamp(min=EPS) / self.weight_qmax).float()

    def quantized_weight(self) -> torch.Tensor:
        w, s = self.layer.weight, self.weight_scale()
        if self.training:
            shape = (-1,) + (1,) * (w.dim() - 1)
            return torch.clamp(_round_ste(w / s.view(shape)), QMIN, QMAX) * s.view(shape)
        qd, zp = _qd(), torch.zeros_like(s, dtype=torch.int64)
        q = qd.quantize_per_channel(w, s, zp, 0, QMIN, QMAX, torch.int8)
        return qd.dequantize_per_channel(q, s, zp, 0, QMIN, QMAX, torch.int8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self.input_q(x), self.quantized_weight()
        y = F.linear(x, w, self.layer.bias) if isinstance(self.layer, nn.Linear) else \
            self.layer._conv_forward(x, w, self.layer.bias)
        return y if self.output_q is None else self.output_q(y)


class FrozenQuantLayer(QuantLayer):
    """:class:`QuantLayer` for export: INT8 weights and their scales as buffers (initializers in the ONNX file)."""

    def __init__(self, q: QuantLayer) -> None:
        super().__init__(q.layer, q.weight_qmax, q.output_q is not None)
        self.input_q = FrozenAct(q.input_q.frozen_scale())
        self.output_q = None if q.output_q is None else FrozenAct(q.output_q.frozen_scale())
        s = q.weight_scale()
        self.register_buffer("w_scale", s)
        self.register_buffer("w_zero", torch.zeros_like(s, dtype=torch.int64))
        self.register_buffer("w_int8", _qd().quantize_per_channel(q.layer.weight.detach(), s, self.w_zero, 0, QMIN,
                                                                  QMAX, torch.int8))
        self.layer.weight = None  # the INT8 copy is the weight now: no float weights in the file

    def quantized_weight(self) -> torch.Tensor:
        return _qd().dequantize_per_channel(self.w_int8, self.w_scale, self.w_zero, 0, QMIN, QMAX, torch.int8)


QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# ------------------------------------------------------------------------------------------- preparing
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm folded into the conv before it.

    ``torch.fx`` conv–BN fusion where the model traces; otherwise BatchNorms directly after a conv in an
    ``nn.Sequential`` (edgekd and torchvision blocks); a BatchNorm neither path reaches stays as it is (logged).
    """
    from torch.fx.experimental.optimization import fuse

    model = copy.deepcopy(model).cpu().eval()
    try:
        return fuse(model)
    except Exception as exc:  # noqa: BLE001 - untraceable models fall back to the Sequential walk
        log.info("torch.fx could not trace the model (%s): folding BatchNorm in nn.Sequential blocks",
                 type(exc).__name__)
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv1d | nn.Conv2d | nn.Conv3d) and isinstance(seq[i + 1], nn.modules.batchnorm
                                                                                     ._BatchNorm):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        log.warning("BatchNorm layers not folded (they stay float between Q/DQ): %s", left[:5])
    return model


def _output_layer(model: nn.Module, example: torch.Tensor) -> str | None:
    """The name of the quantizable layer whose output *is* the model's output (the logits layer), if any."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: outputs.__setitem__(name, out))
             for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)]
    try:
        with torch.no_grad():
            final = model(example)
    finally:
        for h in hooks:
            h.remove()
    return next((name for name, out in outputs.items() if out is final), None)


def prepare_qat(model: nn.Module, example: torch.Tensor, weight_qmax: int = QMAX) -> nn.Module:
    """A fake-quantized copy of ``model``: BatchNorm folded, every Conv/Linear wrapped in a :class:`QuantLayer`.

    Activation scales are uncalibrated until :func:`calibrate` runs. ``weight_qmax`` is 127 (8-bit weights) or 63
    (7-bit, for CPUs whose INT8 kernels can saturate: preset ``x86``).
    """
    model = fold_batchnorm(model)
    last = _output_layer(model, example.cpu())
    for name, module in list(model.named_modules()):
        if isinstance(module, QUANTIZABLE):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr,
                    QuantLayer(module, weight_qmax, quantize_output=name != last))
    return model


def quantizers(model: nn.Module) -> list[QuantAct]:
    return [m for m in model.modules() if isinstance(m, QuantAct)]


@torch.no_grad()
def calibrate(model: nn.Module, batches, device=None) -> int:
    """Set every activation scale to ``max|x| / 127`` over ``batches`` (an iterable of inputs or ``(x, ...)``
    tuples); returns the number of batches seen. Afterwards the model is the post-training INT8 start point."""
    acts = quantizers(model)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    for q in acts:
        q.calibrating, q.amax = True, torch.zeros_like(q.amax)
    n = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, tuple | list) else batch
            model(x.to(device))
            n += 1
    finally:
        for q in acts:
            q.calibrating = False
    for q in acts:
        q.scale.data.fill_(max(float(q.amax), EPS) / QMAX)
    model.train(was_training)
    return n


def freeze(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy for export: each :class:`QuantLayer` becomes a :class:`FrozenQuantLayer`."""
    model = copy.deepcopy(model).cpu().eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantLayer) and not isinstance(module, FrozenQuantLayer):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, FrozenQuantLayer(module))
    return model


# ------------------------------------------------------------------------------------------- exporting
@dataclass(frozen=True)
class QatExport:
    """The exported Q/DQ file, which exporter made it, its explicit-Q/DQ check, its parity report (the graph as
    ONNX defines it vs the fake-quant model) and how far ONNX Runtime's fused integer kernels land from it."""

    path: object
    exporter: str
    qdq: object  # edgekd.deploy.qdq.QdqCheck
    parity: object  # edgekd.deploy.verify.ParityReport
    kernels: dict  # {"top1_agreement", "max_abs_diff", "mean_abs_diff"}: optimized ONNX Runtime vs fake quant

    @property
    def lines(self) -> list[str]:
        k = self.kernels
        return self.qdq.lines + self.parity.lines + [
            f"ONNX Runtime integer kernels vs fake quant: top-1 agreement {k['top1_agreement']:.2%}, mean abs diff "
            f"{k['mean_abs_diff']:.3g} (integer accumulation and requantization round differently from float fake "
            "quantization; the candidate is judged by its validation top-1)"]


def export_qat(model: nn.Module, example: torch.Tensor, out_path, check_inputs, *, opset: int = 18,
               metadata: dict | None = None, min_agreement: float = 0.99) -> QatExport:
    """Export a fake-quantized model to explicit Q/DQ ONNX (dynamo exporter), gated *before* the file is written
    on :func:`~edgekd.deploy.qdq.check_explicit_qdq` and on top-1 agreement with the fake-quant PyTorch model
    over ``check_inputs`` — ONNX Runtime running the graph as ONNX defines it (no fusion: Q/DQ as float
    arithmetic), whole set plus batches 1 and 7 — so the file is proven to compute what was trained. How far
    ONNX Runtime's fused integer kernels land from it is measured and recorded (``kernels``), not gated: they
    round differently (integer accumulation, requantization), and the deployed accuracy is measured instead.

    Raises:
        QuantizationFailed: the graph breaks an explicit-Q/DQ rule; ToleranceExceeded: parity failed.
    """
    from edgekd.deploy.export import _torch_reference, export_onnx
    from edgekd.deploy.qdq import check_explicit_qdq
    from edgekd.deploy.quantize import QuantizationFailed, _step
    from edgekd.deploy.verify import check_parity

    frozen = freeze(model)
    found: dict[str, object] = {}

    def gate(tmp) -> None:
        found["qdq"] = check = check_explicit_qdq(tmp)
        if not check.passed:
            raise QuantizationFailed(f"{out_path}: not a valid explicit Q/DQ model: {'; '.join(check.problems[:3])}",
                                     "check Q/DQ")
        reference = _torch_reference(frozen)
        found["parity"] = check_parity(reference, tmp, check_inputs, precision="int8", min_agreement=min_agreement,
                                       batch_sizes=(1, 7), label=str(out_path), graph_optimization="disable")
        found["kernels"] = kernel_agreement(tmp, reference, check_inputs)

    meta = {**(metadata or {}), "edgekd.precision": "int8"}
    with _step("export", "Q/DQ export"):  # an exporter crash becomes a recorded QuantizationFailed
        outcome = export_onnx(frozen, example.cpu(), out_path, opset=opset, metadata=meta, exporter="dynamo",
                              fallback=None, verify=gate)
    return QatExport(outcome.path, outcome.exporter, found["qdq"], found["parity"], found["kernels"])


def kernel_agreement(path, reference, x) -> dict:
    """Optimized ONNX Runtime (fused integer kernels) vs ``reference`` on ``x``: agreement and differences."""
    from edgekd.deploy.runtime.ort import OnnxrtRunner
    from edgekd.deploy.verify import compare

    with OnnxrtRunner(path, "cpu") as runner:
        got = next(iter(runner.infer({runner.inputs()[0].name: x}).values()))
    max_diff, mean_diff, agree = compare(reference(x), got)
    return {"top1_agreement": agree, "max_abs_diff": max_diff, "mean_abs_diff": mean_diff}
