"""`segstream replay`: run segment definitions over an event file, offline, deterministically.

Reads events (JSON lines in the public envelope, or CSV with a column mapping), validates each
one like the ingest path does, orders the valid ones by event time (a stable external sort with
bounded memory, :mod:`stream.replay_order`; ``--arrival-order`` keeps file order instead),
replays them through the engine with ``now`` = the stream watermark (see
:mod:`processors.replay` and docs/replay.md), writes the segment changes as JSON lines and
prints the final segment sizes. The input is streamed, never held in memory as a whole.

Exit codes: 0 done; 1 done, but ``--strict`` and some events were invalid or late;
2 bad command line (also a bad ``--until``, ``--clock``, ``--sort-buffer-mb`` or
``--csv-map``); 3 invalid definitions file; 4 a file cannot be read or written.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from schemas.changes import encode_change, from_change
from schemas.errors import SegstreamError
from schemas.numbers import json_float, json_int
from stream.replay_order import DEFAULT_RUN_MB, OrderStats, TimeOrder

DEFAULT_HOT = 30_000  # processors.replay_states.DEFAULT_HOT (not imported: the CLI starts fast)

EXIT_OK, EXIT_STRICT, EXIT_USAGE, EXIT_DEFINITIONS, EXIT_IO = 0, 1, 2, 3, 4
PROGRESS_EVERY = 2_048  # lines between progress-bar updates

# CSV cells are text; these fields are converted unless the mapping names a type
_FIELD_TYPES = {
    "schema_version": "int", "properties.price": "float", "properties.amount": "float",
    "properties.cart_value": "float", "properties.quantity": "int",
    "properties.items": "json", "properties.traits": "json",
    "properties.traits.satisfaction": "int",
}
_ENVELOPE = ("event_id", "type", "customer_id", "anonymous_id", "timestamp", "source",
             "schema_version")


class UsageError(SegstreamError):
    """A bad option value (exit code 2)."""


DESCRIPTION = """\
Run segment definitions over an event file, offline and deterministically (no servers).

Reads events (JSON lines in the public envelope, or CSV with a column mapping), validates each
one like the live ingest does, orders the valid ones by event time (an external sort with
bounded memory; --arrival-order keeps file order instead), replays them through the engine
with "now" = the stream's watermark (docs/replay.md), writes the segment changes as JSON lines
and prints the final segment sizes. The input is streamed, never held in memory as a whole.
With --out - (or --invalid-out -) the summary goes to stderr.

exit status: 0 done; 1 done, but --strict and some events were invalid or late; 2 bad command
line (also a bad --until, --clock, --sort-buffer-mb or --csv-map); 3 invalid definitions
file; 4 a file cannot be read or written; 141 stdout closed early (`| head`).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "replay",
        help="replay an event file through the segment definitions, offline",
        description=DESCRIPTION,
    )
    p.add_argument("--segments", required=True, metavar="FILE", type=Path,
                   help="segment definitions (YAML), e.g. processors/catalogue.yaml")
    p.add_argument("--types", metavar="FILE", type=Path, default=None,
                   help="event-types file (YAML) declaring custom event types, e.g. "
                        "processors/event_types.yaml (default: built-in types only)")
    p.add_argument("--events", required=True, metavar="FILE",
                   help="events: .jsonl/.json (one event or array per line), .csv, or - (stdin)")
    p.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto",
                   help="input format (auto: by file extension, else jsonl)")
    p.add_argument("--csv-map", metavar="COL=FIELD[:TYPE],...",
                   help="CSV column mapping, e.g. 'id=event_id,ts=timestamp,"
                        "user=customer_id,price=properties.price:float'; unmapped columns "
                        "named like envelope fields are taken as is, others go to properties "
                        "(default: none, every column by its name)")
    p.add_argument("--until", metavar="TIME",
                   help="evaluate as of TIME (ISO-8601, or epoch ms): later events are "
                        "skipped, timers fire up to TIME (default: the last event time)")
    p.add_argument("--out", metavar="FILE",
                   help="write changes as JSON lines to FILE, or - for stdout (default: not "
                        "written, only counted)")
    p.add_argument("--invalid-out", metavar="FILE",
                   help="write rejected input (line, code, message) as JSON lines to FILE, or - "
                        "for stdout (default: not written, only counted)")
    p.add_argument("--clock", metavar="TIME",
                   help="validator clock for the future-timestamp bound (default: now)")
    p.add_argument("--hot-profiles", metavar="N", type=_non_negative, default=DEFAULT_HOT,
                   help="profiles kept decoded; the others are kept encoded (state.codec, "
                        "~380 B instead of ~3 KB each) and decoded when an event or a due "
                        "instant needs them: same result, less memory; 0 keeps every profile "
                        "decoded")
    p.add_argument("--arrival-order", action="store_true",
                   help="replay in file order (file order = arrival order, events older than "
                        "the watermark minus the allowed lateness are refused as late), to "
                        "simulate live arrival; default: order the input by event time")
    p.add_argument("--sort-buffer-mb", metavar="MB", default=str(DEFAULT_RUN_MB),
                   help="memory for ordering by event time: input beyond it is sorted in runs "
                        f"of this size spilled to temporary files (default {DEFAULT_RUN_MB:g})")
    p.add_argument("--tmp-dir", metavar="DIR",
                   help="where the sort's run files go (default: $TMPDIR or /tmp); they are "
                        "removed at the end, also on error")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if any event was invalid or late")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# --- option parsing -----------------------------------------------------------------------
