"""segstream settings: the ONE place that reads the environment.

:class:`Settings` is a frozen tree of groups (``settings.kafka.bootstrap``,
``settings.ingest.bundle_max_events``, ...). Every field is read from one environment variable,
``SEGSTREAM_<GROUP PREFIX + FIELD NAME IN UPPER CASE>`` unless the field names its own (``env=``,
to keep the names the deployments already use): :func:`setting_specs` lists them all with their
*key*, the variable name without ``SEGSTREAM_`` in lower case. Type, default and meaning live next
to the field (``metadata["doc"]``) so that ``docs/configuration.md`` is generated from these
classes (``python -m stream.settings``) and a unit test fails when the two disagree.

Parsing and validation follow the field's type and metadata, never its name: ``int``,
``bool``, ``Path``, ``str``, a ``Literal`` (one of its values), a ``tuple[...]`` (a comma-separated
list, parsed once here into a tuple); ``minimum=`` and ``nonempty=`` are checked for values from
the environment and for direct construction alike.

Nothing else in the code base reads ``os.environ``: build a ``Settings``
(``Settings.from_env()`` in the shell; ``Settings.build(key=value, ...)`` or
``settings.but(key=value, ...)`` with the same keys in tools and tests; or the groups
themselves) and pass it down.

>>> s = Settings.from_env({"SEGSTREAM_BUNDLE_MAX_EVENTS": "100", "SEGSTREAM_TOPIC_PREFIX": "t1-",
...                        "SEGSTREAM_AGENTS": "ingest"})
>>> s.ingest.bundle_max_events, s.topic("raw"), s.group_id, s.process.agents
(100, 't1-segstream-events', 't1-segstream', ('ingest',))
>>> s.but(kafka_bootstrap=("a:1", "b:2")).kafka.bootstrap
('a:1', 'b:2')
"""

from __future__ import annotations

import dataclasses
import logging
import os  # the one module allowed to read os.environ
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

from schemas.errors import SegstreamError

