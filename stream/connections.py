"""How segstream connects to Kafka and Redis: TLS and SASL / AUTH from the settings, in ONE place.

Every Kafka client segstream makes (Faust's, aiokafka's and kafka-python's) takes its security
options from :func:`kafka_security` (``.client_kwargs()``: the keyword arguments both aiokafka
and kafka-python accept; ``stream.worker.app`` turns the same object into Faust's
``broker_credentials``), and every Redis client comes from :func:`redis_for` (which calls
``state.redis_store.redis_client``). Password files are read here, when a client is built,
i.e. at start-up: a missing or unreadable file is a :class:`SettingsError` naming the
variable, never showing a secret.

>>> from stream.settings import Settings
>>> kafka_security(Settings()).client_kwargs()
{'security_protocol': 'PLAINTEXT'}
>>> sec = kafka_security(Settings.build(kafka_security_protocol="sasl_plaintext",
...                               kafka_sasl_username="app", kafka_sasl_password="pw"))
>>> sorted(sec.client_kwargs().items())  # doctest: +NORMALIZE_WHITESPACE
[('sasl_mechanism', 'PLAIN'), ('sasl_plain_password', 'pw'), ('sasl_plain_username', 'app'),
 ('security_protocol', 'SASL_PLAINTEXT')]
>>> sec
KafkaSecurity(protocol='SASL_PLAINTEXT', mechanism='PLAIN', username='app', password='***')
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from state.redis_store import redis_client
from stream.settings import MASK, Settings, SettingsError, env_name, mask_url, url_has_password


def read_secret_file(path: str, field_name: str) -> str:
    """The content of a one-secret file (surrounding whitespace stripped); a
    :class:`SettingsError` naming the variable (never the content) when unusable."""
    variable = env_name(field_name)
    try:
        value = Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"{variable}={path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{variable}={path}: not UTF-8 text") from None
    if not value:
        raise SettingsError(f"{variable}={path}: the file is empty")
    return value


def _existing(path: str, field_name: str) -> str:
    if not Path(path).is_file():
        raise SettingsError(f"{env_name(field_name)}={path}: no such file")
    return path


def tls_context(cafile: str, certfile: str, keyfile: str, check_hostname: bool,
                prefix: str) -> ssl.SSLContext:
    """A client TLS context: the system CAs or ``cafile``, an optional client certificate.
    ``prefix`` is the settings' field prefix (``kafka_ssl_``/``redis_ssl_``) for errors."""
    try:
        ctx = ssl.create_default_context(
            cafile=_existing(cafile, prefix + "cafile") if cafile else None)
    except ssl.SSLError as exc:
        raise SettingsError(f"{env_name(prefix + 'cafile')}={cafile}: not a PEM CA bundle "
                            f"({exc.reason})") from None
    if certfile:
        try:
            ctx.load_cert_chain(_existing(certfile, prefix + "certfile"),
                                _existing(keyfile, prefix + "keyfile") if keyfile else None)
        except ssl.SSLError as exc:
            raise SettingsError(f"{env_name(prefix + 'certfile')}={certfile}: cannot load the "
                                f"certificate and key ({exc.reason})") from None
    ctx.check_hostname = check_hostname
    return ctx


@dataclass(frozen=True)
class KafkaSecurity:
    """The resolved Kafka security options (password read, TLS context built)."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    mechanism: str = ""  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (SASL only)
    username: str = ""
    password: str = field(default="", repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's and kafka-python's clients (producer, consumer,
        admin): both take these same names."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            kwargs["ssl_context"] = self.ssl_context
        if self.sasl:
            kwargs.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                          sasl_plain_password=self.password)
        return kwargs

    def __repr__(self) -> str:
        shown = f", mechanism={self.mechanism!r}, username={self.username!r}, " \
                f"password={MASK!r}" if self.sasl else ""
        return f"KafkaSecurity(protocol={self.protocol!r}{shown})"


#: Loggers of the Kafka clients that log every request at debug level, SASL ones included.
KAFKA_REQUEST_LOGGERS = ("aiokafka.conn", "kafka.net.connection", "kafka.protocol.parser")


class SaslRequestScrubber(logging.Filter):
    """Keeps SASL credentials out of the Kafka clients' debug logs.

    aiokafka (``Request to host:port N: SaslAuthenticateRequest(auth_bytes=b'\\x00user\\x00
    password')``) and kafka-python log each request they send at debug level, and a PLAIN
    authentication request carries the password in clear. Such an argument is replaced by
    its type name (the record is kept).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
                type(a).__name__.startswith("SaslAuthenticate") for a in record.args):
            record.args = tuple(
                f"{type(a).__name__}(auth bytes not logged)"
                if type(a).__name__.startswith("SaslAuthenticate") else a for a in record.args)
        return True


def scrub_kafka_client_logs() -> None:
    """Install :class:`SaslRequestScrubber` on the Kafka clients' request loggers
    (idempotent; done whenever Kafka security options are resolved)."""
    for name in KAFKA_REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SaslRequestScrubber) for f in logger.filters):
            logger.addFilter(SaslRequestScrubber())