INSTANT_MIN = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
INSTANT_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def parse_instant(text: str, option: str = "time") -> int:
    """Epoch ms from ``1795478400000``, ``2026-11-24``, ``2026-11-24T00:00:00Z`` or with an
    offset; a date-time without offset is read as UTC. Instants outside years 1 to 9999 are a
    :class:`UsageError` (they cannot be printed as ISO times).

    >>> parse_instant("2026-11-24T01:00:00+01:00") == parse_instant("2026-11-24") == 1795478400000
    True
    """
    s = text.strip()
    if s.lstrip("-").isdigit():
        ms = int(s)
    else:
        try:
            when = dt.datetime.fromisoformat(s)
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            ms = int(when.timestamp() * 1000)
        except (ValueError, OverflowError):
            raise UsageError(f"{option}: not an ISO-8601 time or epoch milliseconds: "
                             f"{text!r}") from None
    if not INSTANT_MIN <= ms <= INSTANT_MAX:
        raise UsageError(f"{option}: {text!r} is out of range: epoch ms from {INSTANT_MIN} to "
                         f"{INSTANT_MAX} (0001-01-01 to 9999-12-31T23:59:59.999Z)")
    return ms


def parse_megabytes(text: str, option: str) -> int:
    """Bytes from a size in MB (decimals allowed), 0.001 to 1048576.

    >>> parse_megabytes("0.5", "--sort-buffer-mb")
    524288
    """
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not 0.001 <= mb <= 1_048_576:  # also rejects nan
        raise UsageError(f"{option}: expected megabytes from 0.001 to 1048576, got {text!r}")
    return int(mb * 2**20)


def iso(ms: int) -> str:
    """``2026-11-24T00:00:00.000Z`` for an epoch-ms instant.

    >>> iso(1795478400123)
    '2026-11-24T00:00:00.123Z'
    """
    d = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def parse_csv_map(spec: str | None) -> dict[str, tuple[str, str | None]]:
    """``{column: (field path, type or None)}`` from ``col=field[:type],...``.

    >>> parse_csv_map("ts=timestamp, p=properties.price:float")
    {'ts': ('timestamp', None), 'p': ('properties.price', 'float')}
    """
    out: dict[str, tuple[str, str | None]] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        col, sep, target = part.partition("=")
        field, _, typ = target.strip().partition(":")
        if not sep or not col.strip() or not field:
            raise UsageError(f"--csv-map: expected COLUMN=FIELD[:TYPE], got {part.strip()!r}")
        if typ and typ not in ("str", "int", "float", "bool", "json"):
            raise UsageError(f"--csv-map: unknown type {typ!r} (str, int, float, bool, json)")
        if field not in _ENVELOPE and not field.startswith("properties."):
            raise UsageError(f"--csv-map: field {field!r} must be one of {', '.join(_ENVELOPE)}"
                             " or properties.<name> (properties.traits.<name> for traits)")
        out[col.strip()] = (field, typ or None)
    return out


