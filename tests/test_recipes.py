"""Every recipe under models/ loads, its models instantiate (no download) and one distillation batch
goes through; a torchvision pair and a user-factory model run through `edgekd distill` on FakeData."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import torch

from edgekd.data import load_data, make_loader
from edgekd.distill.cache import OnlineTeacher
from edgekd.distill.losses import create_loss
from edgekd.distill.trainer import DistillObjective
from edgekd.models import check_models_fit, model_from_config
from edgekd.recipe import load_recipe
from tests.conftest import stage_artifact

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "models").glob("*.yaml"))
#: Datasets that recipes download on a user's machine: (C, H, W) and classes, for a FakeData stand-in.
KNOWN = {"CIFAR10": ((3, 32, 32), 10), "CIFAR100": ((3, 32, 32), 100), "MNIST": ((1, 28, 28), 10),
         "FashionMNIST": ((1, 28, 28), 10), "SVHN": ((3, 32, 32), 10)}
NO_DOWNLOAD = ["teacher.weights=null", "student.weights=null"]


def offline_splits(recipe):
    """The recipe's data, or FakeData of the same shape and class count when it would need a download."""
    data = recipe.data
    if data.source.startswith("text:") and not Path(data.source[5:]).is_file():  # `edgekd data reviews` not run
        data = dataclasses.replace(data, source=f"text:{ROOT / 'tests' / 'data' / 'reviews_small.csv'}")
    name = data.source.split(":", 1)[1] if data.source.startswith("torchvision:") else None
    if name and name != "FakeData":
        assert name in KNOWN, f"add {name}'s shape to KNOWN in {__file__}"
        shape, classes = KNOWN[name]
        data = dataclasses.replace(data, source="torchvision:FakeData", root=None, download=False, workers=0,
                                   kwargs={"size": 40, "image_size": shape, "num_classes": classes})
    else:
        data = dataclasses.replace(data, limit=200, workers=0)
    return load_data(data, recipe.seed)


def build(recipe):
    splits = offline_splits(recipe)
    teacher = model_from_config(recipe.teacher, splits.num_classes, splits.input_shape, splits.model_kwargs)
    student = model_from_config(recipe.student, splits.num_classes, splits.input_shape, splits.model_kwargs)
    check_models_fit({"teacher": teacher, "student": student}, splits)
    return splits, teacher, student


def one_batch(recipe, splits, teacher, student) -> dict:
    loss = create_loss(recipe.distill.method, recipe.distill, student=student, teacher=teacher,
                       input_shape=splits.input_shape, weights=recipe.teacher.weights_mix,
                       example=splits.example("train", 2))
    x, y, idx = next(iter(make_loader(splits.train, 4, shuffle=False)))
    out = DistillObjective(loss, OnlineTeacher([teacher]))(student.train(), x, y, idx)
    out["loss"].backward()
    assert out["logits"].shape == (4, splits.num_classes) and torch.isfinite(out["loss"])
    return out


def test_there_are_recipes():
    assert {"digits", "cifar10_resnet18_mbv3"} <= {p.stem for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_one_batch_goes_through(path):
    recipe = load_recipe(path, NO_DOWNLOAD)
    one_batch(recipe, *build(recipe))


def test_documented_layer_pairs_of_the_cifar_recipe():
    path = ROOT / "models" / "cifar10_resnet18_mbv3.yaml"
    layers = ["distill.student_layers=[features.1, features.3, features.8]",
              "distill.teacher_layers=[layer1, layer2, layer3]"]
    models = build(load_recipe(path, NO_DOWNLOAD))
    for method in ("at", "fitnet", "dkd"):
        out = one_batch(load_recipe(path, [*NO_DOWNLOAD, f"distill.method={method}", *layers]), *models)
        assert ("feat" in out["parts"]) == (method != "dkd"), method


FACTORY = textwrap.dedent("""
    import torch.nn as nn

    def tiny_net(width, num_classes, in_channels):
        return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
""")


def _recipe(tmp_path: Path, teacher: str, student: str, size: int) -> Path:
    text = textwrap.dedent(f"""
        name: offline-pair
        data:
          source: torchvision:FakeData
          kwargs: {{size: 32, image_size: [3, {size}, {size}], num_classes: 4}}
          batch_size: 16
        teacher: {{model: "{teacher}", kwargs: {{}}, train: {{epochs: 1, lr: 0.01}}}}
        student: {{model: "{student}"}}
        distill: {{method: kd, baseline: false}}
        train: {{epochs: 1, lr: 0.005}}
    """)
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("teacher,student,size", [
    ("torchvision:resnet18", "torchvision:mobilenet_v3_small", 16),
    ("edgekd:cnn", "my_factory_zoo:tiny_net", 16),
], ids=["torchvision-pair", "user-factory"])
def test_edgekd_distill_runs_offline_pairs(tmp_path, monkeypatch, teacher, student, size):
    from edgekd.cli import main

    (tmp_path / "my_factory_zoo.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = _recipe(tmp_path, teacher, student, size)
    sets = ["--set", "student.kwargs={width: 8}"] if "factory" in student else []
    out = tmp_path / "run"
    assert main(["distill", str(recipe), "--out", str(out), "-q", *sets]) == 0
    distill = stage_artifact(out, "distill")
    assert distill["teacher_outputs"] == "cache-memory"
    assert 0.0 <= distill["student"]["test_top1"] <= 1.0
    assert (out / "weights" / "student.safetensors").is_file() and not (out / "results.json").exists()
