"""``edgekd`` command line: thin subcommands over the Python API.

Errors: one line ``error: …`` (and ``hint: …``) on stderr, exit code from :mod:`deploy.errors`; the
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys

from edgekd import __version__

#: errno values of a path that cannot be used (a file in the way, a folder that cannot exist, too long)
_PATH_ERRNOS = {errno.ENOTDIR, errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.EISDIR}

#: words of an ONNX Runtime error that is an allocation failure (its arena, or C++ std::bad_alloc), not a refusal
ORT_ALLOCATION_FAILURES = ("Failed to allocate", "Failed to alloc", "bad_alloc", "BFCArena")

#: packages edgekd itself depends on (a broken environment can still lack one)
BASE_MODULES = {"onnx": "onnx", "numpy": "numpy", "yaml": "pyyaml"}  # import name → pip name

#: name → module in edgekd.commands (each has HELP, add_arguments, main)
COMMANDS = ["run", "distill", "tune", "export", "quantize", "engine", "bundle", "bench", "report", "verify",
            "data"]

EPILOG = """exit codes: 0 ok, 1 internal error, 2 bad usage/recipe, 3 bad input file, 4 unsafe input,
5 verification failed, 6 training diverged, 7 missing package, 8 out of resources, 9 cannot resume.
Docs: README.md. Run `edgekd COMMAND --help` for a command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekd", description="Teacher → distilled student → ONNX/INT8/TensorRT → benchmark → bundle.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgekd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    common.add_argument("-v", "--verbose", action="store_true", help="show info logs from the library")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only results and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"edgekd.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def _configure_logging(args) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    from rich.logging import RichHandler

    handler = RichHandler(show_time=False, show_path=args.debug, markup=False, rich_tracebacks=False,
                          console=_stderr_console())
    # edgekd's own loggers at the chosen level; third-party libraries stay at warnings (no font-cache spam)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    logging.getLogger("edgekd").setLevel(level)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def report_error(exc: BaseException) -> int:
    from rich.markup import escape

    from edgekd.deploy.errors import EdgekdError

    err = _stderr_console()
    if isinstance(exc, EdgekdError):
        err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True, highlight=False)
        if exc.hint:
            err.print(f"[yellow]hint:[/] {escape(exc.hint)}", markup=True, highlight=False)
        return exc.exit_code
    err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}", markup=True,
              highlight=False)
    err.print("[yellow]hint:[/] run again with --debug for the traceback and report it", markup=True)
    return 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (how schedulers stop jobs), handled like Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def translate(exc: BaseException) -> BaseException:
    """Known failures from below edgekd (a missing package, a full disk, an unwritable folder, memory, ONNX
    Runtime refusing an input, a bad archive) as the user errors they are, with their documented exit codes."""
    import zipfile

    from edgekd.commands._common import TRAIN_MODULES
    from edgekd.deploy.errors import DependencyError, InputFileError, ResourceError, UsageError

    missing = (exc.name or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
    if missing in TRAIN_MODULES:
        return DependencyError(f"this command needs the Python package '{exc.name}', which is not installed",
                               hint="install the training extra: pip install 'edgekd[train,ort]'")
    if missing in BASE_MODULES:
        return DependencyError(f"this command needs the Python package '{missing}', which is not installed",
                               hint=f"it is one of edgekd's own dependencies: pip install "
                                    f"{BASE_MODULES[missing]} (or reinstall edgekd)")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return ResourceError(f"{exc.strerror}: {exc.filename or ''}".strip(": "),
                             hint="free disk space or choose another --out folder")
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputFileError(f"cannot write or read {exc.filename or 'a file'}: {exc.strerror}",
                              hint="choose a folder you can write (check its permissions; is it read-only?)")
    if isinstance(exc, OSError) and exc.errno in _PATH_ERRNOS:
        return _path_error(exc)
    oom = "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower()
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (isinstance(exc, RuntimeError)
                                                                                    and oom):
        return ResourceError(f"out of memory ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
                             hint="lower data.batch_size / data.eval_batch_size, or use a machine with more memory")
    if isinstance(exc, zipfile.BadZipFile):
        return InputFileError(f"not a readable zip/.npz archive: {exc}", hint="re-create the file")
    if type(exc).__module__.startswith("onnxruntime"):
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        if any(mark in str(exc) for mark in ORT_ALLOCATION_FAILURES):
            return ResourceError(f"out of memory in ONNX Runtime ({first})",
                                 hint="use a smaller batch (--batch / bench.throughput_batch), or a machine with "
                                      "more memory")
        cls = UsageError if type(exc).__name__ == "InvalidArgument" else InputFileError
        return cls(f"ONNX Runtime refused it: {first}", hint="check the model and the inputs you gave it")
    return exc


def _path_error(exc: OSError):
    """A path that cannot be a file or folder (a file where a folder must be, a folder that cannot be made, a
    name too long) as an input/output error, naming the part of the path that is in the way."""
    import errno
    from pathlib import Path

    from edgekd.deploy.errors import InputFileError

    name = str(exc.filename or "a file")
    hint = "choose another --out path (a folder you can write)"
    if exc.errno == errno.ENAMETOOLONG:
        return InputFileError(f"path too long: {name}: {exc.strerror}", hint="use a shorter path")
    blocker = next((p for p in [Path(name), *Path(name).parents] if p.exists() and not p.is_dir()), None)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and blocker is not None:
        what = "it is a file" if blocker == Path(name) else f"{blocker} is a file"
        return InputFileError(f"cannot create folder {name}: {what}", hint=hint)
    return InputFileError(f"cannot write or read {name}: {exc.strerror}", hint=hint)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    from edgekd.factories import ENV_SWITCH

    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    policy = os.environ.get(ENV_SWITCH)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt as exc:
        how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        resumable = " — nothing half-written is kept; continue with --resume" if args.command in ("run",
                                                                                             "distill") else ""
        _stderr_console().print(f"interrupted ({how}){resumable}", markup=False)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        from edgekd.deploy.errors import EdgekdError

        exc = translate(exc)
        if args.debug:
            import traceback

            traceback.print_exc()
            if not isinstance(exc, EdgekdError):
                return 1
        return report_error(exc)
    finally:  # --no-factories and the SIGTERM handler hold for this command only (tests, notebooks run more)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if policy is None:
            os.environ.pop(ENV_SWITCH, None)
        else:
            os.environ[ENV_SWITCH] = policy


if __name__ == "__main__":
    sys.exit(main())
