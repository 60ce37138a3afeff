"""`edgekd verify`: check a bundle before shipping or after copying it to a device (no torch)."""

from __future__ import annotations

HELP = "verify a bundle: checksums, model safety and structure, one test inference"
DESCRIPTION = """Checks, in order: every SHA256SUMS entry matches; model.json is complete; the ONNX file
passes the intake check (no external-data escapes, standard op domains) and onnx.checker; one inference
on a synthetic batch (mid-range pixels; for a text bundle, sample sentences through its own tokenizer, int64
(batch, sequence) inputs checked) returns finite outputs of the expected shape. Exit code 0 only if all pass.

  edgekd verify runs/digits/bundle"""


def add_arguments(p) -> None:
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="folder with model.onnx, model.json, SHA256SUMS")
    p.add_argument("--provider", default=None, help="execution provider(s), e.g. cpu or cuda,cpu")
    p.add_argument("--allow-domain", action="append", default=[], metavar="DOMAIN",
                   help="allow a non-standard ONNX operator domain (only for models you trust)")


def main(args) -> int:
    from rich.console import Console

    from edgekd.deploy.bundle import verify_bundle

    console = Console()
    for line in verify_bundle(args.bundle, providers=args.provider, allow_domains=set(args.allow_domain)):
        console.print(f"[green]✓[/] {line}")
    console.print(f"[bold green]bundle OK:[/] {args.bundle}")
    return 0
