"""The destinations file of ``segstream deliver`` (YAML), validated like the definitions file.

Shape (docs/destinations.md is the reference)::

    destinations:
      - name: ads_platform                  # [a-z][a-z0-9_-]*, unique
        url: https://hooks.example.com/in   # http:// or https://
        secret_env: ADS_WEBHOOK_SECRET       # or secret_file: /run/secrets/ads, or secret: "..."
        segments: [cart_abandoners, vip]     # or "all" (the default)
        batch: {max_changes: 100, max_wait: 500ms}
        timeout: 10s                         # per request
        max_tries: 8                         # then the batch goes to the dead-letter topic
        backoff: {base: 500ms, max: 60s}     # full jitter: uniform(0, min(max, base * 2^try))

Every problem of the file is reported at once, each as ``FILE:LINE: message`` (the errors of
``processors.lang.errors``; ``segstream deliver`` exits 3 on them), with "did you mean" for an
unknown key. A secret is never part of an error or a ``repr()``.

>>> dests = load_destinations('''
... destinations:
...   - {name: crm, url: "http://127.0.0.1:9/x", secret: s3cret, segments: [vip]}
... ''')
>>> d = dests[0]
>>> d.name, d.segments, d.max_changes, d.max_wait_ms, d.max_tries, d.wants("vip"), d.wants("x")
('crm', frozenset({'vip'}), 100, 500, 8, True, False)
>>> d
Destination(name='crm', url='http://127.0.0.1:9/x', secret='***', segments=frozenset({'vip'}), \
max_changes=100, max_wait_ms=500, timeout_ms=10000, max_tries=8, backoff_base_ms=500, \
backoff_max_ms=60000)
>>> load_destinations('destinations:\\n  - {name: a, url: "ftp://x", secret: s, batch: '
...                   '{max_change: 3}}', name="d.yaml")
Traceback (most recent call last):
...
processors.lang.errors.CombinedDefinitionError: d.yaml:2: destination 'a': url: must start ...
d.yaml:2: destination 'a': batch: unknown key 'max_change' (did you mean 'max_changes'?); ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.lang.errors import CombinedDefinitionError, DefinitionError, did_you_mean
from processors.lang.load import key_line, read_yaml
from processors.lang.parser import parse_duration

DEFAULT_SOURCE = "destinations"
NAME_RE = re.compile(r"[a-z][a-z0-9_-]*\Z")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
TOP_KEYS = ("destinations",)
DEST_KEYS = ("name", "url", "secret", "secret_env", "secret_file", "segments", "batch",
             "timeout", "max_tries", "backoff")
BATCH_KEYS = ("max_changes", "max_wait")
BACKOFF_KEYS = ("base", "max")
SECRET_KEYS = ("secret", "secret_env", "secret_file")
MASK = "***"
#: Bounds that keep a typo from making a destination useless or the process huge.
MAX_CHANGES_LIMIT = 10_000
MAX_TRIES_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Destination:
    """One webhook endpoint and how changes are delivered to it."""

    name: str
    url: str
    secret: str = field(repr=False)
    #: segment names to deliver, or None: every segment
    segments: frozenset[str] | None = None
    max_changes: int = 100
    max_wait_ms: int = 500
    timeout_ms: int = 10_000
    max_tries: int = 8
    backoff_base_ms: int = 500
    backoff_max_ms: int = 60_000

    def wants(self, segment: str) -> bool:
        """Whether changes of ``segment`` go to this destination."""
        return self.segments is None or segment in self.segments

    def __repr__(self) -> str:
        return (f"Destination(name={self.name!r}, url={self.url!r}, secret={MASK!r}, "
                f"segments={self.segments!r}, max_changes={self.max_changes}, "
                f"max_wait_ms={self.max_wait_ms}, timeout_ms={self.timeout_ms}, "
                f"max_tries={self.max_tries}, backoff_base_ms={self.backoff_base_ms}, "
                f"backoff_max_ms={self.backoff_max_ms})")


class _Checker:
    """Collects every problem of one file, each with its line."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.errors: list[DefinitionError] = []

    def add(self, line: int | None, msg: str) -> None:
        self.errors.append(DefinitionError(None, None, msg, line=line, source=self.source))

    def unknown_keys(self, d: Mapping[Any, Any], allowed: tuple[str, ...], what: str) -> None:
        for k in d:
            if k not in allowed:
                self.add(key_line(d, k), f"{what}unknown key '{k}'"
                         f"{did_you_mean(str(k), allowed)}; allowed: {', '.join(allowed)}")

    def duration(self, d: Mapping[Any, Any], key: str, default: int, who: str,
                 *, minimum: int = 0) -> int:
        raw = d.get(key, None)
        if raw is None:
            return default
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw  # a bare number is milliseconds
        elif raw == "0":
            value = 0
        elif isinstance(raw, str):
            try:
                value = parse_duration(raw)
            except DefinitionError:
                value = None
        if value is None or value < minimum:
            self.add(key_line(d, key), f"{who}{key}: must be a duration such as 500ms, 10s "
                     f"or 1m (at least {minimum} ms), not {raw!r}")
            return default
        return value

    def integer(self, d: Mapping[Any, Any], key: str, default: int, who: str, *, low: int,
                high: int) -> int:
        raw = d.get(key, default)
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            self.add(key_line(d, key), f"{who}{key}: must be a whole number from {low} to "
                     f"{high}, not {raw!r}")
            return default
        return raw

    def secret(self, raw: Mapping[Any, Any], who: str) -> str:
        given = [k for k in SECRET_KEYS if k in raw]
        line = key_line(raw, given[0] if given else "name")
        if len(given) != 1:
            self.add(line, f"{who}exactly one of secret, secret_env, secret_file is required"
                     + (f" (found {', '.join(given)})" if given else ""))
            return ""
        key = given[0]
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            # never echo the value: it may be the secret itself
            self.add(line, f"{who}{key}: must be a non-empty string")
            return ""
        if key == "secret":
            return value
        if key == "secret_env":
            if not ENV_RE.match(value):
                self.add(line, f"{who}secret_env: {value!r} is not an environment variable name")
                return ""
            secret = self.environ.get(value, "")
            if not secret.strip():
                self.add(line, f"{who}secret_env: the environment variable {value} is not set "
                         "or empty")
            return secret.strip()
        try:
            secret = Path(value).read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            self.add(line, f"{who}secret_file: {value}: {why}")
            return ""
        if not secret:
            self.add(line, f"{who}secret_file: {value}: the file is empty")
        return secret

    def segments(self, raw: Mapping[Any, Any], who: str) -> frozenset[str] | None:
        value = raw.get("segments", "all")
        if value == "all":
            return None
        if (isinstance(value, list) and value
                and all(isinstance(s, str) and s.strip() for s in value)):
            return frozenset(s.strip() for s in value)
        self.add(key_line(raw, "segments"), f"{who}segments: must be \"all\" or a non-empty "
                 f"list of segment names, not {value!r}")
        return None

    def destination(self, raw: Any, index: int, line: int | None) -> Destination | None:
        if not isinstance(raw, Mapping):
            self.add(line, f"destinations[{index}] must be a mapping with name, url and a "
                           "secret")
            return None
        before = len(self.errors)
        name = raw.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            self.add(key_line(raw, "name"), f"destinations[{index}]: name {name!r} must "
                     "match [a-z][a-z0-9_-]*")
            who = f"destinations[{index}]: "
            name = None
        else:
            who = f"destination '{name}': "
        self.unknown_keys(raw, DEST_KEYS, who)
        url = raw.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or \
                len(url) <= len("https://"):
            self.add(key_line(raw, "url"), f"{who}url: must start with http:// or https://, "
                     f"not {url!r}")
        secret = self.secret(raw, who)
        segments = self.segments(raw, who)
        batch = raw.get("batch", {})
        if not isinstance(batch, Mapping):
            self.add(key_line(raw, "batch"), f"{who}batch: must be a mapping with "
                     "max_changes and max_wait")
            batch = {}
        self.unknown_keys(batch, BATCH_KEYS, f"{who}batch: ")
        max_changes = self.integer(batch, "max_changes", 100, f"{who}batch: ", low=1,
                                   high=MAX_CHANGES_LIMIT)
        max_wait = self.duration(batch, "max_wait", 500, f"{who}batch: ")
        timeout = self.duration(raw, "timeout", 10_000, who, minimum=1)
        max_tries = self.integer(raw, "max_tries", 8, who, low=1, high=MAX_TRIES_LIMIT)
        backoff = raw.get("backoff", {})
        if not isinstance(backoff, Mapping):
            self.add(key_line(raw, "backoff"), f"{who}backoff: must be a mapping with base "
                     "and max")
            backoff = {}
        self.unknown_keys(backoff, BACKOFF_KEYS, f"{who}backoff: ")
        base = self.duration(backoff, "base", 500, f"{who}backoff: ", minimum=1)
        top = self.duration(backoff, "max", 60_000, f"{who}backoff: ", minimum=1)
        if top < base:
            self.add(key_line(backoff, "max"), f"{who}backoff: max ({top} ms) must be at "
                     f"least base ({base} ms)")
        if len(self.errors) > before or name is None:
            return None
        assert isinstance(url, str)
        return Destination(name, url, secret, segments, max_changes, max_wait, timeout,
                           max_tries, base, top)


