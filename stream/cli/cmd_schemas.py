"""`segstream schemas`: publish the event contract as JSON Schema files.

``segstream schemas export DIR`` writes one file per event type, ``event.json`` (any event),
``record.json`` (a raw-topic record) and ``segment_change.json``, all generated from the models
in :mod:`schemas.models`. ``make schemas`` regenerates the committed copies in
``schemas/jsonschema/``; ``--check`` exits 1 if the files in DIR differ (for CI). With
``--types FILE`` (an event-types file) it also writes one file per declared custom type, and
``event.json`` / ``record.json`` accept them too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processors.lang.errors import DefinitionError
from processors.lang.typesfile import load_types
from schemas.publish import build_schemas, export, render

DESCRIPTION = """\
Publish the event contract as JSON Schema files: `segstream schemas export DIR` writes one
file per event type, event.json (any event), record.json (a raw-topic record) and
segment_change.json, generated from the event models. `make schemas` regenerates the copies
in schemas/jsonschema/; with --check nothing is written and the exit status is 1 when the
files in DIR are out of date (for CI).

exit status: 0 done (or up to date); 1 --check found files out of date; 4 DIR cannot be
written.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "schemas", help="publish the event contract (JSON Schema)", description=DESCRIPTION,
    )  # fmt: skip
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    exp = actions.add_parser("export", help="write the JSON Schema files into DIR",
                             description="Write the JSON Schema files into DIR (created when "
                                         "missing); --check: exit 1 if DIR is out of date.")
    exp.add_argument("directory", metavar="DIR", type=Path, help="where the files go")
    exp.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if DIR is out of date"
    )
    exp.add_argument("--types", metavar="FILE", type=Path, default=None,
                     help="event-types file: also the schemas of its custom types "
                          "(default: built-in types only)")
    exp.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    types = None
    if getattr(args, "types", None) is not None:
        try:
            types = load_types(args.types)
        except DefinitionError as err:
            print(err, file=sys.stderr)
            return 3
        except OSError as err:
            print(f"cannot read {args.types}: {err.strerror or err}", file=sys.stderr)
            return 2
    if args.check:
        stale = [
            name
            for name, schema in build_schemas(types).items()
            if not (directory / f"{name}.json").is_file()
            or (directory / f"{name}.json").read_bytes() != render(schema)
        ]
        if stale:
            print(f"out of date in {directory}: {', '.join(stale)} (run: make schemas)",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"{directory}: up to date")
        return 0
    try:
        paths = export(directory, types)
    except OSError as err:
        print(f"segstream schemas export: cannot write {err.filename or directory}: "
              f"{err.strerror or err}", file=sys.stderr)
        return 4
    for path in paths:
        print(path)
    return 0