ENV_PREFIX = "SEGSTREAM_"
_DEFAULT_DATA_DIR = Path(".run/data")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
TopicRole = Literal["raw", "bundles", "deadletters", "changes", "definitions", "types"]
AgentName = Literal["ingest", "segmentation"]
SecurityProtocol = Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]
SaslMechanism = Literal["plain", "scram-sha-256", "scram-sha-512"]
OffsetReset = Literal["earliest", "latest"]
ApiAuth = Literal["tokens", "none"]
CollectorAuth = Literal["keys", "none"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
LogFormat = Literal["text", "json"]
AGENT_NAMES: tuple[str, ...] = get_args(AgentName)
MASK = "***"


class SettingsError(SegstreamError, ValueError):
    """An environment variable holds a value the settings cannot accept."""


def _f(default: Any, doc: str, *, minimum: float | None = None, nonempty: bool = False,
       env: str | None = None, url: bool = False) -> Any:
    """A documented settings field (``doc`` is what docs/configuration.md shows; ``env``: its
    key when it is not the group's prefix + the field name)."""
    meta: dict[str, Any] = {"doc": doc, "minimum": minimum, "nonempty": nonempty, "env": env,
                             "url": url}
    return field(default=default, metadata=meta)


def _secret(default: Any, doc: str, **kw: Any) -> Any:
    """A documented field whose value stays out of ``repr()`` (and so out of logs)."""
    f = _f(default, doc, **kw)
    f.repr = False
    return f


class _Group:
    """What every settings group shares: validation on construction and a masked repr."""

    __slots__ = ()
    PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for spec in _group_specs(type(self)):
            _check(spec, getattr(self, spec.name))

    def __repr__(self) -> str:
        shown = ", ".join(f"{s.name}={s.shown(getattr(self, s.name))!r}"
                          for s in _group_specs(type(self)))
        return f"{type(self).__name__}({shown})"


@dataclass(frozen=True, slots=True, repr=False)
class KafkaSettings(_Group):
    """Kafka: the brokers, how every client connects, consumer and producer tuning."""

    PREFIX: ClassVar[str] = "kafka_"

    bootstrap: tuple[str, ...] = _f(
        ("127.0.0.1:9092",), "Kafka bootstrap servers, comma-separated `host:port` list.",
        nonempty=True)
    security_protocol: SecurityProtocol = _f(
        "plaintext", "How every Kafka client of segstream connects: `plaintext`, `ssl` (TLS), "
        "`sasl_plaintext` (SASL authentication, no TLS) or `sasl_ssl` (SASL over TLS). "
        "docs/operations.md#security.")
    sasl_mechanism: SaslMechanism = _f(
        "plain", "SASL mechanism with a `sasl_*` protocol: `plain`, `scram-sha-256` or "
        "`scram-sha-512`.")
    sasl_username: str = _f(
        "", "SASL user name (required with a `sasl_*` protocol).")
    sasl_password: str = _secret(
        "", "SASL password (never logged). Prefer `SEGSTREAM_KAFKA_SASL_PASSWORD_FILE` in "
        "production; exactly one of the two with a `sasl_*` protocol.")
    sasl_password_file: str = _f(
        "", "File holding the SASL password (read at start-up, surrounding whitespace "
        "stripped); e.g. a mounted Kubernetes secret.")
    ssl_cafile: str = _f(
        "", "CA bundle (PEM) that verifies the brokers' certificates with `ssl` / `sasl_ssl`; "
        "empty: the system's trusted CAs.")
    ssl_certfile: str = _f(
        "", "Client certificate (PEM) for mutual TLS with `ssl` / `sasl_ssl` (may hold the key "
        "too).")
    ssl_keyfile: str = _f(
        "", "Private key (PEM, unencrypted) of the client certificate.")
    ssl_check_hostname: bool = _f(
        True, "Check that a broker's certificate names the host connected to (`true`/`false`; "
        "turn off only for test certificates).")
    commit_interval_ms: int = _f(
        1000,
        "How often, in milliseconds, the worker commits the offsets of fully processed records.",
        minimum=1, env="commit_interval_ms")
    session_timeout_ms: int = _f(
        60_000,
        "Kafka consumer session timeout, in milliseconds: how long the group waits for a "
        "silent (e.g. killed) worker before moving its partitions to the others.",
        minimum=6_000, env="session_timeout_ms")
    fetch_partition_max_bytes: int = _f(
        1024 * 1024,
        "Most bytes the consumer fetches from one partition per request (aiokafka's "
        "max_partition_fetch_bytes): a worker holds up to about twice this per assigned "
        "partition (a response being delivered and the next one prefetched). A larger record is "
        "still fetched, alone.", minimum=1024, env="fetch_partition_max_bytes")
    producer_linger_ms: int = _f(
        5, "Producer linger, in milliseconds, before a produce request is sent.",
        minimum=0, env="producer_linger_ms")
    auto_offset_reset: OffsetReset = _f(
        "earliest", "Where a new consumer group starts reading: `earliest` or `latest`.",
        env="auto_offset_reset")


@dataclass(frozen=True, slots=True, repr=False)
class RedisSettings(_Group):
    """Redis: the state and membership stores, how to connect, the key prefix."""

    PREFIX: ClassVar[str] = "redis_"

    url: str = _f(
        "redis://127.0.0.1:6379/0",
        "Redis URL of the state and membership stores: `redis://host:port/db`, `rediss://` for "
        "TLS, `redis+cluster://host:port` (`rediss+cluster://` with TLS) for a Redis Cluster, "
        "any node. Credentials may be given in the URL (`redis://user:password@host`), but "
        "prefer `SEGSTREAM_REDIS_PASSWORD(_FILE)`: the URL is not treated as a secret (it is "
        "logged with the password masked).", nonempty=True, url=True)
    username: str = _f(
        "", "Redis ACL user name (Redis 6+); empty: the `default` user.")
    password: str = _secret(
        "", "Redis password (AUTH; never logged). Prefer `SEGSTREAM_REDIS_PASSWORD_FILE` in "
        "production; not together with a password in `SEGSTREAM_REDIS_URL`.")
    password_file: str = _f(
        "", "File holding the Redis password (read at start-up, surrounding whitespace "
        "stripped); e.g. a mounted Kubernetes secret.")
    ssl_cafile: str = _f(
        "", "CA bundle (PEM) that verifies the Redis server's certificate (`rediss://` URLs "
        "only); empty: the system's trusted CAs.")
    ssl_certfile: str = _f(
        "", "Client certificate (PEM) for mutual TLS with Redis (`rediss://` URLs only).")
    ssl_keyfile: str = _f(
        "", "Private key (PEM, unencrypted) of the Redis client certificate.")
    ssl_check_hostname: bool = _f(
        True, "Check that the Redis server's certificate names the host connected to "
        "(`true`/`false`).")
    namespace: str = _f(
        "segstream:", "Prefix of every Redis key (no braces: the keys carry a per-partition "
        "hash tag).")


@dataclass(frozen=True, slots=True, repr=False)
class TopicSettings(_Group):
    """Topics: names (all get the topic prefix), partitions, replication."""

    PREFIX: ClassVar[str] = ""

    prefix: str = _f(
        "",
        "Prefix added to every topic name and to the consumer group id (tests use a unique one "
        "per run so runs never share topics or offsets).", env="topic_prefix")
    raw: str = _f(
        "segstream-events",
        "Raw topic (public contract): one record = one event object or a JSON array of events.",
        env="raw_topic", nonempty=True)
    bundles: str = _f(
        "segstream-bundles",
        "Internal topic of validated events packed into bundles, partitioned by routing id.",
        env="bundles_topic", nonempty=True)
    deadletters: str = _f(
        "segstream-deadletters",
        "Rejected events with their reason code, original bytes and origin.",
        env="deadletters_topic", nonempty=True)
    changes: str = _f("segstream-changes", "Segment ENTER/EXIT changes, keyed by customer.",
        env="changes_topic", nonempty=True)
    definitions: str = _f("segstream-definitions", "Segment definition documents.",
        env="definitions_topic", nonempty=True)
    types: str = _f("segstream-event-types", "Event-types documents (custom event types, "
        "`segstream types apply`).", env="types_topic", nonempty=True)
    raw_partitions: int = _f(
        4, "Partitions of the raw topic when the worker has to create it.", minimum=1)
    bundle_partitions: int = _f(
        8,
        "Partitions of the bundles topic. Routing ids map to them with Kafka's murmur2 "
        "(schemas.partitioner); changing it on a live system moves customers.", minimum=1)
    deadletter_partitions: int = _f(1, "Partitions of the dead-letter topic.", minimum=1)
    changes_partitions: int = _f(8, "Partitions of the changes topic.", minimum=1)
    replication_factor: int = _f(
        1, "Replication factor of the topics the worker creates.", minimum=1)


@dataclass(frozen=True, slots=True, repr=False)
class IngestSettings(_Group):
    """Ingest: raw records in, bundles and dead letters out (batching, size and time limits)."""

    PREFIX: ClassVar[str] = ""

    bundle_max_events: int = _f(500, "A bundle is flushed when it holds this many events.",
                                minimum=1)
    bundle_max_bytes: int = _f(
        512 * 1024,
        "A bundle is flushed when its estimated size reaches this many bytes (must stay below "
        "the broker's message.max.bytes, 1 MiB by default); an encoded bundle above it is split.",
        minimum=1024)
    bundle_linger_ms: int = _f(
        10,
        "Longest wait, in milliseconds, for more raw records before the pending bundles are "
        "flushed (the ingest agent's batch window; event-to-change latency pays it once, "
        "docs/benchmarks.md). Longer: fuller bundles (less work per event downstream) at the "
        "cost of latency; under load batches fill before it runs out.", minimum=1)
    batch_records: int = _f(
        1000,
        "Most raw records the ingest agent takes in one batch before flushing its bundles. "
        "Twice this is the raw topic's stream buffer: the most raw records a worker holds "
        "fetched and not yet taken (Faust pauses fetching beyond it).",
        minimum=1, env="ingest_batch_records")
    max_inflight_batches: int = _f(
        4,
        "Ingest batches whose output may be awaiting Kafka's acknowledgement while the next "
        "batch is packed (pipelining; their offsets are committed only once acknowledged).",
        minimum=1, env="ingest_max_inflight_batches")
    max_record_bytes: int = _f(
        1024 * 1024, "Raw records larger than this are dead-lettered whole.", minimum=1)
    max_events_per_record: int = _f(
        1000, "Raw JSON arrays with more events than this are dead-lettered whole.", minimum=1)
    max_event_bytes: int = _f(
        32_768, "Events larger than this (bytes of their JSON text) are dead-lettered.",
        minimum=1)
    max_future_ms: int = _f(
        600_000,
        "How far, in milliseconds, an event timestamp may be ahead of the ingest clock "
        "(device clock skew) before the event is dead-lettered.", minimum=0)
    types_file: str = _f(
        "", "Event-types file (YAML) declaring custom event types (docs/events.md, \"Custom "
        "event types\"): the collector and the ingest agent accept and validate them, and "
        "segment conditions may use them. Empty: the built-in types only.")


@dataclass(frozen=True, slots=True, repr=False)
class SegmentationSettings(_Group):
    """Segmentation: bundles in, changes, states and timers out."""

    PREFIX: ClassVar[str] = ""

    id_hash_key: str = _secret(
        "", "Secret key of the event-id hash used for de-duplication (keyed BLAKE2b, "
        "docs/time-semantics.md): set one per deployment, the same on every worker, so that "
        "nobody can craft ids that collide. Empty: a built-in key. Changing it makes the ids "
        "kept in stored states unrecognisable: duplicates of events already applied within the "
        "allowed lateness are then counted again once.")
    segments_file: str = _f(
        "", "Segment definitions file (YAML); empty: the packaged default catalogue "
        "(processors/catalogue.yaml).")
    batch_records: int = _f(
        200, "Bundle records the segmentation agent takes per batch (per-partition commits). "
        "Twice this is the bundles topic's stream buffer: the most bundle records a worker "
        "holds fetched and not yet taken (Faust pauses fetching beyond it).",
        minimum=1, env="segment_batch_records")
    linger_ms: int = _f(
        10, "Longest wait, in milliseconds, for more bundle records before the segmentation "
        "agent processes its batch (its batch window; latency pays it once, like "
        "`SEGSTREAM_BUNDLE_LINGER_MS`). Under load batches fill before it runs out.",
        minimum=1, env="segment_linger_ms")
    batch_max_bytes: int = _f(
        2 * 1024 * 1024, "Most bundle bytes decoded and committed together: a batch is "
        "processed in waves of at most this many bytes and one chunk per partition (one "
        "acknowledgement wait per wave, one Redis commit per partition chunk; bounds the events "
        "in memory when a backlog fills every batch).",
        minimum=1, env="segment_batch_max_bytes")
    state_cache_max: int = _f(
        200_000, "Customer states a worker keeps in memory, shared evenly by its bundle "
        "partitions (least recently used beyond its share are re-read from Redis). A cached "
        "state takes roughly 2-7 KB (3-10 times its encoded size in Redis, depending on the "
        "definitions' windows).", minimum=1)
    timer_interval_ms: int = _f(
        200, "How often, in milliseconds, the timer task looks for due customers "
        "(time-only changes fire within this plus processing time).", minimum=10)
    timer_batch: int = _f(
        2_000, "Due customers advanced per partition per timer pass.", minimum=1)


@dataclass(frozen=True, slots=True, repr=False)
class ApiSettings(_Group):
    """Membership API: authentication of the worker's HTTP API (docs/api.md)."""

    PREFIX: ClassVar[str] = "api_"

    auth: ApiAuth = _f(
        "tokens", "Authentication of the membership API (docs/api.md): `tokens` (bearer tokens "
        "from `SEGSTREAM_API_TOKENS` / `SEGSTREAM_API_TOKENS_FILE`; with none configured every "
        "API route answers 503 `auth_not_configured`) or `none` (no authentication: local "
        "development only). /health, /ready and /metrics never need a token.")
    tokens: tuple[str, ...] = _secret(
        (), "Accepted API bearer tokens, comma-separated (each at least 16 characters; the "
        "worker refuses to start otherwise). Prefer `SEGSTREAM_API_TOKENS_FILE` in production.")
    tokens_file: str = _f(
        "", "File of accepted API bearer tokens, one per line (`#` comments and blank lines "
        "ignored), read when the worker starts; e.g. a mounted Kubernetes secret.")
    revoked_tokens: tuple[str, ...] = _f(
        (), "Revoked API tokens as comma-separated SHA-256 hex digests (`printf %s TOKEN | "
        "sha256sum`): answered 403 `token_revoked` even if still listed as accepted.")


@dataclass(frozen=True, slots=True, repr=False)
class CollectorSettings(_Group):
    """HTTP collector: the `segstream collector` service, events over HTTP (docs/collector.md)."""

    PREFIX: ClassVar[str] = "collector_"

    host: str = _f(
        "127.0.0.1", "Address the HTTP collector binds to (`0.0.0.0` in a container).")
    port: int = _f(8088, "Port of the HTTP collector.", minimum=1)
    auth: CollectorAuth = _f(
        "keys", "Authentication of `POST /v1/events`: `keys` (write keys from "
        "`SEGSTREAM_COLLECTOR_WRITE_KEYS` / `SEGSTREAM_COLLECTOR_WRITE_KEYS_FILE`; with none "
        "configured the collector answers 503 `auth_not_configured`) or `none` (no key: local "
        "development only; events without a source get `unknown`).")
    write_keys: tuple[str, ...] = _secret(
        (), "Write keys as comma-separated `source=key` pairs (each key at least 16 "
        "characters): a request with that key may post events, and events without a `source` "
        "get that source. Prefer `SEGSTREAM_COLLECTOR_WRITE_KEYS_FILE` in production.")
    write_keys_file: str = _f(
        "", "File of `source=key` lines (`#` comments and blank lines ignored), read when the "
        "collector starts; e.g. a mounted Kubernetes secret.")
    revoked_keys: tuple[str, ...] = _f(
        (), "Revoked write keys as comma-separated SHA-256 hex digests (`printf %s KEY | "
        "sha256sum`): answered 403 `key_revoked` even if still configured.")
    cors_origins: tuple[str, ...] = _f(
        (), "Browser origins allowed to post (CORS), comma-separated, e.g. "
        "`https://shop.example,https://www.shop.example`; `*` allows any. Requests that carry "
        "another `Origin` get 403; server-side clients send no `Origin` and are unaffected.")
    rate_per_s: int = _f(
        5000, "Per write key rate limit, in events per second (token bucket; 0 disables): "
        "beyond it requests get 429 with `Retry-After`.", minimum=0)
    rate_burst: int = _f(
        10_000, "Token bucket capacity of the per-key rate limit, in events (a request never "
        "costs more than this, so a full bucket always admits one maximal batch).", minimum=1)
    produce_timeout_ms: int = _f(
        10_000, "Longest wait, in milliseconds, for Kafka to acknowledge a request's events "
        "before the collector answers 503 (the client retries; duplicates are dropped "
        "downstream by event id).", minimum=100)


@dataclass(frozen=True, slots=True, repr=False)
class ProcessSettings(_Group):
    """Process: identity, the agents this worker runs, its web server, files and logging."""

    PREFIX: ClassVar[str] = ""

    app_id: str = _f(
        "segstream",
        "Faust application id; with the topic prefix it is the Kafka consumer group id.",
        nonempty=True)
    agents: tuple[AgentName, ...] = _f(
        ("ingest", "segmentation"), "Comma-separated agents this worker runs: `ingest` (raw events "
        "-> bundles) and/or `segmentation` (bundles -> changes, state, timers).", nonempty=True)
    web_host: str = _f(
        "127.0.0.1", "Address the worker's web server (/metrics, API) binds to.")
    web_port: int = _f(6066, "Port of the worker's web server.", minimum=1)
    data_dir: Path = _f(
        _DEFAULT_DATA_DIR, "Directory for the worker's local files (Faust datadir).")
    log_level: LogLevel = _f("info", "Log level: debug, info, warning, error or critical.")
    connect_wait_s: int = _f(
        15, "How long, in seconds, a short-lived command (`segstream segments`, `watch`, "
        "`simulate`, `redis-rebuild`) waits for Kafka, Redis or the collector before it gives "
        "up with exit status 69 (announced on stderr once the first attempt failed).",
        minimum=1)
    log_format: LogFormat = _f(
        "text", "Log line format of the worker, collector and deliver processes: `text` "
        "(human-readable lines) or `json` (one JSON object per line on stderr: ts, level, "
        "logger, message, the event/customer ids and partition where the record concerns "
        "them, exc; secrets are scrubbed as in text; stream/logs.py).")



@dataclass(frozen=True, slots=True, repr=False)
class DeliverSettings(_Group):
    """Webhook delivery: the `segstream deliver` process (destinations: docs/destinations.md)."""

    PREFIX: ClassVar[str] = "deliver_"

    destinations_file: str = _f(
        "", "The destinations file of `segstream deliver` (YAML: URLs, secrets, filters, "
        "batching, retries; docs/destinations.md); `--destinations FILE` overrides it.",
        env="destinations_file")
    group: str = _f(
        "segstream-deliver", "Kafka consumer group of `segstream deliver` on the changes topic "
        "(with the topic prefix); its own, so the workers' offsets are never touched.",
        nonempty=True)
    deadletters_topic: str = _f(
        "segstream-deliver-deadletters", "Batches a destination refused (4xx) or that failed "
        "`max_tries` times: one topic for every destination, keyed by the destination name.")
    port: int = _f(
        6067, "Port of the `/metrics` and `/health` endpoints of `segstream deliver` (on "
        "`SEGSTREAM_WEB_HOST`).", minimum=1)


def _group(cls: type[_Group]) -> Any:
    return field(default_factory=cls)


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Configuration of a segstream process (worker, collector, tools, benchmarks)."""

    kafka: KafkaSettings = _group(KafkaSettings)
    redis: RedisSettings = _group(RedisSettings)
    topics: TopicSettings = _group(TopicSettings)
    ingest: IngestSettings = _group(IngestSettings)
    segmentation: SegmentationSettings = _group(SegmentationSettings)
    api: ApiSettings = _group(ApiSettings)
    collector: CollectorSettings = _group(CollectorSettings)
    process: ProcessSettings = _group(ProcessSettings)
    deliver: DeliverSettings = _group(DeliverSettings)

    def __post_init__(self) -> None:
        _check_security(self)

    def __repr__(self) -> str:
        """Every setting by its key, secrets shown as ``'***'`` when set and URL credentials
        masked (what a log line of the effective configuration may show)."""
        parts = [f"{s.key}={s.shown(s.get(self))!r}" for s in setting_specs()]
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__

    # --- derived names -------------------------------------------------------------------------
    @property
    def group_id(self) -> str:
        """Kafka consumer group id (= Faust app id): topic prefix + app id."""
        return self.topics.prefix + self.process.app_id

    def topic(self, role: TopicRole) -> str:
        """The full (prefixed) name of the topic with that role."""
        t = self.topics
        names: dict[str, str] = {
            "raw": t.raw, "bundles": t.bundles, "deadletters": t.deadletters,
            "changes": t.changes, "definitions": t.definitions, "types": t.types,
        }
        return t.prefix + names[role]

    # --- construction --------------------------------------------------------------------------
    def but(self, **values: Any) -> Settings:
        """A copy with the settings named by key (``kafka_bootstrap=...``, the environment
        variable's name without ``SEGSTREAM_``, lower case) replaced by typed values."""
        specs = _specs_by_key()
        changes: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if key not in specs:
                raise TypeError(f"unknown setting {key!r} (not a key of stream.settings)")
            changes.setdefault(specs[key].group, {})[specs[key].name] = value
        groups = {g: dataclasses.replace(getattr(self, g), **v) for g, v in changes.items()}
        return dataclasses.replace(self, **groups)

    @classmethod
    def build(cls, **values: Any) -> Settings:
        """The defaults with the settings named by key replaced (see :meth:`but`)."""
        specs = _specs_by_key()
        groups: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if key not in specs:
                raise TypeError(f"unknown setting {key!r} (not a key of stream.settings)")
            groups.setdefault(specs[key].group, {})[specs[key].name] = value
        kinds = {f.name: f.default_factory for f in dataclasses.fields(cls)}
        # default_factory is typed "callable or MISSING"; every group field has a factory
        return cls(**{g: kinds[g](**v) for g, v in groups.items()})  # type: ignore[operator]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``SEGSTREAM_*`` variables (``os.environ`` when *environ* is None).

        Unknown ``SEGSTREAM_*`` names are logged as a warning (a likely typo), not an error: the
        deploy scripts use the same prefix for their own variables.
        """
        if environ is None:
            environ = os.environ
        known = {s.env: s for s in setting_specs()}
        unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            logging.getLogger(__name__).warning(
                "ignoring unknown setting(s) %s (not a setting of stream.settings)",
                ", ".join(unknown))
        return cls.build(**{s.key: s.parse(environ[name])
                            for name, s in known.items() if name in environ})


# --- field specs: how each field is read, checked and shown ---------------------------------

def _parse_bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(text)


def _parse_path(text: str) -> Path:
    if not text:
        raise ValueError("empty path")
    return Path(text)


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


#: kind -> parser of the (stripped) environment value
_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int, "bool": _parse_bool, "path": _parse_path, "str": str,
    "choice": str.lower, "list": _parse_list,
}
_KINDS: dict[Any, str] = {int: "int", bool: "bool", Path: "path", str: "str"}


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One setting: where it lives (``group``.``name``), its key and variable, how it parses."""

    group: str  # attribute of Settings
    name: str  # attribute of the group
    key: str  # the variable without the prefix, lower case (Settings.build / but)
    kind: str  # int, bool, path, str, choice or list
    choices: tuple[str, ...]  # of a choice, or of each element of a list; () for any
    field: dataclasses.Field[Any]

    @property
    def env(self) -> str:
        return env_name(self.key)

    @property
    def secret(self) -> bool:
        return not self.field.repr

    @property
    def type_name(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        if self.kind == "list":
            return "list" + (" of " + ", ".join(f"`{c}`" for c in self.choices)
                             if self.choices else "")
        return self.kind

    def get(self, settings: Settings) -> Any:
        return getattr(getattr(settings, self.group), self.name)

    def parse(self, raw: str) -> Any:
        """The typed value of the environment value ``raw``."""
        try:
            value = _PARSERS[self.kind](raw.strip())
        except ValueError:
            shown = MASK if self.secret else repr(raw)
            raise SettingsError(f"{self.env}={shown}: expected {self.kind}") from None
        if self.kind == "list" and self.choices:  # choices are case-insensitive
            return tuple(item.lower() for item in value)
        return value

    def shown(self, value: Any) -> Any:
        """``value`` as a log line may show it."""
        if self.secret:
            return MASK if value else value
        if self.field.metadata.get("url"):
            return mask_url(value)
        return value


def _spec(group: str, cls: type[_Group], f: dataclasses.Field[Any], hint: Any) -> SettingSpec:
    key = f.metadata["env"] or cls.PREFIX + f.name
    origin = get_origin(hint)
    if origin is Literal:
        return SettingSpec(group, f.name, key, "choice", get_args(hint), f)
    if origin is tuple:
        element = get_args(hint)[0]
        choices = get_args(element) if get_origin(element) is Literal else ()
        return SettingSpec(group, f.name, key, "list", choices, f)
    return SettingSpec(group, f.name, key, _KINDS[hint], (), f)


_GROUP_SPECS: dict[type[_Group], tuple[SettingSpec, ...]] = {}


def _group_specs(cls: type[_Group]) -> tuple[SettingSpec, ...]:
    """The specs of a group's fields (worked out once per group, from its type hints)."""
    specs = _GROUP_SPECS.get(cls)
    if specs is None:
        hints = typing.get_type_hints(cls)
        group = {f.type: f.name for f in dataclasses.fields(Settings)}[cls.__name__]
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # every group is a dataclass
        specs = _GROUP_SPECS[cls] = tuple(_spec(group, cls, f, hints[f.name]) for f in fields)
    return specs


@cache
def setting_specs() -> tuple[SettingSpec, ...]:
    """Every setting, group by group, in declaration order."""
    hints = typing.get_type_hints(Settings)
    return tuple(s for f in dataclasses.fields(Settings) for s in _group_specs(hints[f.name]))


@cache
def _specs_by_key() -> dict[str, SettingSpec]:
    return {s.key: s for s in setting_specs()}


def _check(spec: SettingSpec, value: Any) -> None:
    name = spec.env
    minimum = spec.field.metadata["minimum"]
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value!r}: must be >= {minimum:g}")
    if spec.kind == "list" and not isinstance(value, tuple):
        raise SettingsError(f"{name}={spec.shown(value)!r}: expected a tuple (a list setting)")
    if spec.field.metadata["nonempty"] and not value:
        raise SettingsError(f"{name} must not be empty")
    if spec.kind == "choice" and value not in spec.choices:
        raise SettingsError(f"{name}={value!r}: must be one of {', '.join(spec.choices)}")
    if spec.kind == "list" and spec.choices and set(value) - set(spec.choices):
        raise SettingsError(f"{name}={','.join(value)!r}: a comma-separated subset of "
                            f"{', '.join(spec.choices)}")


def env_name(key: str) -> str:
    """The environment variable of a setting's key (``kafka_bootstrap``)."""
    return ENV_PREFIX + key.upper()


def mask_url(url: str) -> str:
    """``url`` with the password of its credentials (if any) replaced by ``***``.

    >>> mask_url("redis://:s3cret@host:6379/0"), mask_url("rediss://app:pw@h/1")
    ('redis://:***@host:6379/0', 'rediss://app:***@h/1')
    >>> mask_url("redis://127.0.0.1:6379/0"), mask_url("redis+cluster://u@h:1")
    ('redis://127.0.0.1:6379/0', 'redis+cluster://u@h:1')
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    masked = f"{user}:{MASK}" if colon else user
    return f"{scheme}://{masked}@{host}{slash}{path}"


def url_has_password(url: str) -> bool:
    """Whether ``url`` carries a password (``scheme://[user]:password@host``)."""
    return mask_url(url) != url and f":{MASK}@" in mask_url(url)


_KAFKA_SASL = ("sasl_plaintext", "sasl_ssl")
_KAFKA_TLS = ("ssl", "sasl_ssl")


def _check_security(s: Settings) -> None:
    """Connection settings that contradict each other (never shows a secret's value)."""
    proto = s.kafka.security_protocol
    var = env_name("kafka_security_protocol")
    if proto in _KAFKA_SASL:
        if not s.kafka.sasl_username:
            raise SettingsError(f"{var}={proto} needs SEGSTREAM_KAFKA_SASL_USERNAME")
        if not (s.kafka.sasl_password or s.kafka.sasl_password_file):
            raise SettingsError(f"{var}={proto} needs SEGSTREAM_KAFKA_SASL_PASSWORD or "
                                "SEGSTREAM_KAFKA_SASL_PASSWORD_FILE")
    elif s.kafka.sasl_username or s.kafka.sasl_password or s.kafka.sasl_password_file:
        raise SettingsError(f"SEGSTREAM_KAFKA_SASL_* are set but {var}={proto}: use "
                            "sasl_ssl (or sasl_plaintext)")
    if s.kafka.sasl_password and s.kafka.sasl_password_file:
        raise SettingsError("SEGSTREAM_KAFKA_SASL_PASSWORD and SEGSTREAM_KAFKA_SASL_PASSWORD_FILE "
                            "are both set: keep one")
    tls_files = (s.kafka.ssl_cafile, s.kafka.ssl_certfile, s.kafka.ssl_keyfile)
    if proto not in _KAFKA_TLS and any(tls_files):
        raise SettingsError(f"SEGSTREAM_KAFKA_SSL_* files are set but {var}={proto}: use ssl "
                            "or sasl_ssl")
    if s.kafka.ssl_keyfile and not s.kafka.ssl_certfile:
        raise SettingsError("SEGSTREAM_KAFKA_SSL_KEYFILE needs SEGSTREAM_KAFKA_SSL_CERTFILE")
    url = s.redis.url
    if s.redis.password and s.redis.password_file:
        raise SettingsError("SEGSTREAM_REDIS_PASSWORD and SEGSTREAM_REDIS_PASSWORD_FILE are both "
                            "set: keep one")
    if (s.redis.password or s.redis.password_file) and url_has_password(url):
        raise SettingsError("SEGSTREAM_REDIS_URL carries a password and "
                            "SEGSTREAM_REDIS_PASSWORD(_FILE) is set too: keep one")
    tls = url.startswith(("rediss://", "rediss+cluster://"))
    if not tls and (s.redis.ssl_cafile or s.redis.ssl_certfile or s.redis.ssl_keyfile):
        raise SettingsError(f"SEGSTREAM_REDIS_SSL_* files are set but SEGSTREAM_REDIS_URL="
                            f"{mask_url(url)} is not a TLS URL (rediss:// or rediss+cluster://)")
    if s.redis.ssl_keyfile and not s.redis.ssl_certfile:
        raise SettingsError("SEGSTREAM_REDIS_SSL_KEYFILE needs SEGSTREAM_REDIS_SSL_CERTFILE")


def settings_markdown() -> str:
    """docs/configuration.md, generated from the field documentation (one table per group)."""
    lines = [
        "# Configuration",
        "",
        "<!-- GENERATED by `python -m stream.settings > docs/configuration.md`; do not edit. -->",
        "",
        "Every segstream process reads its configuration from environment variables with the",
        "prefix `SEGSTREAM_` (class `stream.settings.Settings`, the only reader of the",
        "environment). A bad value stops the process with a message naming the variable; an",
        "unknown `SEGSTREAM_*` variable is logged as a warning. Topic names and the consumer",
        "group id get `SEGSTREAM_TOPIC_PREFIX` prepended. A list is comma-separated (spaces",
        "around items and empty items are ignored). The settings are grouped as in the code",
        "(`settings.kafka.bootstrap` is `SEGSTREAM_KAFKA_BOOTSTRAP`).",
    ]
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        cls = hints[f.name]
        title, _, about = cls.__doc__.partition(": ")
        about = f"{about[:1].upper()}{about[1:]} In the code: `settings.{f.name}`."
        lines += ["", f"## {title}", "", about, "",
                  "| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        for s in _group_specs(cls):
            default = s.field.default
            if isinstance(default, bool):
                default = str(default).lower()
            elif isinstance(default, tuple):
                default = ",".join(default)
            shown = f"`{default}`" if default != "" else '`""` (none)'
            lines.append(f"| `{s.env}` | {s.type_name} | {shown} | {s.field.metadata['doc']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