# --- readers ------------------------------------------------------------------------------
def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def _convert(value: str, typ: str | None, field: str) -> Any:
    if typ is None:
        if field == "timestamp":
            digits = value[1:] if value.startswith("-") else value
            return json_int(value) if digits.isascii() and digits.isdigit() else value
        typ = _FIELD_TYPES.get(field, "str")
    # numbers follow JSON's rules (schemas.numbers): no inf/nan, no 1_000, no non-ASCII digits
    if typ == "int":
        return json_int(value)
    if typ == "float":
        return json_float(value)
    if typ == "bool":
        return value.strip().lower() in ("1", "true", "yes")
    if typ == "json":
        return orjson.loads(value)
    return value


def csv_events(rows: Iterable[dict[str, str]],
               mapping: dict[str, tuple[str, str | None]]) -> Iterator[tuple[int, Any]]:
    """(line, event object) per CSV row; empty cells are absent; a cell that cannot be
    converted gives the error message instead of an object."""
    for line, row in enumerate(rows, start=2):
        obj: dict[str, Any] = {"properties": {}}
        try:
            for col, value in row.items():
                if col is None or value is None or value == "":
                    continue
                field, typ = mapping.get(col, (col if col in _ENVELOPE else
                                               f"properties.{col}", None))
                converted = _convert(value, typ, field)
                parts = field.split(".")
                target = obj
                for key in parts[:-1]:
                    target = target.setdefault(key, {})
                target[parts[-1]] = converted
        except (ValueError, orjson.JSONDecodeError) as e:
            yield line, f"column {col!r}: cannot convert {value!r}: {e}"
            continue
        yield line, obj


class Reader:
    """Reads, validates and counts input events; iterating yields canonical events."""

    def __init__(self, stream: IO[bytes], fmt: str, *,
                 mapping: dict[str, tuple[str, str | None]], clock: int,
                 invalid_out: IO[bytes] | None,
                 progress: Callable[[int], None] | None) -> None:
        self.stream, self.fmt, self.mapping, self.clock = stream, fmt, mapping, clock
        self.invalid_out, self.progress = invalid_out, progress
        self.invalid: Counter[str] = Counter()
        self.valid = 0
        self.schema: Any = None  # schemas.validation.Schema with the custom types, if any

    def reject(self, line: int, code: str, message: str) -> None:
        self.invalid[code] += 1
        if self.invalid_out is not None:
            self.invalid_out.write(orjson.dumps({"line": line, "code": code,
                                                 "message": message}) + b"\n")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from schemas.errors import InvalidEvent  # noqa: PLC0415
        from schemas.validation import parse_record, validate_event  # noqa: PLC0415

        if self.fmt == "csv":
            import io  # noqa: PLC0415

            wrapper = io.TextIOWrapper(self.stream, encoding="utf-8-sig", newline="")
            for line, obj in csv_events(csv.DictReader(wrapper), self.mapping):
                self.tick(line)
                if isinstance(obj, str):
                    self.reject(line, "bad_properties", obj)
                    continue
                try:
                    ev = validate_event(obj, self.clock, schema=self.schema)
                except InvalidEvent as e:
                    self.reject(line, str(e.code), e.message)
                    continue
                self.valid += 1
                yield ev
            return
        for line, text in enumerate(self.stream, start=1):
            self.tick(line)
            raw = text.strip()
            if not raw:
                continue
            good, bad = parse_record(raw, self.clock, schema=self.schema)
            for r in bad:
                self.reject(line, str(r.code), r.message)
            self.valid += len(good)
            yield from good

    def tick(self, line: int) -> None:
        if self.progress is not None and line % PROGRESS_EVERY == 0:
            self.progress(PROGRESS_EVERY)


# --- output -------------------------------------------------------------------------------
def change_record(ch: Any, definition_version: str) -> bytes:
    """One change as a JSON line, byte for byte the value the live worker produces to the
    changes topic (:func:`schemas.changes.encode_change`: ``at`` in epoch ms, the definitions
    file's ``version`` as ``definition_version``)."""
    return encode_change(from_change(ch, definition_version)) + b"\n"


def order_line(order: OrderStats | None, late: int) -> str:
    """The summary's line on ordering: how the input was ordered and what file order held."""
    if order is None:
        return (f"order: file order (--arrival-order), {late} events refused as late "
                "(older than the watermark minus the allowed lateness)")
    how = ("sorted in memory" if not order.spilled_runs else
           f"external sort: {order.runs} runs, {order.spilled_runs} spilled "
           f"({order.spilled_bytes / 2**20:.1f} MB of temporary files, "
           f"buffer {order.run_bytes / 2**20:g} MB)")
    return (f"order: by event time ({how}); {order.out_of_order} events were out of file "
            f"order, {order.beyond_lateness} of them beyond the allowed lateness "
            "(--arrival-order would refuse those as late)")


