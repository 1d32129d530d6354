"""Connection security (stream.connections, stream.settings, state.redis_store.redis_client):
TLS / SASL options for every Kafka client, AUTH / TLS for Redis, consistent settings, and
secrets that never appear in a repr, a log line or an error message."""

from __future__ import annotations

import logging
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from redis.asyncio import Redis, RedisCluster

from state.redis_store import redis_client
from stream.connections import kafka_kwargs, kafka_security, redis_for, redis_options
from stream.settings import Settings, SettingsError, mask_url
from stream.worker.app import faust_options

STREAM = Path(__file__).resolve().parents[2] / "stream"
SASL_PW = "kafka-sasl-pw-Zq81x"
REDIS_PW = "redis-pw-Yx72k"
TOKEN = "api-token-Qw93jz0123456789"
WRITE_KEY = "write-key-Lm40ae0123456789"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM), made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    return crt, key


@pytest.mark.parametrize(("env", "message"), [
    ({"SEGSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
     "SEGSTREAM_KAFKA_SECURITY_PROTOCOL=sasl_ssl needs SEGSTREAM_KAFKA_SASL_USERNAME"),
    ({"SEGSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "SEGSTREAM_KAFKA_SASL_USERNAME": "u"},
     "needs SEGSTREAM_KAFKA_SASL_PASSWORD or SEGSTREAM_KAFKA_SASL_PASSWORD_FILE"),
    ({"SEGSTREAM_KAFKA_SASL_USERNAME": "u", "SEGSTREAM_KAFKA_SASL_PASSWORD": SASL_PW},
     "SEGSTREAM_KAFKA_SASL_\\* are set but SEGSTREAM_KAFKA_SECURITY_PROTOCOL=plaintext"),
    ({"SEGSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "SEGSTREAM_KAFKA_SASL_USERNAME": "u",
      "SEGSTREAM_KAFKA_SASL_PASSWORD": SASL_PW, "SEGSTREAM_KAFKA_SASL_PASSWORD_FILE": "/f"},
     "are both set"),
    ({"SEGSTREAM_KAFKA_SSL_CAFILE": "/ca.pem"}, "SEGSTREAM_KAFKA_SSL_\\* files are set but"),
    ({"SEGSTREAM_KAFKA_SECURITY_PROTOCOL": "ssl", "SEGSTREAM_KAFKA_SSL_KEYFILE": "/k.pem"},
     "SEGSTREAM_KAFKA_SSL_KEYFILE needs SEGSTREAM_KAFKA_SSL_CERTFILE"),
    ({"SEGSTREAM_KAFKA_SASL_MECHANISM": "gssapi"}, "must be one of plain, scram-sha-256"),
    ({"SEGSTREAM_KAFKA_SECURITY_PROTOCOL": "tls"}, "must be one of plaintext, ssl"),
    ({"SEGSTREAM_REDIS_PASSWORD": REDIS_PW, "SEGSTREAM_REDIS_PASSWORD_FILE": "/f"},
     "are both set"),
    ({"SEGSTREAM_REDIS_URL": f"redis://:{REDIS_PW}@h:1/0", "SEGSTREAM_REDIS_PASSWORD": "other"},
     "carries a password and SEGSTREAM_REDIS_PASSWORD"),
    ({"SEGSTREAM_REDIS_URL": f"redis://:{REDIS_PW}@h:1/0", "SEGSTREAM_REDIS_SSL_CAFILE": "/ca"},
     "SEGSTREAM_REDIS_URL=redis://:\\*\\*\\*@h:1/0 is not a TLS URL"),
    ({"SEGSTREAM_KAFKA_SSL_CHECK_HOSTNAME": "perhaps"}, "expected bool"),
])
def test_inconsistent_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        Settings.from_env(env)
    assert SASL_PW not in str(info.value) and REDIS_PW not in str(info.value)


def test_repr_and_str_mask_every_secret_and_url_credentials() -> None:
    s = Settings.build(kafka_security_protocol="sasl_ssl", kafka_sasl_username="app",
                       kafka_sasl_password=SASL_PW, redis_url=f"rediss://app:{REDIS_PW}@r:6380/0",
                       api_tokens=(TOKEN,), collector_write_keys=(f"web={WRITE_KEY}",))
    for text in (repr(s), str(s), f"{s}", f"{s!r}"):
        for secret in (SASL_PW, REDIS_PW, TOKEN, WRITE_KEY):
            assert secret not in text
        assert "kafka_sasl_password='***'" in text and "api_tokens='***'" in text
        assert "redis_url='rediss://app:***@r:6380/0'" in text
    assert "redis_password=''" in repr(Settings())  # unset secrets show as empty
    sec = kafka_security(s)
    assert SASL_PW not in repr(sec) and SASL_PW not in repr(faust_options(s))


def test_mask_url_keeps_everything_but_the_password() -> None:
    assert mask_url("redis://:p@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("rediss+cluster://u:p%40x@h:1") == "rediss+cluster://u:***@h:1"
    assert mask_url("redis://h:1/0?db=2") == "redis://h:1/0?db=2"
    assert mask_url("not a url") == "not a url"


def test_kafka_kwargs_plaintext_sasl_and_files(tmp_path: Path) -> None:
    assert kafka_kwargs(Settings.build(kafka_bootstrap=("k:9092",))) == {
        "bootstrap_servers": ["k:9092"], "security_protocol": "PLAINTEXT"}
    pw = tmp_path / "pw"
    pw.write_text(f"  {SASL_PW}\n")
    s = Settings.build(kafka_security_protocol="sasl_plaintext",
                       kafka_sasl_mechanism="scram-sha-512",
                 kafka_sasl_username="app", kafka_sasl_password_file=str(pw))
    assert kafka_kwargs(s) == {
        "bootstrap_servers": ["127.0.0.1:9092"], "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "app",
        "sasl_plain_password": SASL_PW}
    creds = faust_options(s)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value, creds.username, creds.password) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-512", "app", SASL_PW)
    assert faust_options(Settings())["broker_credentials"] is None


def test_unusable_files_name_the_variable_never_the_content(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    s = Settings.build(kafka_security_protocol="sasl_ssl", kafka_sasl_username="app",
                       kafka_sasl_password_file=missing)
    with pytest.raises(SettingsError, match=r"SEGSTREAM_KAFKA_SASL_PASSWORD_FILE=.*nope: No such"):
        kafka_kwargs(s)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="the file is empty"):
        redis_options(Settings.build(redis_password_file=str(empty)))
    with pytest.raises(SettingsError, match=r"SEGSTREAM_KAFKA_SSL_CAFILE=.*nope: no such file"):
        kafka_kwargs(Settings.build(kafka_security_protocol="ssl", kafka_ssl_cafile=missing))
    junk = tmp_path / "junk.pem"
    junk.write_text(f"password={SASL_PW}\n")
    with pytest.raises(SettingsError, match=r"SEGSTREAM_KAFKA_SSL_CAFILE=.*not a PEM") as info:
        kafka_kwargs(Settings.build(kafka_security_protocol="ssl", kafka_ssl_cafile=str(junk)))
    assert SASL_PW not in str(info.value)
    with pytest.raises(SettingsError, match=r"SEGSTREAM_REDIS_SSL_CAFILE=.*nope: no such file"):
        redis_options(Settings.build(redis_url="rediss://h:1/0", redis_ssl_cafile=missing))
    with pytest.raises(SettingsError, match="SEGSTREAM_KAFKA_SASL_PASSWORD_FILE"):
        faust_options(s)  # the worker's create_app fails the same way (exit 2 in cmd_worker)


def test_tls_context_from_ca_cert_and_key(cert: tuple[Path, Path]) -> None:
    crt, key = cert
    s = Settings.build(kafka_security_protocol="sasl_ssl", kafka_sasl_username="app",
                       kafka_sasl_password=SASL_PW, kafka_ssl_cafile=str(crt),
                       kafka_ssl_certfile=str(crt), kafka_ssl_keyfile=str(key),
                       kafka_ssl_check_hostname=False)
    kw = kafka_kwargs(s)
    ctx = kw["ssl_context"]
    assert kw["security_protocol"] == "SASL_SSL" and isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname is False
    assert any(c["subject"] == ((("commonName", "localhost"),),) for c in ctx.get_ca_certs())
    creds = faust_options(s)["broker_credentials"]
    assert creds.protocol.value == "SASL_SSL" and isinstance(creds.ssl_context, ssl.SSLContext)
    ssl_only = faust_options(Settings.build(kafka_security_protocol="ssl",
                                            kafka_ssl_cafile=str(crt)))
    assert isinstance(ssl_only["broker_credentials"], faust.SSLCredentials)
    assert ssl_only["broker_credentials"].context.check_hostname is True


def test_redis_client_auth_and_tls_options(tmp_path: Path, cert: tuple[Path, Path]) -> None:
    pw = tmp_path / "pw"
    pw.write_text(REDIS_PW + "\n")
    client = redis_for(Settings.build(redis_url="redis://h:1/2", redis_username="app",
                                      redis_password_file=str(pw)))
    assert isinstance(client, Redis)
    kw = client.connection_pool.connection_kwargs
    assert (kw["username"], kw["password"], kw["db"]) == ("app", REDIS_PW, 2)
    assert REDIS_PW not in repr(client)
    crt, key = cert
    s = Settings.build(redis_url="rediss+cluster://h:7000", redis_password=REDIS_PW,
                       redis_ssl_cafile=str(crt), redis_ssl_certfile=str(crt),
                       redis_ssl_keyfile=str(key), redis_ssl_check_hostname=False)
    cluster = redis_for(s)
    assert isinstance(cluster, RedisCluster)
    ck = cluster.connection_kwargs
    assert (ck["password"], ck["ssl_ca_certs"], ck["ssl_certfile"], ck["ssl_keyfile"],
            ck["ssl_check_hostname"]) == (REDIS_PW, str(crt), str(crt), str(key), False)
    # a password in the URL works too (redis-py parses it) and is what the URL says
    assert redis_client(f"redis://:{REDIS_PW}@h:1/0").connection_pool.connection_kwargs[
        "password"] == REDIS_PW
    with pytest.raises(ValueError, match="TLS options need a rediss://"):
        redis_client("redis://h:1/0", ssl_ca_certs=str(crt))


KAFKA_CLIENT = re.compile(r"\b(AIOKafkaProducer|AIOKafkaConsumer|AIOKafkaAdminClient|"
                          r"KafkaProducer|KafkaConsumer|KafkaAdminClient)\(([^)]*)\)", re.S)


def test_every_kafka_client_in_stream_takes_the_security_options() -> None:
    """Each client construction in stream/ passes ``kafka_kwargs(settings)`` or the security
    kwargs of ``kafka_security`` (Faust's own clients get ``broker_credentials``)."""
    found = 0
    for path in sorted(STREAM.rglob("*.py")):
        for m in KAFKA_CLIENT.finditer(path.read_text()):
            if m.group(2).strip() in ("", "self.transport, loop=self.loop, beacon=self.beacon"):
                continue  # a type mention / Faust's producer (uses broker_credentials)
            found += 1
            assert "**kafka_kwargs(" in m.group(2) or "**kafka" in m.group(2) \
                or "**self.security" in m.group(2), f"{path.name}: {m.group(0)}"
    assert found >= 7


class SaslAuthenticateRequest_v1:  # the name of aiokafka's request class
    def __repr__(self) -> str:
        return f"SaslAuthenticateRequest_v1(auth_bytes=b'\\x00app\\x00{SASL_PW}')"


def test_kafka_client_debug_logs_never_show_sasl_auth_bytes(
        caplog: pytest.LogCaptureFixture) -> None:
    kafka_security(Settings())  # resolving the options installs the scrubber
    with caplog.at_level(logging.DEBUG):
        for name in ("aiokafka.conn", "kafka.net.connection", "kafka.protocol.parser"):
            logging.getLogger(name).debug("Request to %s:%d %d: %s", "h", 1, 3,
                                          SaslAuthenticateRequest_v1())
    assert len(caplog.records) == 3
    for record in caplog.records:
        assert SASL_PW not in record.getMessage()
        assert record.getMessage().endswith("SaslAuthenticateRequest_v1(auth bytes not logged)")