def kafka_security(settings: Settings) -> KafkaSecurity:
    """The Kafka security options of ``settings`` (reads the password file, builds the TLS
    context); :class:`SettingsError` when a file is missing or unusable."""
    scrub_kafka_client_logs()
    protocol = settings.kafka.security_protocol.upper()
    ctx = None
    if protocol in ("SSL", "SASL_SSL"):
        ctx = tls_context(settings.kafka.ssl_cafile, settings.kafka.ssl_certfile,
                          settings.kafka.ssl_keyfile, settings.kafka.ssl_check_hostname,
                          "kafka_ssl_")
    if not protocol.startswith("SASL_"):
        return KafkaSecurity(protocol, ssl_context=ctx)
    password = settings.kafka.sasl_password or read_secret_file(
        settings.kafka.sasl_password_file, "kafka_sasl_password_file")
    return KafkaSecurity(protocol, settings.kafka.sasl_mechanism.upper(),
                         settings.kafka.sasl_username, password, ctx)


def kafka_kwargs(settings: Settings) -> dict[str, Any]:
    """``bootstrap_servers`` and the security options: what every aiokafka / kafka-python
    client of segstream is built with (add the client's own options)."""
    return {"bootstrap_servers": list(settings.kafka.bootstrap),
            **kafka_security(settings).client_kwargs()}


def redis_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of :func:`state.redis_store.redis_client` for ``settings``: user,
    password (from the setting or its file) and, for TLS URLs, the certificate options."""
    options: dict[str, Any] = {}
    if settings.redis.username:
        options["username"] = settings.redis.username
    if settings.redis.password:
        options["password"] = settings.redis.password
    elif settings.redis.password_file:
        options["password"] = read_secret_file(settings.redis.password_file,
                                               "redis_password_file")
    if settings.redis.url.startswith(("rediss://", "rediss+cluster://")):
        for name in ("cafile", "certfile", "keyfile"):
            value = getattr(settings.redis, f"ssl_{name}")
            if value:
                key = "ssl_ca_certs" if name == "cafile" else f"ssl_{name}"
                options[key] = _existing(value, f"redis_ssl_{name}")
        options["ssl_check_hostname"] = settings.redis.ssl_check_hostname
    return options


def redis_for(settings: Settings) -> Redis | RedisCluster:
    """The Redis (or Redis Cluster) client of ``settings``: URL, AUTH and TLS options."""
    return redis_client(settings.redis.url, **redis_options(settings))


REDIS_AUTH_CHECK_TIMEOUT_S = 10.0


async def redis_auth_problem(settings: Settings) -> str | None:
    """Why Redis refuses this process's credentials (a clear message without any secret), or
    None: accepted, or Redis not reachable now (retried by the agents, not a configuration
    error). The worker checks this once at start-up and stops on a refusal."""
    client = redis_for(settings)
    where = mask_url(settings.redis.url)
    try:
        async with asyncio.timeout(REDIS_AUTH_CHECK_TIMEOUT_S):
            await client.ping()
    except (AuthenticationError, ResponseError) as exc:
        text = str(exc)
        if isinstance(exc, ResponseError) and not text.startswith(("NOAUTH", "WRONGPASS")):
            return None
        given = "a password" if (settings.redis.password or settings.redis.password_file
                                 or url_has_password(settings.redis.url)) else "no password"
        return (f"Redis at {where} refused the credentials ({type(exc).__name__}: "
                f"{text.split(chr(10), maxsplit=1)[0][:200]}); this process gave {given}"
                f"{' as user ' + repr(settings.redis.username) if settings.redis.username else ''}"
                ": check SEGSTREAM_REDIS_PASSWORD / SEGSTREAM_REDIS_PASSWORD_FILE / "
                "SEGSTREAM_REDIS_USERNAME")
    except (RedisError, OSError, TimeoutError):
        return None
    finally:
        await client.aclose()
    return None
