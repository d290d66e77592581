"""`omnipress` command line: `demo`, `compare`, `stream`, `transcribe`, `eval-asr`, `profile` and the RAICL `eeg`
pipeline.

User errors print one line on stderr and exit with status 1 (2 for options that do not go together); `--debug`
shows the traceback instead. Help, `--version` and `eeg` do not import torch.
"""

from __future__ import annotations

import argparse
import sys

from ..extras import MissingExtraError
from .errors import CLIError, UsageError
from .options import COMMAND_MODULES, build_parser, check_args, command_module

__all__ = ["CLIError", "UsageError", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run `omnipress` with `argv` (default: the process arguments); returns the exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "eeg":
        from ..eeg.cli import main as eeg_main

        return eeg_main([*(["--debug"] if args.debug else []), *args.rest, *rest])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return _run(args)
    except (CLIError, MissingExtraError) as error:
        if args.debug:
            raise
        print(f"omnipress {args.command}: error: {error}", file=sys.stderr)
        return error.exit_status if isinstance(error, CLIError) else 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"omnipress {args.command}: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    """Check the options, then run the command (torch is imported only here)."""
    check_args(args)
    from . import commands
    from .progress import Progress

    progress = Progress(enabled=not getattr(args, "quiet", False))
    if args.command in COMMAND_MODULES:
        return int(command_module(COMMAND_MODULES[args.command]).run(args, progress) or 0)
    command = commands.demo if args.command == "demo" else commands.compare
    command(args, progress)
    return 0
