"""`segstream watch`: a live terminal view of segment changes (what `make demo` shows).

Follows the segment-changes topic from its end and, every second, redraws: changes per segment
(ENTER / EXIT in the last interval and in total), segment sizes (from the worker's API, else
from the changes seen), events/s and changes/s from the worker's /metrics, the latest changes,
and the URLs to look at. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field

import orjson
from prometheus_client.parser import text_string_to_metric_families

from schemas.changes import ChangeError, SegmentChange, decode_change
from stream.settings import Settings

CLEAR = "\033[2J\033[H"


DESCRIPTION = """\
A live terminal view of segment changes (what `make demo` shows). Follows the segment-changes
topic from its end and redraws every --interval seconds: changes per segment (ENTER / EXIT in
the last interval and in total), segment sizes (from the worker's API, else from the changes
seen), events/s and changes/s from the worker's /metrics, the latest changes and the URLs to
look at. Ctrl-C stops it.

exit status: 0 stopped; 1 the changes topic does not appear within 60 s (no worker created
it); 69 Kafka cannot be reached (after SEGSTREAM_CONNECT_WAIT_S seconds).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("watch", help="live view of segment changes in the terminal",
                              description=DESCRIPTION)
    p.add_argument("--api", default=None, metavar="URL",
                   help="worker web server (default: http://WEB_HOST:WEB_PORT from settings)")
    p.add_argument("--token", default=None, help="API bearer token (default: the first of "
                   "SEGSTREAM_API_TOKENS)")
    p.add_argument("--interval", type=float, default=1.0, help="redraw every N seconds")
    p.add_argument("--once", type=float, default=None, metavar="SECONDS",
                   help="watch for SECONDS, print one final view and exit (for scripts; "
                        "default: redraw until Ctrl-C)")
    p.set_defaults(func=_run)


@dataclass
class View:
    """What the screen shows, accumulated from the changes topic and the worker."""

    enters: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)
    recent_enters: Counter[str] = field(default_factory=Counter)
    recent_exits: Counter[str] = field(default_factory=Counter)
    last: deque[SegmentChange] = field(default_factory=lambda: deque(maxlen=8))
    sizes: dict[str, int] = field(default_factory=dict)
    events_total: float | None = None
    events_rate: float = 0.0
    changes_rate: float = 0.0
    bad_records: int = 0

    def add(self, change: SegmentChange) -> None:
        if change.action == "enter":
            self.enters[change.segment] += 1
            self.recent_enters[change.segment] += 1
        else:
            self.exits[change.segment] += 1
            self.recent_exits[change.segment] += 1
        self.last.append(change)

    def render(self, urls: list[str]) -> str:
        names = sorted(set(self.sizes) | set(self.enters) | set(self.exits))
        lines = [
            "segstream — live segment changes (Ctrl-C to stop)",
            f"events/s {self.events_rate:9.1f}   changes/s {self.changes_rate:8.1f}   "
            f"events processed {int(self.events_total or 0):,}",
            "",
            f"{'segment':<28}{'size':>9}{'+enter':>9}{'-exit':>9}{'enter/s':>9}{'exit/s':>9}"
            "   (+enter/-exit: since this view started)",
        ]
        lines.extend(
            f"{name:<28}{self.sizes.get(name, 0):>9,}{self.enters[name]:>9,}"
            f"{self.exits[name]:>9,}{self.recent_enters[name]:>9}{self.recent_exits[name]:>9}"
            for name in names)
        lines += ["", "latest changes:"]
        for ch in reversed(self.last):
            at = time.strftime("%H:%M:%S", time.gmtime(ch.at / 1000))
            lines.append(f"  {at} {ch.action:<5} {ch.segment:<26} {ch.customer_id:<20} "
                         f"v{ch.version} ({ch.cause})")
        if self.bad_records:
            lines.append(f"(unreadable change records skipped: {self.bad_records})")
        lines += ["", *urls]
        return "\n".join(lines)


def _get(url: str, token: str | None) -> bytes | None:
    request = urllib.request.Request(url)  # noqa: S310 - our own configured http URL
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            body: bytes = response.read()
            return body
    except OSError:
        return None


def _metric_total(text: str, name: str) -> float | None:
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return None


def _refresh(view: View, api: str, token: str | None, elapsed: float) -> None:
    body = _get(f"{api}/segments", token)
    if body is not None:
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            view.sizes = {s["name"]: s["size"] for s in orjson.loads(body)["segments"]}
    metrics = _get(f"{api}/metrics", None)
    if metrics is not None:
        total = _metric_total(metrics.decode(), "segstream_segment_events")
        if total is not None:
            if view.events_total is not None and elapsed > 0:
                view.events_rate = max(0.0, (total - view.events_total) / elapsed)
            view.events_total = total


def _run(args: argparse.Namespace) -> int:
    from kafka import TopicPartition  # noqa: PLC0415 - keep --help fast

    from stream.cli.servers import kafka_client  # noqa: PLC0415

    settings = Settings.from_env()
    api = args.api or f"http://{settings.process.web_host}:{settings.process.web_port}"
    token = args.token or next(iter(_tokens(settings)), None)
    topic = settings.topic("changes")
    view = View()
    urls = [f"API:     {api}/segments   {api}/customers/<id>/segments",
            f"metrics: {api}/metrics", f"topic:   {topic} on {','.join(settings.kafka.bootstrap)}"]
    consumer = kafka_client(settings, "watch", enable_auto_commit=False)  # or UnavailableError
    deadline = None if args.once is None else time.monotonic() + args.once
    try:
        parts = None
        for _ in range(60):  # the worker creates the topic: wait for it
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            time.sleep(1)
        if not parts:
            print(f"error: topic {topic} not found on {','.join(settings.kafka.bootstrap)}",
                  file=sys.stderr)
            return 1
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        tick = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    try:
                        view.add(decode_change(r.value))
                    except ChangeError:
                        view.bad_records += 1
            now = time.monotonic()
            if now - tick >= args.interval:
                recent = sum(view.recent_enters.values()) + sum(view.recent_exits.values())
                view.changes_rate = recent / (now - tick)
                _refresh(view, api, token, now - tick)
                if args.once is None:
                    sys.stdout.write(CLEAR + view.render(urls) + "\n")
                    sys.stdout.flush()
                view.recent_enters.clear()
                view.recent_exits.clear()
                tick = now
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    if args.once is not None:
        print(view.render(urls))
    return 0


def _tokens(settings: Settings) -> list[str]:
    return list(settings.api.tokens)
