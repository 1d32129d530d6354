"""SEGSTREAM_LOG_FORMAT (stream/logs.py): JSON lines with the record's context, through the real
logging configuration the processes install, with the secret scrubbers still in force."""

from __future__ import annotations

import doctest
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp.http_exceptions import BadStatusLine
from aiokafka.protocol.admin import SaslAuthenticateRequest_v0

import stream.logs
from stream.auth import scrub_http_parser_errors
from stream.connections import KAFKA_REQUEST_LOGGERS, scrub_kafka_client_logs
from stream.logs import configure_logging, event_context, logging_config
from stream.settings import Settings, SettingsError

SECRET = "web-key-0123456789abcdef-SECRET"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


def test_the_setting_accepts_text_and_json_only() -> None:
    assert Settings.from_env({}).process.log_format == "text"
    assert Settings.from_env({"SEGSTREAM_LOG_FORMAT": "json"}).process.log_format == "json"
    with pytest.raises(SettingsError, match="SEGSTREAM_LOG_FORMAT"):
        Settings.from_env({"SEGSTREAM_LOG_FORMAT": "xml"})


def test_json_lines_carry_level_logger_message_context_and_the_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings.build(log_format="json", log_level="debug"))
    log = logging.getLogger("segstream.test")
    log.info("plain %s", "message")
    event = {"event_id": "e-1", "customer_id": "c-9", "type": "purchase"}
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed on event %s", "e-1", extra=event_context(event, partition=4))
    first, second = lines(capsys.readouterr().err)
    assert first.keys() == {"ts", "level", "logger", "message"}
    assert (first["level"], first["logger"], first["message"]) == (
        "info", "segstream.test", "plain message")
    assert first["ts"].endswith("Z") and len(first["ts"]) == 24
    assert {k: second[k] for k in ("level", "event_id", "customer_id", "partition")} == {
        "level": "error", "event_id": "e-1", "customer_id": "c-9", "partition": 4}
    assert second["exc"].startswith("Traceback") and "ValueError: boom" in second["exc"]


def test_text_stays_the_default_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings.build())
    logging.getLogger("segstream.test").warning("hello")
    err = capsys.readouterr().err
    assert err.endswith(" WARNING segstream.test: hello\n") and not err.startswith("{")
    assert logging_config(Settings.build())["root"]["level"] == "INFO"


def test_secrets_are_scrubbed_in_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """The two scrubbers (aiohttp's parser errors carry request bytes, a write key; the Kafka
    clients' debug logs carry the SASL request) hold in JSON mode."""
    scrub_http_parser_errors()
    scrub_kafka_client_logs()
    configure_logging(Settings.build(log_format="json", log_level="debug"))
    try:
        raise BadStatusLine(f"GET /v1/events?write_key={SECRET} HTTP/1.1")
    except BadStatusLine:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s",
                                                      "10.0.0.7")
    sasl = SaslAuthenticateRequest_v0(sasl_auth_bytes=f"\0user\0{SECRET}".encode())
    logging.getLogger(KAFKA_REQUEST_LOGGERS[0]).debug("Sending request %s", sasl)
    err = capsys.readouterr().err
    http, kafka = lines(err)
    assert SECRET not in err
    assert http["message"].startswith("bad HTTP request from 10.0.0.7: BadStatusLine")
    assert "exc" not in http
    assert kafka["message"] == "Sending request SaslAuthenticateRequest_v0(auth bytes not logged)"


def test_docstring_examples() -> None:
    result = doctest.testmod(stream.logs)
    assert result.attempted >= 2 and result.failed == 0