def load_destinations(source: str | Path, *, name: str | None = None,
                      environ: Mapping[str, str] | None = None) -> list[Destination]:
    """Parse and validate a destinations file given as a path or as YAML text.

    ``environ`` resolves ``secret_env`` (``segstream deliver`` passes the process
    environment). Raises ``DefinitionError`` / ``CombinedDefinitionError`` (every problem).
    """
    if isinstance(source, Path):
        src = name or str(source)
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DefinitionError(None, None, f"not UTF-8 text (byte {e.start})",
                                  source=src) from None
    else:
        text, src = source, name or DEFAULT_SOURCE
    doc, errors = read_yaml(text, src)
    check = _Checker(src, environ or {})
    check.errors.extend(errors)
    if not isinstance(doc, Mapping):
        check.add(None, "the file must be a mapping with a destinations list")
        _raise(check.errors)
    check.unknown_keys(doc, TOP_KEYS, "")
    raw_list = doc.get("destinations")
    if not isinstance(raw_list, list) or not raw_list:
        check.add(key_line(doc, "destinations"), "destinations must be a non-empty list")
        raw_list = []
    out: list[Destination] = []
    seen: dict[str, int | None] = {}
    for i, raw in enumerate(raw_list):
        line = getattr(raw, "line", None) or key_line(doc, "destinations")
        dest = check.destination(raw, i, line)
        dest_name = raw.get("name") if isinstance(raw, Mapping) else None
        if isinstance(dest_name, str) and dest_name in seen:
            check.add(key_line(raw, "name"), f"destination '{dest_name}': duplicate name "
                      f"(first on line {seen[dest_name]})")
            continue
        if isinstance(dest_name, str):
            seen[dest_name] = key_line(raw, "name")
        if dest is not None:
            out.append(dest)
    if check.errors:
        _raise(check.errors)
    return out


def _raise(errors: list[DefinitionError]) -> Any:
    ordered = sorted(errors, key=lambda e: e.line or 0)
    raise ordered[0] if len(ordered) == 1 else CombinedDefinitionError(ordered)
