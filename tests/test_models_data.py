"""Model zoo (torchvision, user factories, checkpoints) and data sources (FakeData, ImageFolder, factory,
digits), and the models-vs-data check that runs before training. Nothing is downloaded."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from edgekd.checkpoint import load_weights, save_weights
from edgekd.data import load_data, make_loader, to_numpy
from edgekd.deploy.errors import InputFileError, SecurityError, UsageError
from edgekd.models import check_models_fit, create_model, model_from_config
from edgekd.recipe import DataConfig, ModelConfig, TransformConfig


# ---------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name,channels", [("resnet18", 1), ("resnet18", 3), ("mobilenet_v3_small", 1),
                                           ("mobilenet_v3_small", 3)])
def test_torchvision_models_adapt_classes_and_channels(name, channels):
    model = create_model(f"torchvision:{name}", num_classes=7, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, 7)


def test_pretrained_first_conv_keeps_its_filters():
    from edgekd.models import _adapt_first_conv

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    rgb = model[0].weight.detach().clone()
    _adapt_first_conv(model, 1, pretrained=True)
    assert torch.allclose(model[0].weight, rgb.sum(1, keepdim=True))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    rgb = model[0].weight.detach().clone()
    _adapt_first_conv(model, 6, pretrained=True)
    assert torch.allclose(model[0].weight, torch.cat([rgb, rgb], 1) * 0.5)


def test_unknown_torchvision_model_suggests_names():
    with pytest.raises(UsageError, match="resnet18"):
        create_model("torchvision:resnet19", num_classes=3)


@pytest.fixture()
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "my_zoo.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def build(width, num_classes, in_channels=3):
            return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

        def fake_data(n=30, classes=3):
            import torch
            from torch.utils.data import TensorDataset
            g = torch.Generator().manual_seed(0)
            return TensorDataset(torch.randn(n, 2, 6, 6, generator=g), torch.arange(n) % classes)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_zoo"


def test_user_factory_gets_kwargs_and_data_shape(factory_module):
    model = create_model(f"{factory_module}:build", num_classes=5, in_channels=2, width=6)
    assert model[0].in_channels == 2 and model[0].out_channels == 6 and model[-1].out_features == 5
    with pytest.raises(UsageError, match="cannot import"):
        create_model("no_such_module_xyz:build", num_classes=2)
    with pytest.raises(UsageError, match="no callable"):
        create_model(f"{factory_module}:missing", num_classes=2)


def _tiny(num_classes=4, channels=(4, 8)):
    return create_model("edgekd:cnn", num_classes=num_classes, in_channels=1, input_size=8,
                        channels=list(channels), hidden=8)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_round_trip_and_model_from_config(tmp_path, suffix):
    src = _tiny()
    path = save_weights(src, tmp_path / f"w{suffix}")
    cfg = ModelConfig(model="edgekd:cnn", kwargs={"channels": [4, 8], "hidden": 8}, checkpoint=str(path))
    dst = model_from_config(cfg, 4, (1, 8, 8))
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_mismatches_are_named(tmp_path):
    path = save_weights(_tiny(), tmp_path / "w.safetensors")
    with pytest.raises(InputFileError, match=r"shape mismatch.*head\.3\.weight.*\(4, 8\).*\(6, 8\)"):
        load_weights(_tiny(num_classes=6), path)
    with pytest.raises(InputFileError, match=r"missing key\(s\), e.g. \['features.2.0.weight'"):
        load_weights(_tiny(channels=(4, 8, 8)), path)
    torch.save({"model": {"extra.weight": torch.zeros(1)} | _tiny().state_dict()}, tmp_path / "wrapped.pt")
    with pytest.raises(InputFileError, match=r"unexpected key\(s\), e.g. \['extra.weight'\]"):
        load_weights(_tiny(), tmp_path / "wrapped.pt")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_in_a_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Evil(str(marker))}, path)
    with pytest.raises(SecurityError):
        load_weights(_tiny(), path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ data
def _fake(**kw) -> DataConfig:
    return DataConfig(source="torchvision:FakeData", kwargs={"size": 40, "image_size": (3, 12, 12),
                                                             "num_classes": 4}, **kw)


def test_fakedata_with_recipe_transforms():
    s = load_data(_fake(transforms=TransformConfig(resize=8, mean=[0.5] * 3, std=[0.25] * 3)), seed=0)
    assert s.input_shape == (3, 8, 8) and s.num_classes == 4
    assert len(s.train) + len(s.val) + len(s.test) == 40
    assert s.preprocessing.std == (0.25,) * 3 and s.preprocessing.resize == 8 and not s.augmented
    x, y, i = s.train[0]
    assert x.shape == (3, 8, 8) and isinstance(y, int) and i == 0


def test_file_backed_augmentation_only_on_the_train_split():
    s = load_data(_fake(augment=True, in_memory="off", transforms=TransformConfig(crop=12, flip=True)), seed=0)
    assert s.augmented and s.augmentation is None  # per sample, by torchvision transforms
    a, b = s.train[0][0], s.train[0][0]
    e1, e2 = s.train_eval[0][0], s.train_eval[0][0]
    assert torch.equal(e1, e2)
    assert a.shape == e1.shape == (3, 12, 12) and b.shape == a.shape


def test_in_memory_decoding_matches_the_file_backed_path():
    """Decoded once into tensors (mean/std from all training images), the splits hold what the per-sample
    transforms give; augmentation moves to the batch (replayable), with the configured padding."""
    from edgekd.data import TensorSplit, to_numpy

    t = TransformConfig(resize=10, crop=8, flip=True, padding=2)
    mem = load_data(_fake(augment=True, transforms=t), seed=0)
    files = load_data(_fake(augment=True, in_memory="off", transforms=t), seed=0)
    assert isinstance(mem.train, TensorSplit) and mem.train is mem.train_eval
    assert mem.augmentation is not None and mem.augmentation.padding == 2 and mem.augmentation.flip
    np.testing.assert_allclose(mem.preprocessing.mean, files.preprocessing.mean, atol=2e-4)
    np.testing.assert_allclose(mem.preprocessing.std, files.preprocessing.std, atol=2e-4)
    for split in ("train_eval", "val", "test"):
        (xm, ym), (xf, yf) = to_numpy(getattr(mem, split)), to_numpy(getattr(files, split))
        np.testing.assert_array_equal(ym, yf)
        np.testing.assert_allclose(xm, xf, atol=2e-3)
    assert mem.identity != files.identity
    fill = mem.augmentation.fill  # the padding is a black pixel after normalisation
    np.testing.assert_allclose(fill, [-m / sd for m, sd in zip(mem.preprocessing.mean, mem.preprocessing.std,
                                                                strict=True)])


def test_given_statistics_far_from_the_data_are_warned(caplog):
    """Fashion-MNIST normalised with 0.5/0.5 (its own: 0.286/0.353) is the classic silent mistake."""
    with caplog.at_level("WARNING", logger="edgekd.data"):
        load_data(_fake(transforms=TransformConfig(mean=[0.9] * 3, std=[0.05] * 3)), seed=0)
    assert "far from the training images" in caplog.text and "omit both" in caplog.text
    caplog.clear()
    own = load_data(_fake(), seed=0).preprocessing
    with caplog.at_level("WARNING", logger="edgekd.data"):
        load_data(_fake(in_memory="off", transforms=TransformConfig(mean=list(own.mean), std=list(own.std))),
                  seed=0)
    assert "far from" not in caplog.text


def test_imagefolder_from_generated_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog", "eel"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            size = (10 + i, 12)  # mixed sizes: the resize makes them uniform
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    s = load_data(DataConfig(source=f"imagefolder:{tmp_path}", transforms=TransformConfig(resize=8),
                             val_fraction=0.2, test_fraction=0.2), seed=0)
    assert s.labels == ["cat", "dog", "eel"] and s.input_shape == (3, 8, 8) and s.num_classes == 3
    x, y = to_numpy(s.test)
    assert x.shape == (3, 3, 8, 8) and sorted(y.tolist()) == [0, 1, 2]
    with pytest.raises(InputFileError, match="image folder not found"):
        load_data(DataConfig(source=f"imagefolder:{tmp_path / 'missing'}"), seed=0)


def test_user_data_factory(factory_module):
    s = load_data(DataConfig(source=f"{factory_module}:fake_data", kwargs={"n": 30, "classes": 3}), seed=0)
    assert s.input_shape == (2, 6, 6) and s.num_classes == 3
    assert len(s.train) + len(s.val) + len(s.test) == 30


def test_digits_and_missing_or_unknown_sources(tmp_path):
    s = load_data(DataConfig(limit=300), seed=0)
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    with pytest.raises(InputFileError, match="CIFAR10 not found"):
        load_data(DataConfig(source="torchvision:CIFAR10", root=str(tmp_path), download=False), seed=0)
    with pytest.raises(UsageError, match="unknown torchvision dataset"):
        load_data(DataConfig(source="torchvision:NoSuchSet", root=str(tmp_path)), seed=0)
    with pytest.raises(UsageError, match="unknown data.source"):
        load_data(DataConfig(source="nonsense"), seed=0)


def test_in_memory_loader_batches_like_a_dataloader():
    from torch.utils.data import DataLoader

    from edgekd.data import TensorLoader, TensorSplit

    split = TensorSplit(torch.randn(50, 1, 4, 4), torch.arange(50) % 3)
    fast = make_loader(split, 8, shuffle=True, seed=2, epoch=3)
    gen = torch.Generator().manual_seed(2 * 1_000_003 + 3)
    slow = DataLoader(split, 8, shuffle=True, generator=gen)
    assert isinstance(fast, TensorLoader) and len(fast) == len(slow) == 7
    for a, b in zip(fast, slow, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_loader_with_workers_and_pinned_memory():
    s = load_data(_fake(), seed=0)
    loader = make_loader(s.train, 8, shuffle=True, seed=3, workers=2, pin_memory=False)
    again = make_loader(s.train, 8, shuffle=True, seed=3, workers=0)
    assert [b[2].tolist() for b in loader] == [b[2].tolist() for b in again]


# --------------------------------------------------------------------------------- models fit the data
def test_check_models_fit_names_model_and_mismatch():
    s = load_data(DataConfig(limit=200), seed=0)  # digits: (1, 8, 8), 10 classes
    good = create_model("edgekd:cnn", num_classes=10, in_channels=1, input_size=8, channels=[4], hidden=8)
    check_models_fit({"teacher": good, "student": good}, s)
    assert good.training  # mode restored
    rgb = create_model("edgekd:cnn", num_classes=10, in_channels=3, input_size=8, channels=[4], hidden=8)
    with pytest.raises(UsageError, match=r"student model cannot take the data's input \(N, 1, 8, 8\)"):
        check_models_fit({"teacher": good, "student": rgb}, s)
    wrong = create_model("edgekd:cnn", num_classes=7, in_channels=1, input_size=8, channels=[4], hidden=8)
    with pytest.raises(UsageError, match=r"teacher model outputs shape \(2, 7\), expected \(N, 10\)"):
        check_models_fit({"teacher": wrong}, s)
