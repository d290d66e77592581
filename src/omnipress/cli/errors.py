"""The errors the command line prints as one line (the traceback only under `--debug`)."""

from __future__ import annotations


class CLIError(Exception):
    """A user error (a missing file, a model that cannot be loaded, a bad setting): exit status 1."""

    exit_status = 1


class UsageError(CLIError):
    """Options that do not fit together (or name nothing valid): exit status 2, like argparse's own errors."""

    exit_status = 2
