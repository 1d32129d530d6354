"""How every ``segstream`` parser formats its help, and what a command group does without
its action (the same as bare ``segstream``: its help on stdout, exit status 0)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (paragraphs, lists); every option that takes a value shows its
    default as ``(default: X)`` unless its help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or any(default is v for v in (None, False, argparse.SUPPRESS))
                or not action.option_strings or action.nargs == 0):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


def print_help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The ``func`` of a command group run without its action: its help on stdout, exit 0."""
    def show(_: argparse.Namespace) -> int:
        parser.print_help()
        return 0
    return show


def uniform(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every parser below it the :class:`HelpFormatter`, and make each
    command group without an action print its help (exit 0) instead of an error."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:  # argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):
            action.required = False
            for child in action.choices.values():
                if child.get_default("func") is None:
                    child.set_defaults(func=print_help_of(child))
                uniform(child)
