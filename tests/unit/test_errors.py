"""One error root with a retriable flag (schemas.errors, stream.errors), and every dead-letter
code both in ``schemas.errors.ErrorCode`` and in docs/events.md's table."""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

import processors.lang.errors
import schemas.bundle
import schemas.changes
import schemas.errors
import state.codec
import stream.cli.cmd_replay
import stream.collector.service
import stream.definitions
import stream.settings
import stream.tools.simulate
import stream.worker.api
from schemas.errors import ErrorCode, RetriableError, SegstreamError
from stream.errors import is_retriable
from stream.worker.agents.segmentation.running import retrying

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"
MODULES = (processors.lang.errors, schemas.bundle, schemas.changes, schemas.errors, state.codec,
           stream.cli.cmd_replay, stream.collector.service, stream.definitions, stream.settings,
           stream.tools.simulate, stream.worker.api)


def test_every_project_exception_has_the_one_root_and_keeps_its_builtin() -> None:
    own = [c for m in MODULES for _, c in inspect.getmembers(m, inspect.isclass)
           if issubclass(c, BaseException) and c.__module__ == m.__name__]
    assert len(own) >= 12, own
    assert all(issubclass(c, SegstreamError) for c in own), own
    for value_error in (stream.settings.SettingsError, stream.definitions.DefinitionsDocError,
                        state.codec.CodecError, schemas.changes.ChangeError,
                        schemas.bundle.BundleError, processors.lang.errors.DefinitionError):
        assert issubclass(value_error, ValueError), value_error  # `except ValueError` still works


def test_retriable_is_a_class_flag_false_on_the_root() -> None:
    assert SegstreamError.retriable is False
    assert RetriableError.retriable is True
    assert not is_retriable(schemas.bundle.BundleError("bad"))
    assert is_retriable(RetriableError("later"))
    assert is_retriable(RedisConnectionError("lost")) and is_retriable(OSError())
    assert not is_retriable(KeyError("bug"))


def _run(failures: list[BaseException]) -> tuple[str, int]:
    errors = [0]

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    async def main() -> str:
        return await retrying("test", call, lambda: errors.__setitem__(0, errors[0] + 1))

    return asyncio.run(main()), errors[0]


def test_retrying_waits_out_what_is_retriable_and_nothing_else() -> None:
    assert _run([RedisConnectionError("lost"), RetriableError("transient")]) == ("done", 2)
    with pytest.raises(schemas.bundle.BundleError):
        _run([schemas.bundle.BundleError("not retriable")])
    with pytest.raises(KeyError):
        _run([KeyError("a bug")])


def _documented_codes() -> set[str]:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("\n## Error codes\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


def test_docs_events_md_lists_exactly_the_error_codes() -> None:
    documented = _documented_codes()
    enum = {c.value for c in ErrorCode}
    assert documented - enum == set(), "documented but not in ErrorCode"
    assert enum - documented == set(), "in ErrorCode but not in docs/events.md"
    assert "bad_bundle" in enum