def summary(result: Any, reader: Reader, segments: Iterable[str], seconds: float,
            actions: Counter[str], *, order: OrderStats | None = None,
            arrival_order: bool = False) -> str:
    """The final report: segment sizes as a table, then the counters."""
    sizes = result.sizes()
    names = list(segments)
    width = max([len("segment"), *map(len, names)])
    lines = [f"{'segment':<{width}}  {'members':>9}", f"{'-' * width}  {'-' * 9}"]
    lines += [f"{n:<{width}}  {sizes.get(n, 0):>9}" for n in names]
    invalid = sum(reader.invalid.values())
    why = ", ".join(f"{c} {n}" for c, n in reader.invalid.most_common())
    lines.append("")
    lines.append(f"events: {reader.valid + invalid} read, {reader.valid} valid, {invalid} "
                 f"invalid{f' ({why})' if why else ''}, {result.late} late, "
                 f"{result.after_until} after --until")
    if order is not None or arrival_order:
        lines.append(order_line(order, result.late))
    lines.append(f"changes: {result.changes} ({actions['enter']} enter, {actions['exit']} "
                 f"exit); profiles: {len(result.states)}; merges: {result.merges}; "
                 f"forgets: {result.forgets}")
    if result.until is not None:
        wm = iso(result.watermark) if result.watermark is not None else "-"
        lines.append(f"as of {iso(result.until)} (last event time {wm}); "
                     f"{seconds:.2f} s")
    return "\n".join(lines)


def _fail(code: int, message: str) -> int:
    print(f"segstream replay: {message}", file=sys.stderr)
    return code


@dataclass(frozen=True, slots=True)
class _Options:
    """The command line's values, checked (a :class:`UsageError` names a bad one)."""

    until: int | None
    clock: int
    run_bytes: int
    mapping: dict[str, tuple[str, str | None]]
    fmt: str


def _options(args: argparse.Namespace) -> _Options:
    from schemas.validation import DEFAULT_LIMITS  # noqa: PLC0415

    until = parse_instant(args.until, "--until") if args.until else None
    clock = (parse_instant(args.clock, "--clock") if args.clock
             else int(time.time() * 1000))
    if clock > INSTANT_MAX - DEFAULT_LIMITS.max_future_ms:  # accepted events must print
        raise UsageError(f"--clock: {args.clock!r} is out of range: at most "
                         f"{INSTANT_MAX - DEFAULT_LIMITS.max_future_ms} epoch ms")
    fmt = args.format
    if fmt == "auto":
        fmt = "csv" if str(args.events).lower().endswith(".csv") else "jsonl"
    return _Options(until, clock, parse_megabytes(args.sort_buffer_mb, "--sort-buffer-mb"),
                    parse_csv_map(args.csv_map), fmt)


def _open(args: argparse.Namespace, stack: ExitStack
          ) -> tuple[IO[bytes], IO[bytes] | None, IO[bytes] | None]:
    """The events source, the changes output and the invalid-records output (OSError).
    The files are closed by the caller's ``stack`` (hence the SIM115 exemptions)."""
    if args.events == "-":
        source: IO[bytes] = sys.stdin.buffer
    else:
        source = stack.enter_context(Path(args.events).open("rb"))  # noqa: SIM115
    out = None
    if args.out == "-":
        out = sys.stdout.buffer
    elif args.out:
        out = stack.enter_context(Path(args.out).open("wb"))  # noqa: SIM115
    invalid_out = None
    if args.invalid_out == "-":
        invalid_out = sys.stdout.buffer
    elif args.invalid_out:
        invalid_out = stack.enter_context(Path(args.invalid_out).open("wb"))  # noqa: SIM115
    return source, out, invalid_out


