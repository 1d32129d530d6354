"""`segstream segments validate|apply|show`: manage the live segment definitions."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, Literal

import orjson

from processors.lang.ast import Catalogue
from processors.lang.errors import CombinedDefinitionError, DefinitionError
from processors.lang.load import load_definitions
from processors.lang.typesfile import load_types
from schemas.eventtypes import EventTypes
from stream.cli.servers import EXIT_UNAVAILABLE, UnavailableError, kafka_client, redis_connected
from stream.connections import kafka_kwargs
from stream.definitions import DOCUMENT_KEY, DefinitionsDoc, diff, file_catalogue
from stream.eventtypes import TYPES_PARTITION, TypesDoc
from stream.settings import Settings, mask_url
from stream.topics import DEFINITIONS_PARTITION, create_topics, topic_spec

EXIT_OK, EXIT_USAGE, EXIT_DEFINITIONS, EXIT_IO = 0, 2, 3, 4
TIMEOUT_MS = 15_000

DESCRIPTION = """\
Manage the segment definitions the workers run, without a restart.

  validate FILE         check a definitions file offline (no server is contacted)
  apply FILE            show what changes against the definitions the workers run now, then
                        publish FILE on the definitions topic: every worker switches to it
                        within seconds and re-evaluates its customers
  apply FILE --dry-run  the same report plus, per segment, its size today and its estimated
                        size under FILE (from the customer states in Redis); publishes nothing
  show                  the published version and segments

Only `apply` (without --dry-run) creates the definitions topic when it is missing.

exit status: 0 done; 2 bad command line; 3 invalid definitions file (or a changed file that
keeps the published version); 4 a file cannot be read; 69 Kafka or Redis cannot be reached
(after SEGSTREAM_CONNECT_WAIT_S seconds).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("segments", help="validate, publish or show segment definitions",
                              description=DESCRIPTION)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    v = sub.add_parser("validate", help="check a definitions file (offline)",
                       description="Check a definitions file offline: parse and compile every "
                                   "segment, report every problem with its line (exit 3).")
    v.add_argument("file", type=Path, help="the definitions file (YAML)")
    v.add_argument("--types", metavar="FILE", type=Path, default=None,
                   help="event-types file whose custom types conditions may use (default: "
                        "SEGSTREAM_TYPES_FILE, else the built-in types only)")
    v.add_argument("--json", action="store_true",
                   help="print the result as one JSON object on stdout (also when invalid)")
    v.set_defaults(func=_validate)
    a = sub.add_parser("apply", help="publish a definitions file to the running workers",
                       description="Compare a definitions file with what the workers run now "
                                   "and publish it on the definitions topic (created when "
                                   "missing); with --dry-run, only report, with the segment "
                                   "sizes today and estimated under the file.")
    a.add_argument("file", type=Path, help="the definitions file (YAML)")
    a.add_argument("--dry-run", action="store_true",
                   help="publish nothing, create no topic; show per segment its size today "
                        "and its estimated size under FILE (reads Redis)")
    a.set_defaults(func=_apply)
    s = sub.add_parser("show", help="print the published definitions",
                       description="Print the published definitions: version and segments "
                                   "(reads the definitions topic, creates nothing).")
    s.add_argument("--text", action="store_true", help="print the whole YAML text")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object: published, version, segments, text")
    s.set_defaults(func=_show)


def read_text_file(path: Path) -> str | int:
    """The file's text, or the exit code after printing why it cannot be read."""
    try:
        return path.read_text("utf-8")
    except OSError as err:
        print(f"error: cannot read {path}: {err.strerror}", file=sys.stderr)
        return EXIT_IO
    except UnicodeDecodeError as err:
        print(f"{path}: not UTF-8 text (byte {err.start})", file=sys.stderr)
        return EXIT_DEFINITIONS


def _segments_json(catalogue: Catalogue) -> list[dict[str, Any]]:
    return [{"name": seg.name, "description": seg.description,
             "condition": seg.condition_text, "enabled": seg.enabled, "tags": list(seg.tags)}
            for seg in catalogue.segments]


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _validate(args: argparse.Namespace) -> int:
    text = read_text_file(args.file)
    if isinstance(text, int):
        return text
    types_path = args.types or Settings.from_env().ingest.types_file
    try:
        types = load_types(Path(types_path)) if types_path else None
        catalogue = load_definitions(text, name=str(args.file), types=types)
    except OSError as err:
        print(f"error: cannot read {types_path}: {err.strerror}", file=sys.stderr)
        return EXIT_IO
    except DefinitionError as err:
        if args.json:
            errors = err.errors if isinstance(err, CombinedDefinitionError) else (err,)
            _print_json({"file": str(args.file), "ok": False, "errors": [
                {"line": e.line, "segment": e.segment, "message": e.message,
                 "text": e.render()} for e in errors]})
        else:
            print(err, file=sys.stderr)
        return EXIT_DEFINITIONS
    if args.json:
        _print_json({"file": str(args.file), "ok": True, "version": catalogue.version,
                     "allowed_lateness_ms": catalogue.allowed_lateness_ms,
                     "segments": _segments_json(catalogue)})
        return EXIT_OK
    print(f"{args.file}: version {catalogue.version!r}, {len(catalogue.segments)} segments, "
          f"allowed lateness {catalogue.allowed_lateness_ms} ms: OK")
    return EXIT_OK


