"""The ``adt`` command line. Each subcommand lives in its own module ``adt.tools.cmd_<name>`` with
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their command runs,
so the device-side commands work in an install without torch.

Errors: an :class:`~adt.runtime.format.AdtError` (or a bad option / missing file) prints one line
``adt <cmd>: error: ...`` to stderr and exits 1 (2 for usage errors). No tracebacks for user errors.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Order is the order of `adt --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("cmd_demo", "compress LeNet-5 for a short schedule, export, inspect and score it (needs [export])"),
    "compress": ("cmd_compress", "train/convert a model with ADA-Tucker or SCADA-Tucker and export a .adt file (needs [export])"),
    "run": ("cmd_run", "run a .adt model on a .npy input or score it on MNIST (torch-free)"),
    "inspect": ("cmd_inspect", "show where every byte of a .adt file goes and its true compression ratio"),
    "verify": ("cmd_verify", "check a .adt file end to end: checksum, decode, rebuild, forward pass"),
    "bench": ("cmd_bench", "time decode, rebuild and inference of a .adt file against the dense ONNX baseline"),
    "to-onnx": ("cmd_to_onnx", "write the dense ONNX model rebuilt from a .adt file"),
}


class CommandError(Exception):
    """A user-facing failure of a subcommand: printed as one line, exit status 1."""


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (``adt CMD: error: ...``), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _fail(cmd: str, message: str, status: int = 1) -> int:
    first = str(message).strip().splitlines()[0] if str(message).strip() else type(message).__name__
    print(f"adt {cmd}: error: {first}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="adt",
        description="ADT: compress networks with ADA-Tucker into .adt files and run them without torch.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, add_help=False)
        p.set_defaults(_module=module)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version
        return f"adt {version('adt')}"
    except Exception:  # not installed (running from a checkout)
        return "adt (unknown version)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse once to find the command, then let its module add its own options.
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help/version, or a usage error naming the bad command
        parser.print_help()
        return 2
    known = argparse.Namespace(command=argv[0])
    module_name = COMMANDS[known.command][0]
    sub_parser = _OneLineParser(prog=f"adt {known.command}", description=COMMANDS[known.command][1])
    try:
        module = importlib.import_module(f"adt.tools.{module_name}")
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] in ("torch", "onnx", "onnxruntime", "onnxscript", "tensorly", "matplotlib"):
            extra = {"torch": "export", "onnxscript": "export", "tensorly": "export", "matplotlib": "plot"}.get(
                missing.split(".")[0], "onnx")
            return _fail(known.command, f"this command needs {missing!r}: pip install 'adt[{extra}]'")
        raise
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    from adt.runtime.format import AdtError
    try:
        return int(module.run(args) or 0)
    except (AdtError, CommandError) as exc:
        return _fail(known.command, str(exc))
    except ModuleNotFoundError as exc:
        return _fail(known.command, f"missing optional dependency {exc.name!r}; see README for the extras")
    except OSError as exc:
        return _fail(known.command, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        return _fail(known.command, "interrupted", 130)
    except BrokenPipeError:
        # The reader went away (e.g. `adt inspect f.adt | head`): not an error worth a message.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    # Import through the package so CommandError is the same class the commands raise.
    from adt.tools.cli import main as _main
    sys.exit(_main())
