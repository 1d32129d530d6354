"""`segstream segments validate|apply|show`: manage the live segment definitions.

``validate FILE`` checks a definitions file offline (no servers). ``apply FILE`` validates it,
shows what changes against the definitions the workers run now, and publishes it on the
definitions topic (``SEGSTREAM_DEFINITIONS_TOPIC``, compacted, created when missing): every
worker switches to it without a restart and re-evaluates its customers. ``show`` prints the
published document's version and segments.

Exit codes: 0 done; 2 bad command line; 3 invalid definitions file (or a changed file that
keeps the published version); 4 Kafka unreachable or a file unreadable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processors.lang.errors import DefinitionError
from processors.lang.load import load_definitions
from processors.lang.typesfile import load_types
from stream.connections import kafka_kwargs
from stream.definitions import DOCUMENT_KEY, DefinitionsDoc, diff, file_catalogue
from stream.eventtypes import current_types
from stream.settings import Settings
from stream.topics import DEFINITIONS_PARTITION, create_topics, topic_spec

EXIT_OK, EXIT_USAGE, EXIT_DEFINITIONS, EXIT_IO = 0, 2, 3, 4
TIMEOUT_MS = 15_000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("segments", help="validate, publish or show segment definitions",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    v = sub.add_parser("validate", help="check a definitions file (offline)")
    v.add_argument("file", type=Path)
    v.add_argument("--types", metavar="FILE", type=Path, default=None,
                   help="event-types file whose custom types conditions may use (default: "
                        "SEGSTREAM_TYPES_FILE, else built-in types only)")
    v.set_defaults(func=_validate)
    a = sub.add_parser("apply", help="publish a definitions file to the running workers")
    a.add_argument("file", type=Path)
    a.add_argument("--dry-run", action="store_true", help="show the change, publish nothing")
    a.set_defaults(func=_apply)
    s = sub.add_parser("show", help="print the published definitions")
    s.add_argument("--text", action="store_true", help="print the whole YAML text")
    s.set_defaults(func=_show)


def _read(path: Path) -> str | int:
    """The file's text, or the exit code after printing why it cannot be read."""
    try:
        return path.read_text("utf-8")
    except OSError as err:
        print(f"error: cannot read {path}: {err.strerror}", file=sys.stderr)
        return EXIT_IO
    except UnicodeDecodeError as err:
        print(f"{path}: not UTF-8 text (byte {err.start})", file=sys.stderr)
        return EXIT_DEFINITIONS


def _validate(args: argparse.Namespace) -> int:
    text = _read(args.file)
    if isinstance(text, int):
        return text
    try:
        types_path = args.types or Settings.from_env().ingest.types_file
        types = load_types(Path(types_path)) if types_path else None
        catalogue = load_definitions(text, name=str(args.file), types=types)
    except DefinitionError as err:
        print(err, file=sys.stderr)
        return EXIT_DEFINITIONS
    except OSError as err:
        print(f"error: cannot read {types_path}: {err.strerror}", file=sys.stderr)
        return EXIT_IO
    print(f"{args.file}: version {catalogue.version!r}, {len(catalogue.segments)} segments, "
          f"allowed lateness {catalogue.allowed_lateness_ms} ms: OK")
    return EXIT_OK


