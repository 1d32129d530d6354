"""The ``segstream`` command line (entry point ``stream.cli:main``, or ``python -m stream.cli``).

:mod:`stream.cli.main` builds the parser from the sub-command modules (``cmd_<name>.py`` here,
the demo tools' commands in :mod:`stream.tools`); each command parses its options and calls the
code that does the work (worker, collector, replay, ...), it holds no logic of its own.
"""

from stream.cli.main import main

__all__ = ["main"]
