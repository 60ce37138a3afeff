"""deploy.accuracy_aware: INT8 that misses the tolerance gets nodes back in float, or the float model."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.deploy.accuracy_aware import accuracy_aware_quantize, tensor_sensitivity, top1
from edgekd.deploy.errors import UsageError


@pytest.fixture(scope="module")
def student(digits_student):
    return digits_student


def test_good_calibration_ships_int8_in_one_step(student, tmp_path):
    out = tmp_path / "int8.onnx"
    res = accuracy_aware_quantize(student["path"], out, student["calib"], student["val_x"], student["val_y"])
    assert res.decision == "int8" and res.path == str(out) and out.is_file()
    assert len(res.steps) == 1 and res.steps[0].passed and res.excluded_nodes == []
    assert res.final_top1 >= res.float_top1 - 0.01
    assert top1(out, student["val_x"], student["val_y"]) == pytest.approx(res.final_top1)
    assert res.lines[-1].startswith("decision: INT8 candidate kept")


@pytest.mark.parametrize("calib_value", [0.0, 1e4], ids=["all-zeros", "huge-constant"])
def test_useless_calibration_excludes_nodes_or_falls_back(student, tmp_path, calib_value):
    """Calibration data that says nothing about real activations breaks INT8; the loop must react."""
    out = tmp_path / "int8.onnx"
    calib = np.full_like(student["calib"], calib_value)
    res = accuracy_aware_quantize(student["path"], out, calib, student["val_x"], student["val_y"],
                                  tolerance=0.01, max_steps=4)
    assert not res.steps[0].passed, "the fully quantized model should miss the tolerance"
    assert len(res.steps) > 1 and res.steps[1].newly_excluded, "sensitive nodes are moved to float"
    assert any("+ float [" in line for line in res.lines)
    report = "\n".join(res.lines)
    if res.decision == "fp32":
        assert res.path == str(student["path"]) and not out.exists()
        assert "decision: float model kept" in report
    else:
        assert res.excluded_nodes and out.is_file() and res.final_top1 >= res.float_top1 - 0.01
        assert f"{len(res.excluded_nodes)} node(s) kept in float" in report


def test_huge_constant_calibration_falls_back_to_float(student, tmp_path):
    calib = np.full_like(student["calib"], 1e4)
    res = accuracy_aware_quantize(student["path"], tmp_path / "x.onnx", calib, student["val_x"],
                                  student["val_y"], max_steps=2)
    assert res.decision == "fp32" and len(res.steps) == 3
    assert [len(s.excluded) for s in res.steps] == [0, 1, 2]
    assert res.final_top1 == res.float_top1


def test_sensitivity_scores_every_activation(student, tmp_path):
    from edgekd.deploy.quantize import quantize_static

    q = quantize_static(student["path"], tmp_path / "q.onnx", np.zeros_like(student["calib"]))
    scores = tensor_sensitivity(student["path"], tmp_path / "q.onnx", student["val_x"][:64], tmp_path)
    assert q.precision == "int8" and "logits" in scores
    assert list(scores.values()) == sorted(scores.values())


def test_validation_labels_must_match(student, tmp_path):
    with pytest.raises(UsageError, match="validation"):
        accuracy_aware_quantize(student["path"], tmp_path / "x.onnx", student["calib"], student["val_x"],
                                student["val_y"][:3])
