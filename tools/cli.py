"""The ``adt`` command line: it only dispatches.

Each command is a module ``adt.tools.commands.<name>`` with ``add_arguments(parser)`` and
``run(args) -> int`` (see :mod:`adt.tools.commands`). A command's module is imported only when that
command runs, so the device-side commands work in an install without torch.

Errors: an :class:`~adt.runtime.format.AdtError` (which includes :class:`~adt.tools.errors.CommandError`)
or a missing file prints one line ``adt <cmd>: error: ...`` to stderr and exits 1; a usage error
exits 2. No tracebacks for user errors.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass

from adt.runtime.format import AdtError

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """A subcommand: the module under ``adt.tools.commands`` that implements it, and its one-line help
    (kept here, not in the module, so that ``adt --help`` imports no command)."""

    module: str
    summary: str


# Order is the order of `adt --help`.
COMMANDS: dict[str, Command] = {
    "demo": Command("demo", "compress LeNet-5 for a short schedule, export, inspect and score it (needs [export])"),
    "compress": Command("compress", "train/convert a model with ADA-Tucker or SCADA-Tucker and export a .adt file "
                                    "(needs [export])"),
    "run": Command("run", "run a .adt model on image files or a .npy batch (preprocessed by the file's input convention), or score "
                           "it on a labelled test set (torch-free)"),
    "inspect": Command("inspect", "show where every byte of a .adt file goes and its true compression ratio"),
    "verify": Command("verify", "check a .adt file end to end: checksum, decode, rebuild, forward pass"),
    "bench": Command("bench", "time decode, rebuild and inference of a .adt file against the dense ONNX baseline; "
                              "peak memory of the load and of the load plus the first run"),
    "to-onnx": Command("to_onnx", "write the dense ONNX model rebuilt from a .adt file"),
}

# The optional packages a command may need, and the extra that installs each.
_EXTRAS = {"torch": "export", "onnxscript": "export", "tensorly": "export", "matplotlib": "plot",
           "onnx": "onnx", "onnxruntime": "onnx"}


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
    """The top-level parser: ``adt --help`` / ``--version`` and the list of commands."""
    parser = _OneLineParser(
        prog="adt",
        description="ADT: compress networks with ADA-Tucker into .adt files and run them without torch.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.summary, description=command.summary, add_help=False)
        p.set_defaults(_module=command.module)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version
        return f"adt {version('adt')}"
    except Exception:  # not installed (running from a checkout)
        return "adt (unknown version)"


def _quiet_onnxruntime() -> None:
    """onnxruntime reports at fatal severity only (its errors reach the command as AdtExecutionError):
    the one-line error is all that stderr shows. onnxruntime itself is not imported here."""
    try:
        from adt.runtime.ort_engine import configure_logging
    except ImportError:  # a partial install: nothing to quiet
        return
    configure_logging(severity=4)


def main(argv: list[str] | None = None) -> int:
    """Run ``adt ARGV`` and return the exit status (usage errors and --help raise SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse once to find the command, then let its module add its own options.
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help/version, or a usage error naming the bad command
        parser.print_help()
        return 2
    name = argv[0]
    command = COMMANDS[name]
    try:
        module = importlib.import_module(f"adt.tools.commands.{command.module}")
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in _EXTRAS:
            return _fail(name, f"this command needs {exc.name!r}: pip install 'adt[{_EXTRAS[top]}]'")
        raise
    sub_parser = _OneLineParser(prog=f"adt {name}", description=command.summary)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    _quiet_onnxruntime()
    try:
        return int(module.run(args) or 0)
    except AdtError as exc:  # CommandError is one
        return _fail(name, str(exc))
    except ModuleNotFoundError as exc:
        return _fail(name, f"missing optional dependency {exc.name!r}; see README for the extras")
    except BrokenPipeError:  # before OSError, its base class
        # The reader went away (e.g. `adt inspect f.adt | head`): not an error worth a message.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as exc:
        return _fail(name, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        return _fail(name, "interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
