"""Fuzzing the validation layer (no servers): hostile records and events from tests/fuzz_inputs.py.

For any input, ``parse_record`` / ``validate_event`` raise nothing but :class:`InvalidEvent`
(``validate_event`` only), every rejection carries an :class:`ErrorCode`, a message and the
original bytes, the counts add up (each array element is either a valid event or a rejection),
and valid outputs re-validate identically. The seeded generator's 10k records get exactly the
outcomes it predicts, also through the ingest agent's record packer (``stream.worker.bundler``).

About 10.5k hypothesis examples by default (~20 s of CPU); more with e.g.
``SEGSTREAM_FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest -q tests/unit/test_fuzz_validation.py``
(the total, spread over the properties like the default).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections import Counter
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings

from schemas.deadletter import decode_dead_letter, encode_dead_letter
from schemas.errors import ErrorCode, InvalidEvent
from schemas.partitioner import partition_for
from schemas.validation import Limits, parse_record, partition_key, validate_event
from stream.worker.bundler import Bundler, PartitionCache, RecordPacker
from tests.fuzz_inputs import (
    ANY_CODE,
    Case,
    HostileGenerator,
    generated_cases,
    hostile_bytes,
    json_values,
    mutated_events,
)

NOW = 1_795_478_400_000  # 2026-11-24T00:00:00Z
LIMITS = Limits(max_event_bytes=16_384, max_record_bytes=100_000, max_events_per_record=200)
TOTAL = int(os.environ.get("SEGSTREAM_FUZZ_EXAMPLES", "10500"))
CANONICAL_FIELDS = ["event_id", "type", "customer_id", "anonymous_id", "timestamp", "source",
                    "schema_version", "properties"]


def fuzz_settings(share: float) -> Any:
    return settings(max_examples=max(1, int(TOTAL * share)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def check_record(value: bytes | None, limits: Limits = LIMITS) -> tuple[list[Any], list[Any]]:
    """parse_record's contract for any input; returns its result."""
    good, bad = parse_record(value, NOW, limits)  # must not raise, whatever the input
    for r in bad:
        assert isinstance(r.code, ErrorCode)
        assert isinstance(r.message, str) and r.message
        assert isinstance(r.raw, bytes)
    whole = [r for r in bad if r.index is None]
    if whole:
        assert len(bad) == 1 and not good, "a whole-record rejection stands alone"
        assert whole[0].raw == (value or b"")
        return good, bad
    decoded = orjson.loads(value or b"null")
    items = decoded if isinstance(decoded, list) else [decoded]
    assert len(good) + len(bad) == len(items), "every element is bundled or rejected"
    for r in bad:
        assert isinstance(decoded, list) and r.index is not None
        assert r.raw in (value or b"")
        # (Python cannot compare two values nested ~1000 deep: RecursionError)
        with contextlib.suppress(RecursionError):
            assert orjson.loads(r.raw) == items[r.index], "the element's original bytes"
    for ev in good:
        check_canonical(ev)
    return good, bad


def check_canonical(ev: dict[str, Any]) -> None:
    """A valid output re-validates identically, as an object and as a record."""
    assert list(ev) == CANONICAL_FIELDS
    assert type(ev["timestamp"]) is int
    assert validate_event(ev, NOW, LIMITS) == ev
    again = orjson.dumps(ev)
    if len(again) <= LIMITS.max_event_bytes:  # the canonical form spells out defaults
        assert parse_record(again, NOW, LIMITS) == ([ev], [])


@fuzz_settings(0.3)
@given(value=hostile_bytes())
def test_any_bytes_get_events_or_coded_rejections(value: bytes) -> None:
    check_record(value)


@fuzz_settings(0.1)
@given(value=json_values(max_leaves=12))
def test_any_json_value_as_a_record(value: Any) -> None:
    check_record(orjson.dumps(value))
    check_record(orjson.dumps([value, value]))


