"""`edgekd data`: lay out a locally installed dataset for its torchvision class (no download)."""

from __future__ import annotations

HELP = "lay out a locally installed dataset (Debian's dataset-fashion-mnist) for a recipe's data.root"
DESCRIPTION = """Copies and decompresses the dataset's files into ROOT the way torchvision reads them with
download: false, checking sample counts and SHA-256; files already in place are kept, others never
overwritten.

  sudo apt-get install dataset-fashion-mnist
  edgekd data fashion-mnist data/fashion-mnist
  edgekd run models/fashion_mnist.yaml --out runs/fmnist --seeds 3"""


def add_arguments(p) -> None:
    p.add_argument("dataset", choices=["fashion-mnist"], help="the dataset")
    p.add_argument("root", metavar="ROOT", help="folder to lay it out in (the recipe's data.root)")
    p.add_argument("--source", default=None, metavar="DIR",
                   help="folder holding the .gz files (default: /usr/share/datasets/fashion-mnist)")


def main(args) -> int:
    from rich.console import Console

    from edgekd.datasets import DATASETS, DEBIAN_FASHION_MNIST

    root = DATASETS[args.dataset](args.root, args.source or DEBIAN_FASHION_MNIST)
    Console().print(f"{args.dataset}: ready in {root} (set data.root: {root})", markup=False, highlight=False)
    return 0
