"""The ``medsegfm`` command line.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds an ``argparse`` parser whose
``func`` default takes the parsed ``args`` and returns an exit code.
Add a subcommand by adding its module name to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sqlite3
import sys
from collections.abc import Sequence

from .. import __version__

_COMMANDS: list[str] = ["batch", "dataset", "vocab", "weights", "convert", "predict", "evaluate", "backends"]


class CLIError(Exception):
    """An error the CLI reports as one line on stderr with a non-zero exit code.

    Parameters
    ----------
    message : str
        The line to print (after ``medsegfm <command>: error:``).
    code : int
        Exit code (2: bad input, 3: prompt the backend cannot serve, 4: backend unusable, 1: some cases failed).
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


_ROLE = re.compile(r":(?:func|mod|class|data|meth|attr|obj|exc):`~?([^`]+)`")


def plain_help(text: str | None) -> str | None:
    """Help text without reST markup, for ``--help`` in a terminal.

    ``:func:`~a.b.c``` becomes ``c`` (without ``~``: ``a.b.c``); double and single
    backticks are dropped.

    Parameters
    ----------
    text : str or None
        A docstring or help string.

    Returns
    -------
    str or None
        ``None`` for ``None``.
    """
    if text is None:
        return None

    def role(m: re.Match[str]) -> str:
        target = m.group(1)
        return target.rsplit(".", 1)[-1] if m.group(0).startswith(":") and "~" in m.group(0) else target

    text = _ROLE.sub(role, text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    return re.sub(r"`([^`]+)`", r"\1", text)


def build_parser() -> argparse.ArgumentParser:
    """The ``medsegfm`` argument parser with every sub-command registered (help without reST markup).

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="medsegfm",
        description="Promptable medical image segmentation: predict, evaluate, batch, convert.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    _plain_parser(parser)
    return parser


def _plain_parser(parser: argparse.ArgumentParser) -> None:
    """:func:`plain_help` on the description and every argument's help, sub-commands included."""
    parser.description = plain_help(parser.description)
    parser.epilog = plain_help(parser.epilog)
    for action in parser._actions:
        action.help = plain_help(action.help) if isinstance(action.help, str) else action.help
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain_help(choice.help) if isinstance(choice.help, str) else choice.help
            for sub in set(action.choices.values()):
                _plain_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medsegfm`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit code: the sub-command's, 2 without a sub-command or for bad input
        (``FileNotFoundError``, ``PermissionError``, ``ValueError``, a status-database error),
        a :class:`CLIError`'s own code, 130 on Ctrl-C. Errors are printed as one line on stderr.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.own_process = argv is None  # run as the `medsegfm` program, not called from Python (tests, notebooks)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"medsegfm {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except (FileNotFoundError, PermissionError, ValueError) as exc:
        print(f"medsegfm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:  # a status database that broke while in use
        print(f"medsegfm {args.command}: error: status database: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medsegfm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