@fuzz_settings(0.15)
@given(obj=mutated_events())
def test_validate_event_raises_only_invalid_event(obj: Any) -> None:
    before = copy.deepcopy(obj)
    try:
        ev = validate_event(obj, NOW, LIMITS)
    except InvalidEvent as exc:
        assert isinstance(exc.code, ErrorCode) and exc.message
        code = exc.code
    else:
        check_canonical(ev)
        code = None
    assert obj == before, "the input is never modified"
    # the record path says the same (a list would be read as an array record: wrap it)
    record = orjson.dumps([obj] if isinstance(obj, list) else obj)
    if len(record) <= LIMITS.max_event_bytes:
        good, bad = check_record(record)
        assert [r.code for r in bad] == ([code] if code else [])
        assert good == ([] if code else [ev])


def assert_case(case: Case, limits: Limits = LIMITS) -> None:
    good, bad = check_record(case.value, limits)
    got = [(r.index, r.code.value) for r in bad]
    want = [(e.index, e.code) for e in case.rejected]
    assert len(got) == len(want), (case.cls, got, want)
    for (gi, gc), (wi, wc) in zip(got, want, strict=True):
        assert gi == wi and (wc == ANY_CODE or gc == wc), (case.cls, got, want)
    for r, e in zip(bad, case.rejected, strict=True):
        assert r.raw == (e.raw if e.raw is not None else (case.value or b""))
    assert good == [validate_event(ev, NOW, limits) for ev in case.valid], case.cls


@fuzz_settings(0.45)
@given(case=generated_cases(NOW, LIMITS))
def test_generated_cases_get_the_expected_outcome(case: Case) -> None:
    assert_case(case)


def test_seeded_generator_10k_records() -> None:
    gen = HostileGenerator(seed=2026, now_ms=NOW, limits=LIMITS)
    cases = list(gen.cases(10_000))
    classes = Counter(c.cls for c in cases)
    assert set(classes) == set(gen.classes), "every class of hostile input is generated"
    codes = Counter(e.code for c in cases for e in c.rejected)
    worker_only = {ErrorCode.TOO_LATE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL_ERROR,
                   ErrorCode.BAD_BUNDLE}
    # needs declared custom types (a types file): tests/unit/test_schemas_custom.py
    with_types_only = {ErrorCode.BAD_PROPERTY}
    assert set(ErrorCode) - worker_only - with_types_only <= {
        ErrorCode(c) for c in codes if c != ANY_CODE}, "every validation code is exercised"
    assert sum(codes.values()) + len(gen.odd_ids) >= 10_000
    for case in cases:
        assert_case(case)


def test_ingest_packer_accounts_for_every_record() -> None:
    """The ingest agent's per-record code (validation, packing, dead letters) on 5k hostile
    records: no internal_error, one dead letter per rejection with its code and original
    bytes, every valid event packed once on its partition."""
    gen = HostileGenerator(seed=7, now_ms=NOW, limits=LIMITS)
    cases = list(gen.cases(5_000))
    errors: list[Any] = []
    packer = RecordPacker(
        Bundler(4, 25, 100_000, PartitionCache(partition_for, 4)),
        parse=lambda raw: parse_record(raw, NOW, LIMITS), routing_id=partition_key,
        encode_dead_letter=encode_dead_letter, to_json=orjson.dumps, now_ms=lambda: NOW,
        log=lambda *args: errors.append(args))
    for offset, case in enumerate(cases):
        packer.add_record(case.value, "raw", 0, offset)
    result = packer.finish()
    assert not errors
    letters = [decode_dead_letter(d) for d in result.dead_letters]
    assert Counter((d.offset, d.index, d.code, d.raw) for d in letters) == Counter(
        (offset, e.index, e.code, e.raw if e.raw is not None else case.value or b"")
        for offset, case in enumerate(cases) for e in case.rejected if e.code != ANY_CODE
    ) + Counter((d.offset, d.index, d.code, d.raw) for d in letters
                if any(e.code == ANY_CODE for e in cases[d.offset].rejected))
    assert result.invalid_by_code == dict(Counter(d.code for d in letters))
    assert "internal_error" not in result.invalid_by_code
    packed = [(b.partition, ev) for b in result.bundles for ev in b.events]
    for partition, ev in packed:
        assert partition_for(partition_key(ev), 4) == partition
    assert Counter(ev["event_id"] for _, ev in packed) == Counter(
        ev["event_id"] for case in cases for ev in case.valid)
    assert sum(result.valid_by_type.values()) == len(packed)
