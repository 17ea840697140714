"""``adt inspect FILE.adt``: where every byte goes, the true ratio and the paper's formula ratios."""
from __future__ import annotations

import argparse
import json
import sys

from adt.tools.errors import CommandError
from adt.tools.inspect_report import build_report, plot_report, render_text

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the .adt file to inspect")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (for scripts)")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="also draw the size breakdown to this PNG (needs matplotlib: the [plot] extra)")


def run(args: argparse.Namespace) -> int:
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (checked before the work, so the error comes first)
        except ImportError:
            raise CommandError("--plot needs matplotlib: pip install 'adt[plot]'") from None
    report = build_report(args.file)
    if args.json:
        # ensure_ascii: names from the file cannot put raw control characters on the terminal.
        sys.stdout.write(json.dumps(report, indent=1, ensure_ascii=True) + "\n")
    else:
        sys.stdout.write(render_text(report))
    if args.plot:
        plot_report(report, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0
