"""Promise 1: no foreign code runs on load (pickles, external-data escapes, unknown op domains)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.deploy.errors import InputFileError, SecurityError
from edgekd.deploy.runtime.intake import check_model

EVIL = """
import os, sys, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"weight": torch.zeros(2), "payload": Evil()}, sys.argv[1])
"""


@pytest.fixture
def evil_checkpoint(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    subprocess.run([sys.executable, "-c", EVIL, str(path), str(marker)], check=True)
    assert path.is_file() and not marker.exists()
    return path, marker


@pytest.mark.parametrize("env", [{}, {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}])
def test_crafted_pickle_is_refused_and_never_runs(evil_checkpoint, env, monkeypatch):
    from edgekd.checkpoint import load_tensors

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    path, marker = evil_checkpoint
    with pytest.raises(SecurityError, match="weights-only load refuses"):
        load_tensors(path)
    assert not marker.exists(), "the pickle's code ran"


def test_crafted_pickle_through_the_cli(evil_checkpoint, tmp_path):
    from tests.conftest import run_cli

    path, marker = evil_checkpoint
    proc = run_cli("export", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
    assert not (tmp_path / "out").exists()


def _model_with_external(location: str, folder) -> str:
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    w.external_data.add(key="location", value=location)
    w.external_data.add(key="offset", value="0")
    w.external_data.add(key="length", value="16")
    w.ClearField("raw_data")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["/etc/passwd", "../secret.bin", "sub/../../secret.bin"])
def test_external_data_escapes_are_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(SecurityError, match="outside"):
        check_model(_model_with_external(location, folder))


def test_external_data_symlink_out_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "weights.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(SecurityError, match="symlink"):
        check_model(_model_with_external("weights.bin", folder))


def test_external_data_inside_the_folder_is_fine(tmp_path):
    (tmp_path / "weights.bin").write_bytes(np.ones((2, 2), np.float32).tobytes())
    info = check_model(_model_with_external("weights.bin", tmp_path))
    assert info.initializers[0].name == "w" and info.initializers[0].external == "weights.bin"


def test_unknown_op_domain_is_refused_unless_allowed(tmp_path):
    graph = helper.make_graph([helper.make_node("Evil", ["x"], ["y"], domain="com.attacker")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.attacker", 1)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(SecurityError, match="com.attacker"):
        check_model(path)
    assert check_model(path, allow_domains={"com.attacker"}) is not None


@pytest.mark.parametrize("content,match", [
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer"),
    (b"", "empty"),
    (b"\x08\x07garbage-that-is-not-onnx" * 3, "not a valid ONNX model"),
])
def test_bad_onnx_files_are_named(tmp_path, content, match):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=match):
        check_model(path)


def test_external_data_escape_inside_an_if_branch_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    folder = tmp_path / "m"
    folder.mkdir()
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../secret.bin")
    w.ClearField("raw_data")
    branch = helper.make_graph([helper.make_node("Identity", ["w"], ["y1"])], "then", [],
                               [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [2, 2])], [w])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y2"])], "else", [],
                              [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2, 2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    path = folder / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(SecurityError, match="outside"):
        check_model(path)


def test_unknown_domain_hidden_in_a_local_function_is_refused(tmp_path):
    body = helper.make_node("Evil", ["a"], ["b"], domain="evil.custom")
    fn = helper.make_function("my.local", "Wrap", ["a"], ["b"], [body],
                              [helper.make_opsetid("", 17), helper.make_opsetid("evil.custom", 1)])
    graph = helper.make_graph([helper.make_node("Wrap", ["x"], ["y"], domain="my.local")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, functions=[fn], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("my.local", 1), helper.make_opsetid("evil.custom", 1)])
    path = tmp_path / "fn.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(SecurityError, match="evil.custom"):
        check_model(path)
    assert check_model(path, allow_domains={"evil.custom"}) is not None
