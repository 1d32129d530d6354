"""`segstream types`: check, publish and show the custom event types (an event-types file).

``validate FILE`` checks a file offline. ``apply FILE`` checks it, refuses a change that breaks
a loaded segment definition (a removed type or property that a segment uses, a changed kind:
the message names the segment), and publishes it on the compacted event-types topic: the
workers and the collectors switch within seconds, without a restart. ``show`` prints what is
published. Exit codes: 0 OK, 2 usage, 3 invalid or breaking file, 4 Kafka or file I/O.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processors.lang.errors import DefinitionError
from processors.lang.typesfile import load_types
from schemas.eventtypes import EventTypes
from stream.cli.cmd_segments import read_last, read_published, read_text_file
from stream.cli.servers import EXIT_UNAVAILABLE
from stream.definitions import file_catalogue
from stream.eventtypes import TYPES_PARTITION, TypesDoc, breaking_changes, publish_types
from stream.settings import Settings

EXIT_OK, EXIT_USAGE, EXIT_DEFINITIONS, EXIT_IO = 0, 2, 3, 4

DESCRIPTION = """\
Manage the custom event types (an event-types file), without a restart.

  validate FILE         check an event-types file offline (no server is contacted)
  apply FILE            refuse a change that breaks a loaded segment definition (a removed
                        type or property that a segment uses, a changed kind: the message names
                        the segment), else publish FILE on the compacted event-types topic:
                        workers and collectors switch within seconds
  apply FILE --dry-run  the same checks and report; publishes nothing
  show                  the published event types

Only `apply` (without --dry-run) creates the event-types topic when it is missing.

exit status: 0 done; 2 usage; 3 invalid or breaking file; 4 file I/O; 69 Kafka cannot be
reached.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("types", help="validate, publish or show the custom event types",
                              description=DESCRIPTION)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    v = sub.add_parser("validate", help="check an event-types file (offline)",
                       description="Check an event-types file offline: every problem with its "
                                   "line (exit 3).")
    v.add_argument("file", type=Path, help="the event-types file (YAML)")
    v.set_defaults(func=_validate)
    a = sub.add_parser("apply", help="publish an event-types file to the running processes",
                       description="Check an event-types file against the definitions the "
                                   "workers run and publish it on the event-types topic.")
    a.add_argument("file", type=Path, help="the event-types file (YAML)")
    a.add_argument("--dry-run", action="store_true",
                   help="show the change, publish nothing, create no topic (default: off)")
    a.set_defaults(func=_apply)
    s = sub.add_parser("show", help="print the published event types",
                       description="Print the published event types (reads the event-types "
                                   "topic; creates nothing).")
    s.add_argument("--text", action="store_true",
                   help="print the whole YAML text (default: a summary)")
    s.set_defaults(func=_show)


def _summary(types: EventTypes) -> str:
    return f"version {types.version!r}, {len(types.types)} types ({', '.join(types.names)})"


def _validate(args: argparse.Namespace) -> int:
    text = read_text_file(args.file)
    if isinstance(text, int):
        return text
    try:
        types = load_types(text, name=str(args.file))
    except DefinitionError as err:
        print(err, file=sys.stderr)
        return EXIT_DEFINITIONS
    print(f"{args.file}: {_summary(types)}: OK")
    return EXIT_OK


def _diff(old: EventTypes | None, new: EventTypes) -> list[str]:
    before = {t.name: t for t in old.types} if old is not None else {}
    after = {t.name: t for t in new.types}
    out = []
    for label, names in (("added", sorted(after.keys() - before.keys())),
                         ("removed", sorted(before.keys() - after.keys())),
                         ("changed", sorted(n for n in after.keys() & before.keys()
                                            if after[n] != before[n]))):
        if names:
            out.append(f"  {label}: {', '.join(names)}")
    return out


def _apply(args: argparse.Namespace) -> int:
    text = read_text_file(args.file)
    if isinstance(text, int):
        return text
    try:
        doc, new = TypesDoc.of_text(text, name=str(args.file))
    except DefinitionError as err:
        print(err, file=sys.stderr)
        return EXIT_DEFINITIONS
    settings = Settings.from_env()
    try:
        current = read_types(settings, "types apply")
        definitions = read_published(settings, "types apply")
        old = current.types() if current is not None else (
            load_types(Path(settings.ingest.types_file)) if settings.ingest.types_file else None)
        catalogue = (definitions.catalogue(old) if definitions is not None
                     else file_catalogue(settings.segmentation.segments_file, old))
    except DefinitionError as err:
        print(f"error: the running definitions or types do not load: {err}", file=sys.stderr)
        return EXIT_DEFINITIONS
    except Exception as err:  # any client error: Kafka unreachable or refusing
        print(f"error: cannot read the published types and definitions at "
              f"{','.join(settings.kafka.bootstrap)}: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if current is not None and current.version == doc.version:
        if current.text == doc.text:
            print(f"version {doc.version!r} is already published: nothing to do")
            return EXIT_OK
        print(f"error: {args.file} differs from the published event types but keeps version "
              f"{doc.version!r}; set a new `version`", file=sys.stderr)
        return EXIT_DEFINITIONS
    problems = breaking_changes(old, new, catalogue)
    if problems:
        print(f"error: {args.file} breaks loaded definitions (version {catalogue.version}):",
              file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return EXIT_DEFINITIONS
    print(f"event types {old.version if old is not None else '(none)'} -> {doc.version}")
    for line in _diff(old, new):
        print(line)
    if args.dry_run:
        print("dry run: nothing published")
        return EXIT_OK
    try:
        publish_types(settings, doc)
    except Exception as err:  # any client error: Kafka unreachable or refusing
        print(f"error: publishing failed: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"published to {settings.topic('types')}: workers and collectors switch within "
          "seconds")
    return EXIT_OK


def read_types(settings: Settings, command: str) -> TypesDoc | None:
    """The published event-types document, or None (the topic is never created here)."""
    raw = read_last(settings, command, "types", TYPES_PARTITION)
    return None if raw is None else TypesDoc.decode(raw)


def _show(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        current = read_types(settings, "types show")
    except Exception as err:  # any client error: Kafka unreachable or refusing
        print(f"error: cannot read the event-types topic: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if current is None:
        print("no event types published: processes use SEGSTREAM_TYPES_FILE, else the "
              "built-in types only")
        return EXIT_OK
    if args.text:
        print(current.text, end="" if current.text.endswith("\n") else "\n")
        return EXIT_OK
    types = current.types()
    print(_summary(types))
    for t in types.types:
        props = ", ".join(f"{n}: {d.kind}{'' if not d.required else ' (required)'}"
                          for n, d in t.properties.items())
        print(f"  {t.name:<24} {props}")
    return EXIT_OK
