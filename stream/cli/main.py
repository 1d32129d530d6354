"""`segstream` command line: one entry point, one module per sub-command.

Each sub-command lives in ``stream/cli/cmd_<name>.py`` (the demo tools' commands in
``stream/tools/``: simulate, watch) and exposes
``register(subparsers: argparse._SubParsersAction) -> None``; the parser it adds sets
``func`` (called with the parsed namespace, returns the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence

from stream.cli.helpfmt import HelpFormatter, uniform
from stream.cli.servers import EXIT_UNAVAILABLE, UnavailableError
from stream.settings import SettingsError

# Sub-command modules, in the order `segstream --help` lists them. A module that is not
# present yet (feature not built) is skipped, so the CLI always starts.
COMMAND_MODULES = (
    "stream.cli.cmd_worker",
    "stream.cli.cmd_collector",
    "stream.cli.cmd_replay",
    "stream.cli.cmd_schemas",
    "stream.cli.cmd_segments",
    "stream.cli.cmd_types",
    "stream.tools.simulate",
    "stream.tools.watch",
    "stream.cli.cmd_redis",
    "stream.deliver.command",  # `segstream deliver` (its register() is add_parser)
)


def version_line() -> str:
    """``segstream <version> (engine: compiled (mypyc, ...) | pure Python (<why>))``."""
    from processors import native  # noqa: PLC0415 - only what --version needs

    try:
        version = importlib.metadata.version("segstream")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"segstream {version} (engine: {native.describe()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segstream",
        description="Real-time behavioural customer segmentation on Kafka. Run "
                    "`segstream COMMAND --help` for a command's options; the reference is "
                    "docs/operations.md#command-line.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print the version and which engine build is loaded, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    uniform(parser)
    return parser


#: Exit status when stdout is closed early (``segstream replay --out - | head``): what a shell
#: reports for a Unix tool killed by SIGPIPE (128 + 13); nothing is printed.
EXIT_BROKEN_PIPE = 141


def _stdout_gone() -> int:
    """After a BrokenPipeError: point stdout at /dev/null so the interpreter's final flush
    cannot fail again (the idiom of the Python docs, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command and return its exit status (see the CLI reference in
    docs/operations.md#command-line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_gone()
    except SettingsError as exc:  # e.g. a password file that cannot be read (never its content)
        print(f"segstream {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except UnavailableError as exc:
        print(f"segstream {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