def _apply(args: argparse.Namespace) -> int:
    text = _read(args.file)
    if isinstance(text, int):
        return text
    settings = Settings.from_env()
    try:
        types = current_types(settings)  # the published custom event types, else the file's
        doc, catalogue = DefinitionsDoc.of_text(text, name=str(args.file), types=types)
    except DefinitionError as err:
        print(err, file=sys.stderr)
        return EXIT_DEFINITIONS
    except Exception as err:  # any client error: Kafka unreachable or refusing
        print(f"error: cannot read the event-types topic: {err}", file=sys.stderr)
        return EXIT_IO
    try:
        current = read_published(settings)
    except Exception as err:  # any client error: Kafka unreachable or refusing
        where = ",".join(settings.kafka.bootstrap)
        print(f"error: cannot read the definitions topic at {where}: {err}",
              file=sys.stderr)
        return EXIT_IO
    # what the workers run now: the published document, else their definitions file
    old = (current.catalogue(types) if current is not None
           else file_catalogue(settings.segmentation.segments_file, types))
    if current is not None and current.version == doc.version:
        if current.text == doc.text:
            print(f"version {doc.version!r} is already published: nothing to do")
            return EXIT_OK
        print(f"error: {args.file} differs from the published definitions but keeps version "
              f"{doc.version!r}; set a new `version` so workers and change records can tell "
              "them apart", file=sys.stderr)
        return EXIT_DEFINITIONS
    changes = diff(old, catalogue)
    print(f"definitions {old.version} -> {doc.version}")
    for kind in ("added", "changed", "removed"):
        if changes[kind]:
            print(f"  {kind}: {', '.join(changes[kind])}")
    print(f"  unchanged: {len(changes['unchanged'])} segment(s)")
    if changes["removed"]:
        print("  note: members of removed segments receive an EXIT (cause "
              f"definitions:{doc.version})")
    if args.dry_run:
        print("dry run: nothing published")
        return EXIT_OK
    try:
        publish(settings, doc)
    except Exception as err:  # any client error: Kafka unreachable or refusing
        print(f"error: publishing failed: {err}", file=sys.stderr)
        return EXIT_IO
    print(f"published to {settings.topic('definitions')}: workers switch within seconds")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        current = read_published(settings)
    except Exception as err:  # any client error: Kafka unreachable or refusing
        print(f"error: cannot read the definitions topic: {err}", file=sys.stderr)
        return EXIT_IO
    if current is None:
        print("no definitions published: workers run SEGSTREAM_SEGMENTS_FILE or the default "
              "catalogue")
        return EXIT_OK
    if args.text:
        print(current.text, end="" if current.text.endswith("\n") else "\n")
        return EXIT_OK
    catalogue = current.catalogue(current_types(settings))
    print(f"version {current.version} ({len(catalogue.segments)} segments)")
    for seg in catalogue.segments:
        print(f"  {seg.name:<28} {seg.condition_text}")
    return EXIT_OK


# --- Kafka (kafka-python: a short-lived command, no event loop) ---------------------------------
def ensure_topic(settings: Settings) -> None:
    """Create the definitions topic (its spec: stream.topics) if missing."""
    create_topics(kafka_kwargs(settings), [topic_spec(settings, "definitions")],
                  request_timeout_ms=TIMEOUT_MS)


def read_published(settings: Settings) -> DefinitionsDoc | None:
    """The latest document on the definitions topic, or None."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    ensure_topic(settings)
    tp = TopicPartition(settings.topic("definitions"), DEFINITIONS_PARTITION)
    consumer = KafkaConsumer(**kafka_kwargs(settings), enable_auto_commit=False,
                             request_timeout_ms=TIMEOUT_MS)
    try:
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        if end == 0:
            return None
        consumer.seek(tp, end - 1)
        for _ in range(30):
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.offset == end - 1:
                        return DefinitionsDoc.decode(r.value)
        raise TimeoutError("could not read the last definitions record")
    finally:
        consumer.close()


def publish(settings: Settings, doc: DefinitionsDoc) -> None:
    """Produce ``doc`` (acks=all) and wait for the acknowledgement."""
    from kafka import KafkaProducer  # noqa: PLC0415

    producer = KafkaProducer(**kafka_kwargs(settings), acks="all",
                             request_timeout_ms=TIMEOUT_MS)
    try:
        producer.send(settings.topic("definitions"), doc.encode(), key=DOCUMENT_KEY).get(
            timeout=TIMEOUT_MS / 1000)
    finally:
        producer.close()
