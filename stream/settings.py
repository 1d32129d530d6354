"""segstream settings: the ONE place that reads the environment.

Every field of :class:`Settings` is read from ``SEGSTREAM_<FIELD NAME IN UPPER CASE>``; its type,
default and meaning live next to the field (``metadata["doc"]``) so that
``docs/configuration.md`` is generated from this class (``python -m stream.settings``) and a unit
test fails when the two disagree. Nothing else in the code base reads ``os.environ``: build a
``Settings`` (``Settings.from_env()`` in the shell, ``Settings(...)`` or ``replace(...)`` in
tests) and pass it down.

>>> s = Settings.from_env({"SEGSTREAM_BUNDLE_MAX_EVENTS": "100", "SEGSTREAM_TOPIC_PREFIX": "t1-"})
>>> s.bundle_max_events, s.topic("raw"), s.group_id
(100, 't1-segstream-events', 't1-segstream')
"""

from __future__ import annotations

import dataclasses
import logging
import os  # the one module allowed to read os.environ
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas.errors import SegstreamError

ENV_PREFIX = "SEGSTREAM_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_DEFAULT_DATA_DIR = Path(".run/data")
AGENT_NAMES = ("ingest", "segmentation")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
TopicRole = Literal["raw", "bundles", "deadletters", "changes", "definitions"]


class SettingsError(SegstreamError, ValueError):
    """An environment variable holds a value the settings cannot accept."""


def _f(default: Any, doc: str, *, minimum: float | None = None,
       choices: tuple[str, ...] | None = None) -> Any:
    """A documented settings field (``doc`` is what docs/configuration.md shows)."""
    meta: dict[str, Any] = {"doc": doc, "minimum": minimum, "choices": choices}
    return field(default=default, metadata=meta)


