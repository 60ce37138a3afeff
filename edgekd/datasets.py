"""Lay out datasets that are installed locally (no download) the way their torchvision class reads them.

Fashion-MNIST ships in Debian/Ubuntu as ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/*.gz``);
``torchvision.datasets.FashionMNIST(root, download=False)`` reads ``root/FashionMNIST/raw/*-ubyte``.
:func:`layout_fashion_mnist` copies the archives there, decompresses them and checks every file (IDX header,
sample counts, SHA-256 of the content). Files already there with the right content are kept; a file with
other content is never overwritten.

Example:
    >>> layout_fashion_mnist("data/fashion-mnist")          # doctest: +SKIP
    PosixPath('data/fashion-mnist')
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
from pathlib import Path

from edgekd.deploy.errors import InputFileError, UsageError

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: decompressed file → (IDX magic, sample count, SHA-256 of the content): the dataset's 60,000 training and
#: 10,000 test images (28×28 uint8) and labels, as published by Zalando Research (MIT licence)
FASHION_MNIST = {
    "train-images-idx3-ubyte": (2051, 60000, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte": (2049, 60000, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte": (2051, 10000, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte": (2049, 10000, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}


def layout_fashion_mnist(root: str | Path, source: str | Path = DEBIAN_FASHION_MNIST,
                         expected: dict[str, tuple[int, int, str]] = FASHION_MNIST) -> Path:
    """Make ``root`` readable by ``torchvision.datasets.FashionMNIST(root, download=False)``; returns ``root``.
    ``expected`` maps each file to its IDX magic, sample count and SHA-256.

    Raises:
        InputFileError: the source archives are missing or corrupt.
        UsageError: a file in the way holds something else (it is left alone).
    """
    from edgekd.deploy.fileio import atomic_write

    root, source = Path(root), Path(source)
    raw = root / "FashionMNIST" / "raw"
    missing = [f"{name}.gz" for name in expected if not (source / f"{name}.gz").is_file()]
    if missing:
        raise InputFileError(f"Fashion-MNIST archives not found in {source}: {', '.join(missing)}",
                             hint="sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu), or pass --source "
                                  "the folder holding the four .gz files")
    raw.mkdir(parents=True, exist_ok=True)
    for name, (magic, count, digest) in expected.items():
        target, archive = raw / name, source / f"{name}.gz"
        if target.exists():
            if _sha256(target) == digest:
                log.info("%s: already in place", target)
            else:
                raise UsageError(f"{target} exists with other content; refusing to overwrite it",
                                 hint="remove it yourself if it is a broken copy, or choose another folder")
        else:
            try:
                with gzip.open(archive, "rb") as src, atomic_write(target) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (OSError, EOFError) as exc:
                raise InputFileError(f"{archive} is not a readable gzip archive: {exc}",
                                     hint="reinstall the package: sudo apt-get install --reinstall "
                                          "dataset-fashion-mnist") from None
            _check_idx(target, magic, count, digest)
    return root


def _check_idx(path: Path, magic: int, count: int, digest: str) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    found = (int.from_bytes(head[:4], "big"), int.from_bytes(head[4:8], "big")) if len(head) == 8 else None
    if found != (magic, count) or _sha256(path) != digest:
        path.unlink()
        raise InputFileError(f"{path.name}: unexpected content (IDX header {found}, expected {(magic, count)}, or "
                             "another SHA-256)", hint="reinstall the package: sudo apt-get install --reinstall "
                                                      "dataset-fashion-mnist")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


DATASETS = {"fashion-mnist": layout_fashion_mnist}