def _apply(args: argparse.Namespace) -> int:
    text = read_text_file(args.file)
    if isinstance(text, int):
        return text
    settings = Settings.from_env()
    types = types_now(settings, "segments apply")
    try:
        doc, catalogue = DefinitionsDoc.of_text(text, name=str(args.file), types=types)
    except DefinitionError as err:
        print(err, file=sys.stderr)
        return EXIT_DEFINITIONS
    current = read_published(settings, "segments apply")
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
        print_estimate(settings, old, catalogue)
        print("dry run: nothing published")
        return EXIT_OK
    try:
        ensure_topic(settings)
        publish(settings, doc)
    except UnavailableError:
        raise
    except Exception as err:  # any client error: Kafka refusing the request
        print(f"error: publishing failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"published to {settings.topic('definitions')}: workers switch within seconds")
    return EXIT_OK


def print_estimate(settings: Settings, old: Catalogue, new: Catalogue) -> None:
    """The dry run's table: per segment of ``old`` or ``new`` its size today (Redis) and its
    estimated size under ``new`` (evaluated from the stored states, like a live switch)."""
    from redis.exceptions import RedisError  # noqa: PLC0415

    from state.redis_store import RedisStore  # noqa: PLC0415
    from stream.estimate import estimate_sizes  # noqa: PLC0415 - the dry run only

    async def run() -> Any:
        client = await redis_connected(settings, "segments apply")
        try:
            store = RedisStore(client, namespace=settings.redis.namespace)
            return await estimate_sizes(store, settings, new)
        finally:
            await client.aclose()

    try:
        est = asyncio.run(run())
    except RedisError as exc:  # lost after the first PING; its text never holds a password
        raise UnavailableError(f"Redis at {mask_url(settings.redis.url)}: "
                               f"{type(exc).__name__}: {exc}") from None
    names = [seg.name for seg in new.segments]
    names += [seg.name for seg in old.segments if seg.name not in names]
    width = max([len("segment"), *map(len, names)])
    print(f"segment sizes (today from Redis at {mask_url(settings.redis.url)}; estimated: "
          f"{est.customers} stored customers evaluated with {new.version} as of now):")
    print(f"  {'segment':<{width}}  {'today':>9}  {'estimated':>9}  {'change':>8}")
    for name in names:
        today, after = est.today.get(name, 0), est.estimated.get(name, 0)
        print(f"  {name:<{width}}  {today:>9}  {after:>9}  {after - today:>+8}")
    if est.undecodable:
        print(f"  ({est.undecodable} stored states could not be decoded and were left out)")


def _show(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    current = read_published(settings, "segments show")
    if current is None:
        if args.json:
            _print_json({"published": False, "topic": settings.topic("definitions")})
            return EXIT_OK
        print("no definitions published: workers run SEGSTREAM_SEGMENTS_FILE or the default "
              "catalogue")
        return EXIT_OK
    catalogue = current.catalogue(types_now(settings, "segments show"))
    if args.json:
        _print_json({"published": True, "topic": settings.topic("definitions"),
                     "version": current.version, "segments": _segments_json(catalogue),
                     "text": current.text})
        return EXIT_OK
    if args.text:
        print(current.text, end="" if current.text.endswith("\n") else "\n")
        return EXIT_OK
    print(f"version {current.version} ({len(catalogue.segments)} segments)")
    for seg in catalogue.segments:
        print(f"  {seg.name:<28} {seg.condition_text}")
    return EXIT_OK


# --- Kafka (kafka-python: a short-lived command, no event loop) ---------------------------------
def types_now(settings: Settings, command: str) -> EventTypes | None:
    """The custom event types the running processes use: the published document's, else the
    types file's (SEGSTREAM_TYPES_FILE), else None."""
    raw = read_last(settings, command, "types", TYPES_PARTITION)
    if raw is not None:
        return TypesDoc.decode(raw).types()
    path = settings.ingest.types_file
    return load_types(Path(path)) if path else None


def ensure_topic(settings: Settings) -> None:
    """Create the definitions topic (its spec: stream.topics) if missing."""
    create_topics(kafka_kwargs(settings), [topic_spec(settings, "definitions")],
                  request_timeout_ms=TIMEOUT_MS)


def read_published(settings: Settings, command: str) -> DefinitionsDoc | None:
    """The latest document on the definitions topic, or None (also when the topic does not
    exist: it is not created, and no request here can create it). :class:`UnavailableError` when
    Kafka cannot be reached or refuses."""
    raw = read_last(settings, command, "definitions", DEFINITIONS_PARTITION)
    return None if raw is None else DefinitionsDoc.decode(raw)


def read_last(settings: Settings, command: str, role: Literal["definitions", "types"],
              partition: int) -> bytes | None:
    """The value of the last record of a compacted single-document topic (``role`` in
    stream.topics), or None when it is empty or missing (never created here)."""
    from kafka import TopicPartition  # noqa: PLC0415

    topic = settings.topic(role)
    consumer = kafka_client(settings, command, enable_auto_commit=False,
                            request_timeout_ms=TIMEOUT_MS)
    try:
        if topic not in consumer.topics():  # a metadata request for all topics
            return None
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        if end == 0:
            return None
        consumer.seek(tp, end - 1)
        for _ in range(30):
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.offset == end - 1:
                        value: bytes = r.value
                        return value
        raise UnavailableError(f"cannot read the {role} topic {topic}: the last record did "
                               "not arrive")
    except UnavailableError:
        raise
    except Exception as err:  # any client error: Kafka refusing a request
        raise UnavailableError(f"cannot read the {role} topic {topic}: "
                               f"{type(err).__name__}: {err}") from None
    finally:
        consumer.close()


def publish(settings: Settings, doc: DefinitionsDoc) -> None:
    """Produce ``doc`` (acks=all) and wait for the acknowledgement."""
    producer = kafka_client(settings, "segments apply", "producer", acks="all",
                            request_timeout_ms=TIMEOUT_MS)
    try:
        producer.send(settings.topic("definitions"), doc.encode(), key=DOCUMENT_KEY).get(
            timeout=TIMEOUT_MS / 1000)
    finally:
        producer.close()