def _secret(default: Any, doc: str) -> Any:
    """A documented field whose value stays out of ``repr()`` (and so out of logs)."""
    f = _f(default, doc)
    f.repr = False
    return f


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of a segstream process (worker, tools, benchmarks)."""

    # --- connections -------------------------------------------------------------------------
    kafka_bootstrap: str = _f(
        "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated `host:port` list.")
    kafka_security_protocol: str = _f(
        "plaintext", "How every Kafka client of segstream connects: `plaintext`, `ssl` (TLS), "
        "`sasl_plaintext` (SASL authentication, no TLS) or `sasl_ssl` (SASL over TLS). "
        "docs/operations.md#security.",
        choices=("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"))
    kafka_sasl_mechanism: str = _f(
        "plain", "SASL mechanism with a `sasl_*` protocol: `plain`, `scram-sha-256` or "
        "`scram-sha-512`.", choices=("plain", "scram-sha-256", "scram-sha-512"))
    kafka_sasl_username: str = _f(
        "", "SASL user name (required with a `sasl_*` protocol).")
    kafka_sasl_password: str = _secret(
        "", "SASL password (never logged). Prefer `SEGSTREAM_KAFKA_SASL_PASSWORD_FILE` in "
        "production; exactly one of the two with a `sasl_*` protocol.")
    kafka_sasl_password_file: str = _f(
        "", "File holding the SASL password (read at start-up, surrounding whitespace "
        "stripped); e.g. a mounted Kubernetes secret.")
    kafka_ssl_cafile: str = _f(
        "", "CA bundle (PEM) that verifies the brokers' certificates with `ssl` / `sasl_ssl`; "
        "empty: the system's trusted CAs.")
    kafka_ssl_certfile: str = _f(
        "", "Client certificate (PEM) for mutual TLS with `ssl` / `sasl_ssl` (may hold the key "
        "too).")
    kafka_ssl_keyfile: str = _f(
        "", "Private key (PEM, unencrypted) of the client certificate.")
    kafka_ssl_check_hostname: bool = _f(
        True, "Check that a broker's certificate names the host connected to (`true`/`false`; "
        "turn off only for test certificates).")
    redis_url: str = _f(
        "redis://127.0.0.1:6379/0",
        "Redis URL of the state and membership stores: `redis://host:port/db`, `rediss://` for "
        "TLS, `redis+cluster://host:port` (`rediss+cluster://` with TLS) for a Redis Cluster, "
        "any node. Credentials may be given in the URL (`redis://user:password@host`), but "
        "prefer `SEGSTREAM_REDIS_PASSWORD(_FILE)`: the URL is not treated as a secret (it is "
        "logged with the password masked).")
    redis_username: str = _f(
        "", "Redis ACL user name (Redis 6+); empty: the `default` user.")
    redis_password: str = _secret(
        "", "Redis password (AUTH; never logged). Prefer `SEGSTREAM_REDIS_PASSWORD_FILE` in "
        "production; not together with a password in `SEGSTREAM_REDIS_URL`.")
    redis_password_file: str = _f(
        "", "File holding the Redis password (read at start-up, surrounding whitespace "
        "stripped); e.g. a mounted Kubernetes secret.")
    redis_ssl_cafile: str = _f(
        "", "CA bundle (PEM) that verifies the Redis server's certificate (`rediss://` URLs "
        "only); empty: the system's trusted CAs.")
    redis_ssl_certfile: str = _f(
        "", "Client certificate (PEM) for mutual TLS with Redis (`rediss://` URLs only).")
    redis_ssl_keyfile: str = _f(
        "", "Private key (PEM, unencrypted) of the Redis client certificate.")
    redis_ssl_check_hostname: bool = _f(
        True, "Check that the Redis server's certificate names the host connected to "
        "(`true`/`false`).")
    # --- identity ----------------------------------------------------------------------------
    app_id: str = _f(
        "segstream",
        "Faust application id; with the topic prefix it is the Kafka consumer group id.")
    topic_prefix: str = _f(
        "",
        "Prefix added to every topic name and to the consumer group id (tests use a unique one "
        "per run so runs never share topics or offsets).")
    # --- topics ------------------------------------------------------------------------------
    raw_topic: str = _f(
        "segstream-events",
        "Raw topic (public contract): one record = one event object or a JSON array of events.")
    bundles_topic: str = _f(
        "segstream-bundles",
        "Internal topic of validated events packed into bundles, partitioned by routing id.")
    deadletters_topic: str = _f(
        "segstream-deadletters",
        "Rejected events with their reason code, original bytes and origin.")
    changes_topic: str = _f("segstream-changes", "Segment ENTER/EXIT changes, keyed by customer.")
    definitions_topic: str = _f("segstream-definitions", "Segment definition documents.")
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
    # --- ingest ------------------------------------------------------------------------------
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
    ingest_batch_records: int = _f(
        1000,
        "Most raw records the ingest agent takes in one batch before flushing its bundles. "
        "Twice this is the raw topic's stream buffer: the most raw records a worker holds "
        "fetched and not yet taken (Faust pauses fetching beyond it).",
        minimum=1)
    ingest_max_inflight_batches: int = _f(
        4,
        "Ingest batches whose output may be awaiting Kafka's acknowledgement while the next "
        "batch is packed (pipelining; their offsets are committed only once acknowledged).",
        minimum=1)
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
    # --- Kafka client tuning ---------------------------------------------------------------
    commit_interval_ms: int = _f(
        1000,
        "How often, in milliseconds, the worker commits the offsets of fully processed records.",
        minimum=1)
    session_timeout_ms: int = _f(
        60_000,
        "Kafka consumer session timeout, in milliseconds: how long the group waits for a "
        "silent (e.g. killed) worker before moving its partitions to the others.",
        minimum=6_000)
    fetch_partition_max_bytes: int = _f(
        1024 * 1024,
        "Most bytes the consumer fetches from one partition per request (aiokafka's "
        "max_partition_fetch_bytes): a worker holds up to about twice this per assigned "
        "partition (a response being delivered and the next one prefetched). A larger record is "
        "still fetched, alone.", minimum=1024)
    producer_linger_ms: int = _f(
        5, "Producer linger, in milliseconds, before a produce request is sent.", minimum=0)
    auto_offset_reset: str = _f(
        "earliest", "Where a new consumer group starts reading: `earliest` or `latest`.",
        choices=("earliest", "latest"))
    # --- segmentation ------------------------------------------------------------------------
    agents: str = _f(
        "ingest,segmentation", "Comma-separated agents this worker runs: `ingest` (raw events "
        "-> bundles) and/or `segmentation` (bundles -> changes, state, timers).")
    id_hash_key: str = _secret(
        "", "Secret key of the event-id hash used for de-duplication (keyed BLAKE2b, "
        "docs/time-semantics.md): set one per deployment, the same on every worker, so that "
        "nobody can craft ids that collide. Empty: a built-in key. Changing it makes the ids "
        "kept in stored states unrecognisable: duplicates of events already applied within the "
        "allowed lateness are then counted again once.")
    segments_file: str = _f(
        "", "Segment definitions file (YAML); empty: the packaged default catalogue "
        "(processors/catalogue.yaml).")
    redis_namespace: str = _f(
        "segstream:", "Prefix of every Redis key (no braces: the keys carry a per-partition "
        "hash tag).")
    segment_batch_records: int = _f(
        200, "Bundle records the segmentation agent takes per batch (per-partition commits). "
        "Twice this is the bundles topic's stream buffer: the most bundle records a worker "
        "holds fetched and not yet taken (Faust pauses fetching beyond it).", minimum=1)
    segment_linger_ms: int = _f(
        10, "Longest wait, in milliseconds, for more bundle records before the segmentation "
        "agent processes its batch (its batch window; latency pays it once, like "
        "`SEGSTREAM_BUNDLE_LINGER_MS`). Under load batches fill before it runs out.", minimum=1)
    segment_batch_max_bytes: int = _f(
        2 * 1024 * 1024, "Most bundle bytes decoded and committed together: a batch is "
        "processed in waves of at most this many bytes and one chunk per partition (one "
        "acknowledgement wait per wave, one Redis commit per partition chunk; bounds the events "
        "in memory when a backlog fills every batch).",
        minimum=1)
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
    # --- membership API ------------------------------------------------------------------
    api_auth: str = _f(
        "tokens", "Authentication of the membership API (docs/api.md): `tokens` (bearer tokens "
        "from `SEGSTREAM_API_TOKENS` / `SEGSTREAM_API_TOKENS_FILE`; with none configured every "
        "API route answers 503 `auth_not_configured`) or `none` (no authentication: local "
        "development only). /health, /ready and /metrics never need a token.",
        choices=("tokens", "none"))
    api_tokens: str = _secret(
        "", "Accepted API bearer tokens, comma-separated (each at least 16 characters; the "
        "worker refuses to start otherwise). Prefer `SEGSTREAM_API_TOKENS_FILE` in production.")
    api_tokens_file: str = _f(
        "", "File of accepted API bearer tokens, one per line (`#` comments and blank lines "
        "ignored), read when the worker starts; e.g. a mounted Kubernetes secret.")
    api_revoked_tokens: str = _f(
        "", "Revoked API tokens as comma-separated SHA-256 hex digests (`printf %s TOKEN | "
        "sha256sum`): answered 403 `token_revoked` even if still listed as accepted.")
    # --- HTTP collector (`segstream collector`, docs/collector.md) ---------------------------
    collector_host: str = _f(
        "127.0.0.1", "Address the HTTP collector binds to (`0.0.0.0` in a container).")
    collector_port: int = _f(8088, "Port of the HTTP collector.", minimum=1)
    collector_auth: str = _f(
        "keys", "Authentication of `POST /v1/events`: `keys` (write keys from "
        "`SEGSTREAM_COLLECTOR_WRITE_KEYS` / `SEGSTREAM_COLLECTOR_WRITE_KEYS_FILE`; with none "
        "configured the collector answers 503 `auth_not_configured`) or `none` (no key: local "
        "development only; events without a source get `unknown`).", choices=("keys", "none"))
    collector_write_keys: str = _secret(
        "", "Write keys as comma-separated `source=key` pairs (each key at least 16 "
        "characters): a request with that key may post events, and events without a `source` "
        "get that source. Prefer `SEGSTREAM_COLLECTOR_WRITE_KEYS_FILE` in production.")
    collector_write_keys_file: str = _f(
        "", "File of `source=key` lines (`#` comments and blank lines ignored), read when the "
        "collector starts; e.g. a mounted Kubernetes secret.")
    collector_revoked_keys: str = _f(
        "", "Revoked write keys as comma-separated SHA-256 hex digests (`printf %s KEY | "
        "sha256sum`): answered 403 `key_revoked` even if still configured.")
    collector_cors_origins: str = _f(
        "", "Browser origins allowed to post (CORS), comma-separated, e.g. "
        "`https://shop.example,https://www.shop.example`; `*` allows any. Requests that carry "
        "another `Origin` get 403; server-side clients send no `Origin` and are unaffected.")
    collector_rate_per_s: int = _f(
        5000, "Per write key rate limit, in events per second (token bucket; 0 disables): "
        "beyond it requests get 429 with `Retry-After`.", minimum=0)
    collector_rate_burst: int = _f(
        10_000, "Token bucket capacity of the per-key rate limit, in events (a request never "
        "costs more than this, so a full bucket always admits one maximal batch).", minimum=1)
    collector_produce_timeout_ms: int = _f(
        10_000, "Longest wait, in milliseconds, for Kafka to acknowledge a request's events "
        "before the collector answers 503 (the client retries; duplicates are dropped "
        "downstream by event id).", minimum=100)
    # --- process -----------------------------------------------------------------------------
    web_host: str = _f(
        "127.0.0.1", "Address the worker's web server (/metrics, API) binds to.")
    web_port: int = _f(6066, "Port of the worker's web server.", minimum=1)
    data_dir: Path = _f(  # noqa: RUF009 (a Path is immutable; _f returns a plain field)
        _DEFAULT_DATA_DIR, "Directory for the worker's local files (Faust datadir).")
    log_level: str = _f("info", "Log level: debug, info, warning, error or critical.",
                        choices=LOG_LEVELS)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        _check_security(self)

    def __repr__(self) -> str:
        """Every field, with secrets shown as ``'***'`` when set and URL credentials masked
        (what a log line of the effective configuration may show)."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                value = MASK if value else ""
            elif f.name == "redis_url":
                value = mask_url(value)
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__

    # --- derived names -------------------------------------------------------------------------
    @property
    def group_id(self) -> str:
        """Kafka consumer group id (= Faust app id): topic prefix + app id."""
        return self.topic_prefix + self.app_id

    @property
    def agent_names(self) -> tuple[str, ...]:
        """The agents to run, from ``agents``."""
        return tuple(a.strip() for a in self.agents.split(",") if a.strip())

    def topic(self, role: TopicRole) -> str:
        """The full (prefixed) name of the topic with that role."""
        names: dict[str, str] = {
            "raw": self.raw_topic, "bundles": self.bundles_topic,
            "deadletters": self.deadletters_topic, "changes": self.changes_topic,
            "definitions": self.definitions_topic,
        }
        return self.topic_prefix + names[role]

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``SEGSTREAM_*`` variables (``os.environ`` when *environ* is None).

        Unknown ``SEGSTREAM_*`` names are logged as a warning (a likely typo), not an error: the
        deploy scripts use the same prefix for their own variables.
        """
        if environ is None:
            environ = os.environ
        known = {env_name(f.name): f for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            logging.getLogger(__name__).warning(
                "ignoring unknown setting(s) %s (not a field of stream.settings.Settings)",
                ", ".join(unknown))
        values = {f.name: _parse(name, f, environ[name])
                  for name, f in known.items() if name in environ}
        return cls(**values)


MASK = "***"


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


#: Fields whose values are secrets: shown as ``***`` (when set) by ``repr()``/``str()``.
SECRET_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings) if not f.repr)


def env_name(field_name: str) -> str:
    """The environment variable of a settings field."""
    return ENV_PREFIX + field_name.upper()


def _type_name(f: dataclasses.Field[Any]) -> str:
    return str(f.type).replace("Path", "path")


def _parse(name: str, f: dataclasses.Field[Any], raw: str) -> Any:
    kind = _type_name(f)
    text = raw.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
        if kind == "path":
            if not text:
                raise ValueError("empty path")
            return Path(text)
    except ValueError:
        shown = "***" if f.name in SECRET_FIELDS else repr(raw)
        raise SettingsError(f"{name}={shown}: expected {kind}") from None
    return text.lower() if f.metadata.get("choices") else text


def _check(f: dataclasses.Field[Any], value: Any) -> None:
    name = env_name(f.name)
    minimum = f.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value!r}: must be >= {minimum:g}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise SettingsError(f"{name}={value!r}: must be one of {', '.join(choices)}")
    if f.name in ("kafka_bootstrap", "redis_url", "app_id") and not value:
        raise SettingsError(f"{name} must not be empty")
    if f.name == "agents":
        names = {a.strip() for a in value.split(",")} - {""}
        if not names or names - set(AGENT_NAMES):
            raise SettingsError(
                f"{name}={value!r}: a comma-separated subset of {', '.join(AGENT_NAMES)}")
    if f.name.endswith("_topic") and not value:
        raise SettingsError(f"{name} must not be empty")


_KAFKA_SASL = ("sasl_plaintext", "sasl_ssl")
_KAFKA_TLS = ("ssl", "sasl_ssl")


def _check_security(s: Settings) -> None:
    """Connection settings that contradict each other (never shows a secret's value)."""
    proto = s.kafka_security_protocol
    var = env_name("kafka_security_protocol")
    if proto in _KAFKA_SASL:
        if not s.kafka_sasl_username:
            raise SettingsError(f"{var}={proto} needs SEGSTREAM_KAFKA_SASL_USERNAME")
        if not (s.kafka_sasl_password or s.kafka_sasl_password_file):
            raise SettingsError(f"{var}={proto} needs SEGSTREAM_KAFKA_SASL_PASSWORD or "
                                "SEGSTREAM_KAFKA_SASL_PASSWORD_FILE")
    elif s.kafka_sasl_username or s.kafka_sasl_password or s.kafka_sasl_password_file:
        raise SettingsError(f"SEGSTREAM_KAFKA_SASL_* are set but {var}={proto}: use "
                            "sasl_ssl (or sasl_plaintext)")
    if s.kafka_sasl_password and s.kafka_sasl_password_file:
        raise SettingsError("SEGSTREAM_KAFKA_SASL_PASSWORD and SEGSTREAM_KAFKA_SASL_PASSWORD_FILE "
                            "are both set: keep one")
    tls_files = (s.kafka_ssl_cafile, s.kafka_ssl_certfile, s.kafka_ssl_keyfile)
    if proto not in _KAFKA_TLS and any(tls_files):
        raise SettingsError(f"SEGSTREAM_KAFKA_SSL_* files are set but {var}={proto}: use ssl "
                            "or sasl_ssl")
    if s.kafka_ssl_keyfile and not s.kafka_ssl_certfile:
        raise SettingsError("SEGSTREAM_KAFKA_SSL_KEYFILE needs SEGSTREAM_KAFKA_SSL_CERTFILE")
    url = s.redis_url
    if s.redis_password and s.redis_password_file:
        raise SettingsError("SEGSTREAM_REDIS_PASSWORD and SEGSTREAM_REDIS_PASSWORD_FILE are both "
                            "set: keep one")
    if (s.redis_password or s.redis_password_file) and url_has_password(url):
        raise SettingsError("SEGSTREAM_REDIS_URL carries a password and "
                            "SEGSTREAM_REDIS_PASSWORD(_FILE) is set too: keep one")
    tls = url.startswith(("rediss://", "rediss+cluster://"))
    if not tls and (s.redis_ssl_cafile or s.redis_ssl_certfile or s.redis_ssl_keyfile):
        raise SettingsError(f"SEGSTREAM_REDIS_SSL_* files are set but SEGSTREAM_REDIS_URL="
                            f"{mask_url(url)} is not a TLS URL (rediss:// or rediss+cluster://)")
    if s.redis_ssl_keyfile and not s.redis_ssl_certfile:
        raise SettingsError("SEGSTREAM_REDIS_SSL_KEYFILE needs SEGSTREAM_REDIS_SSL_CERTFILE")


def settings_markdown() -> str:
    """docs/configuration.md, generated from the field documentation."""
    lines = [
        "# Configuration",
        "",
        "<!-- GENERATED by `python -m stream.settings > docs/configuration.md`; do not edit. -->",
        "",
        "Every segstream process reads its configuration from environment variables with the",
        "prefix `SEGSTREAM_` (class `stream.settings.Settings`, the only reader of the",
        "environment). A bad value stops the process with a message naming the variable; an",
        "unknown `SEGSTREAM_*` variable is logged as a warning. Topic names and the consumer",
        "group id get `SEGSTREAM_TOPIC_PREFIX` prepended.",
        "",
        "| variable | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for f in dataclasses.fields(Settings):
        default = str(f.default).lower() if isinstance(f.default, bool) else f.default
        shown = f"`{default}`" if default != "" else '`""` (none)'
        lines.append(
            f"| `{env_name(f.name)}` | {_type_name(f)} | {shown} | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
