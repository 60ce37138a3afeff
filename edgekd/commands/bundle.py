"""`edgekd bundle`: package a run's artifact as a self-describing bundle."""

from __future__ import annotations

HELP = "package a run's artifact (model.onnx + model.json + SHA256SUMS) for an app or device"
DESCRIPTION = """Write BUNDLE_DIR with model.onnx, model.json (inputs/outputs, the preprocessing contract, labels,
precision, metrics, producer versions), an optional TensorRT engine with its sidecar, and SHA256SUMS over every
file. Load it with edgekd.load_bundle (numpy + onnxruntime only). BUNDLE_DIR must be new, empty or an edgekd
bundle (anything else is refused, never overwritten), and outside the run folder.

  edgekd bundle runs/digits --out shipped/                      # the artifact the run chose
  edgekd bundle runs/digits --artifact student-onnx-fp32 --out shipped/"""


def add_arguments(p) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a finished `edgekd run` folder (with results.json)")
    p.add_argument("--artifact", default=None,
                   help="artifact name from results.json (default: the one the run chose)")
    p.add_argument("--engine", default=None, metavar="MODEL.engine",
                   help="also ship a TensorRT engine (its .json sidecar must sit next to it)")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle folder to write")


def main(args) -> int:
    from rich.console import Console

    from edgekd.commands._common import require_inputs
    from edgekd.runs import bundle_from_run

    require_inputs((args.run, "run folder"), (args.engine, "engine"))
    out, name = bundle_from_run(args.run, args.out, args.artifact, args.engine)
    Console().print(f"wrote bundle {out} ({name})", markup=False)
    return 0