def run(args: argparse.Namespace) -> int:
    """Entry point of the sub-command; returns the exit code."""
    from processors.lang.errors import DefinitionError  # noqa: PLC0415

    try:
        opts = _options(args)
    except UsageError as e:
        return _fail(EXIT_USAGE, str(e))
    types = _types(args.types)
    if isinstance(types, int):
        return types
    try:
        engine, catalogue = build_engine(args.segments, types)
    except DefinitionError as e:
        return _fail(EXIT_DEFINITIONS, f"invalid definitions in {args.segments}:\n{e}")
    except OSError as e:
        return _fail(EXIT_IO, f"cannot read definitions {args.segments}: {e.strerror or e}")
    until = opts.until
    with ExitStack() as stack:
        try:
            source, out, invalid_out = _open(args, stack)
        except OSError as e:
            return _fail(EXIT_IO, f"{e.filename}: {e.strerror or e}")
        bar = _progress(args.quiet, stack)
        reader = Reader(source, opts.fmt, mapping=opts.mapping, clock=opts.clock,
                        invalid_out=invalid_out,
                        progress=bar.update if bar is not None else None)
        reader.schema = _schema(types)
        actions: Counter[str] = Counter()

        def on_change(ch: Any) -> None:
            actions[ch.action] += 1
            if out is not None:
                out.write(change_record(ch, catalogue.version))

        started = time.perf_counter()
        order = None
        events: Iterable[dict[str, Any]] = reader
        if not args.arrival_order:
            sorter = stack.enter_context(TimeOrder(
                reader, run_bytes=opts.run_bytes, lateness_ms=catalogue.allowed_lateness_ms,
                until=until, tmp_dir=args.tmp_dir))
            events, order = sorter, sorter.stats
        try:
            result = _replay(engine, events, until, on_change, args.hot_profiles)
        except BrokenPipeError:
            raise  # stdout closed early (`| head`): stream.cli.main exits quietly
        except OSError as e:
            return _fail(EXIT_IO, f"{e.filename or 'output'}: {e.strerror or e}")
        if bar is not None:
            bar.close()
        _flush(out, invalid_out)
        report = summary(result, reader, [s.name for s in catalogue.segments],
                         time.perf_counter() - started, actions, order=order,
                         arrival_order=args.arrival_order)
        print(report, file=sys.stderr if "-" in (args.out, args.invalid_out) else sys.stdout)
    bad = sum(reader.invalid.values()) + result.late
    return EXIT_STRICT if args.strict and bad else EXIT_OK


def _replay(engine: Any, events: Iterable[dict[str, Any]], until: int | None,
            on_change: Callable[[Any], None], hot: int) -> Any:
    """processors.replay.replay, the profiles beyond ``hot`` kept encoded (0: all decoded)."""
    from processors.replay import ReplayResult, replay  # noqa: PLC0415
    from processors.replay_states import CompactStates  # noqa: PLC0415

    start = ReplayResult(states=CompactStates(hot)) if hot else None
    return replay(engine, events, until=until, on_change=on_change, resume=start)


def _flush(*outputs: IO[bytes] | None) -> None:
    for out in outputs:
        if out is not None:
            out.flush()


def _schema(types: Any) -> Any:
    """The validation schema with the custom ``types`` (None: the built-in types only)."""
    from schemas.validation import Schema  # noqa: PLC0415

    return Schema(types) if types is not None else None


def _types(path: Path | None) -> Any:
    """The custom event types of ``--types`` (None without it), or the exit code."""
    if path is None:
        return None
    from processors.lang.errors import DefinitionError  # noqa: PLC0415
    from processors.lang.typesfile import load_types  # noqa: PLC0415

    try:
        return load_types(path)
    except DefinitionError as e:
        return _fail(EXIT_DEFINITIONS, f"invalid event types in {path}:\n{e}")
    except OSError as e:
        return _fail(EXIT_IO, f"cannot read event types {path}: {e.strerror or e}")


def build_engine(path: Path, types: Any = None) -> tuple[Any, Any]:
    """(Engine, ast.Catalogue) for a definitions file; conditions may use the custom event
    ``types`` (``schemas.eventtypes.EventTypes``)."""
    from processors.engine import Engine  # noqa: PLC0415
    from processors.lang.compile import compile_catalogue  # noqa: PLC0415
    from processors.lang.load import load_definitions  # noqa: PLC0415

    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    catalogue = load_definitions(path, types=types)
    return Engine(compile_catalogue(catalogue)), catalogue


def _progress(quiet: bool, stack: ExitStack) -> Any:
    """A tqdm bar counting input lines on stderr, or None (quiet, or stderr not a TTY)."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # noqa: PLC0415

    return stack.enter_context(tqdm(unit=" lines", unit_scale=True, delay=1.0,
                                    file=sys.stderr, desc="replay"))
