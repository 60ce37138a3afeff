"""CLI subcommands. Each module defines ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``.

Modules import only argparse-level things at import time; the library code they call (and torch) is
imported inside ``main``, so ``edgekd --help`` and ``edgekd bench`` stay torch-free.
"""
