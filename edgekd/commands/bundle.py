"""`edgekd bundle`: package a run's artifact as a self-describing bundle."""

from __future__ import annotations

HELP = "package a run's artifact (model.onnx + model.json + SHA256SUMS) for an app or device"
DESCRIPTION = """Write BUNDLE_DIR with model.onnx, model.json (input name/shape/dtype/layout, normalization,
labels, precision, metrics, producer versions), an optional TensorRT engine with its sidecar, and
SHA256SUMS over every file. Load it with deploy.runtime.load_bundle (numpy + onnxruntime only).

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
    import json
    from pathlib import Path

    from rich.console import Console

    from edgekd.deploy.bundle import write_bundle
    from edgekd.deploy.errors import InputFileError, UsageError
    from edgekd.shipping import bundle_meta

    run = Path(args.run)
    try:
        results = json.loads((run / "results.json").read_text())
        data_info = json.loads((run / "data.json").read_text())
    except FileNotFoundError as exc:
        raise InputFileError(f"{run} is not a finished run folder: {Path(exc.filename).name} is missing",
                             hint="run `edgekd run --out DIR` first") from None
    rows = {r["name"]: r for r in results.get("artifacts", []) if r["format"] == "onnx"}
    name = args.artifact or (results.get("bundle") or {}).get("chosen")
    if name not in rows:
        raise UsageError(f"artifact {name!r} is not an ONNX artifact of {run}", hint=f"choose from {sorted(rows)}")
    extra = []
    if args.engine:
        engine = Path(args.engine)
        sidecar = engine.with_suffix(engine.suffix + ".json")
        if not engine.is_file() or not sidecar.is_file():
            raise InputFileError(f"engine {engine} or its sidecar {sidecar.name} is missing",
                                 hint="build it with `edgekd engine`, which writes both")
        extra = [engine, sidecar]
    meta = bundle_meta(data_info, rows[name], results.get("device", {}), results["recipe"]["name"])
    out = write_bundle(args.out, run / rows[name]["path"], meta, extra)  # paths are relative to the run
    Console().print(f"wrote bundle {out} ({name})", markup=False)
    return 0
