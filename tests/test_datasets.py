"""`edgekd data fashion-mnist`: the Debian archives laid out for torchvision (download=False), checked, never
overwriting other files; and the Fashion-MNIST recipe reading such a folder: decoded once into memory, mean/std
from its training split, replayable batch augmentation."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.datasets import DEBIAN_FASHION_MNIST, FASHION_MNIST, layout_fashion_mnist
from edgekd.deploy.errors import InputFileError, UsageError

ROOT = Path(__file__).resolve().parent.parent


def _idx(magic: int, array: np.ndarray) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()


def fake_archives(folder: Path, n_train: int = 120, n_test: int = 40) -> dict:
    """Four gzip'd IDX files shaped like Fashion-MNIST (28×28 uint8, 10 classes), and their expected table."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):  # a learnable signal: a bright row per class
            images[i, 2 + 2 * c] = 250
        for name, magic, arr in ((f"{prefix}-images-idx3-ubyte", 2051, images),
                                 (f"{prefix}-labels-idx1-ubyte", 2049, labels)):
            content = _idx(magic, arr)
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
            expected[name] = (magic, n, hashlib.sha256(content).hexdigest())
    return expected


def test_layout_is_what_torchvision_reads_and_is_idempotent(tmp_path):
    import torchvision

    expected = fake_archives(tmp_path / "src")
    root = layout_fashion_mnist(tmp_path / "data", tmp_path / "src", expected)
    ds = torchvision.datasets.FashionMNIST(root, train=True, download=False)
    assert len(ds) == 120 and ds.classes[0] == "T-shirt/top"
    raw = root / "FashionMNIST" / "raw"
    before = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    layout_fashion_mnist(root, tmp_path / "src", expected)  # second time: kept as they are
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir()} == before


def test_layout_never_overwrites_and_rejects_bad_archives(tmp_path):
    expected = fake_archives(tmp_path / "src")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"mine")
    with pytest.raises(UsageError, match="exists with other content; refusing"):
        layout_fashion_mnist(tmp_path / "data", tmp_path / "src", expected)
    assert (raw / "train-labels-idx1-ubyte").read_bytes() == b"mine"

    (tmp_path / "src" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(InputFileError, match="not a readable gzip archive"):
        layout_fashion_mnist(tmp_path / "other", tmp_path / "src", expected)
    wrong = {**expected, "train-images-idx3-ubyte": (2051, 120, "0" * 64)}
    with pytest.raises(InputFileError, match="unexpected content"):
        layout_fashion_mnist(tmp_path / "third", tmp_path / "src", wrong)
    assert not (tmp_path / "third" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()
    with pytest.raises(InputFileError, match="apt-get install dataset-fashion-mnist"):
        layout_fashion_mnist(tmp_path / "x", tmp_path / "nowhere")


def test_cli_names_the_missing_package(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgekd.cli", "data", "fashion-mnist", str(tmp_path / "d"),
                           "--source", str(tmp_path / "none")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 3 and "dataset-fashion-mnist" in proc.stderr


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_debian_package_matches_the_published_dataset(tmp_path):
    root = layout_fashion_mnist(tmp_path)
    for name, (_, _, digest) in FASHION_MNIST.items():
        assert hashlib.sha256((root / "FashionMNIST" / "raw" / name).read_bytes()).hexdigest() == digest


def test_the_recipe_reads_a_laid_out_folder_into_memory(tmp_path):
    """models/fashion_mnist.yaml's data section on a laid-out folder: tensors decoded once, statistics of the
    training split; with data.augment switched on, the recipe's padding and flip as a replayable batch augmentation."""
    import torch

    from edgekd.data import TensorSplit, load_data
    from edgekd.recipe import load_recipe

    layout_fashion_mnist(tmp_path / "fm", tmp_path / "src", fake_archives(tmp_path / "src"))
    recipe = load_recipe(ROOT / "models" / "fashion_mnist.yaml", [f"data.root={tmp_path / 'fm'}"])
    assert load_data(recipe.data, recipe.seed).augmentation is None  # the recipe's default: augmentation off
    recipe = load_recipe(ROOT / "models" / "fashion_mnist.yaml", [f"data.root={tmp_path / 'fm'}", "data.augment=true"])
    s = load_data(recipe.data, recipe.seed)
    assert all(isinstance(split, TensorSplit) for split in (s.train, s.val, s.test))
    assert (len(s.train) + len(s.val), len(s.test)) == (120, 40) and s.input_shape == (1, 28, 28)
    assert abs(float(s.train.x.mean())) < 1e-4 and abs(float(s.train.x.std()) - 1) < 1e-3
    aug = s.augmentation
    assert aug is not None and (aug.padding, aug.flip) == (2, True)
    x = s.train.x[:8]
    assert not torch.equal(aug(x, torch.arange(8), 0), x)
