"""The collector's pure pieces: write keys, token bucket, results, record packing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from schemas.errors import ErrorCode
from schemas.validation import Rejected, parse_record
from stream.collector.service import (
    CollectorError,
    RateLimiter,
    TokenBucket,
    WriteKeys,
    build_result,
    pack_records,
    request_key,
    stamp_source,
)
from stream.settings import Settings, SettingsError, env_name

WEB = "web-key-0123456789abcdef"
APP = "app-key-0123456789abcdef"
OLD = "old-key-0123456789abcdef"


def keys(**kw: str) -> WriteKeys:
    """Settings from these environment values (by key): lists are parsed as in production."""
    return WriteKeys.from_settings(Settings.from_env({env_name(k): v for k, v in kw.items()}))


def outcome(k: WriteKeys, key: str) -> tuple[int, str] | str:
    try:
        return k.check(key)[1]
    except CollectorError as err:
        assert WEB not in err.message and OLD not in err.message  # never echoed
        return err.status, err.code


def test_write_keys_map_to_sources_and_revocation_wins() -> None:
    k = keys(collector_write_keys=f"web={WEB}, backend = {APP},old={OLD}",
             collector_revoked_keys=hashlib.sha256(OLD.encode()).hexdigest().upper())
    assert outcome(k, WEB) == "web"
    assert outcome(k, APP) == "backend"
    assert outcome(k, OLD) == (403, "key_revoked")
    assert outcome(k, "") == (401, "missing_key")
    assert outcome(k, WEB + "x") == (401, "invalid_key")
    assert outcome(keys(), WEB) == (503, "auth_not_configured")
    assert outcome(keys(collector_auth="none"), "") == "unknown"


def test_write_keys_file(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# shop\nweb={WEB}\n\n  # apps\napp={APP}\n")
    k = keys(collector_write_keys_file=str(f))
    assert [s for _, s in k.keys] == ["web", "app"]
    with pytest.raises(SettingsError, match="COLLECTOR_WRITE_KEYS_FILE"):
        keys(collector_write_keys_file=str(tmp_path / "missing"))


@pytest.mark.parametrize("spec", [WEB, "web=tiny123", f"={WEB}", f"{'s' * 129}={WEB}"])
def test_bad_write_keys_are_refused_without_echo(spec: str) -> None:
    with pytest.raises(SettingsError) as info:
        keys(collector_write_keys=spec)
    assert WEB not in str(info.value) and "tiny123" not in str(info.value)


def test_request_key_sources_in_order() -> None:
    assert request_key({"Authorization": f"Bearer {WEB}", "X-Write-Key": APP}, {}) == WEB
    assert request_key({"X-Write-Key": f" {APP} "}, {"write_key": WEB}) == APP
    assert request_key({"Authorization": f"Basic {WEB}"}, {"write_key": WEB}) == WEB
    assert request_key({}, {}) == ""


def test_token_bucket_refills_at_rate_up_to_capacity() -> None:
    b = TokenBucket(rate=10.0, capacity=100, tokens=100.0, updated=0.0)
    assert b.take(100, 0.0) == 0.0
    assert b.take(1, 0.0) == pytest.approx(0.1)
    assert b.take(20, 1.0) == pytest.approx(1.0)  # 10 there, 10 missing: 1 s
    assert b.take(20, 2.0) == 0.0  # the refused take consumed nothing
    assert b.take(1, 1_000.0) == 0.0 and b.tokens == pytest.approx(99.0)  # capped at capacity
    assert b.take(500, 1_000.0) == pytest.approx(0.1)  # clamped to capacity: 1 token missing
    assert b.take(500, 1_000.1) == 0.0 and b.tokens == pytest.approx(0.0)


def test_rate_limiter_buckets_per_key_and_disabled() -> None:
    now = [0.0]
    lim = RateLimiter(rate=1.0, capacity=5, clock=lambda: now[0])
    assert lim.take(b"a", 5) == 0.0
    assert lim.take(b"a", 2) == pytest.approx(2.0)
    assert lim.take(b"b", 5) == 0.0  # its own bucket
    now[0] = 2.0
    assert lim.take(b"a", 2) == 0.0
    assert lim.take(b"a", 0) == 0.0  # an empty batch costs nothing
    off = RateLimiter(rate=0.0, capacity=1)
    assert all(off.take(b"a", 1_000) == 0.0 for _ in range(10))


def test_build_result_statuses() -> None:
    bad = Rejected(2, ErrorCode.BAD_TIMESTAMP, "bad `timestamp`", b"{}")
    assert build_result(3, []) == (200, {"accepted": 3, "rejected": []})
    assert build_result(0, []) == (200, {"accepted": 0, "rejected": []})
    status, body = build_result(2, [bad])
    assert status == 207
    assert body["rejected"] == [{"index": 2, "code": "bad_timestamp",
                                 "message": "bad `timestamp`"}]
    assert build_result(0, [bad])[0] == 400


def test_stamp_source_fills_only_missing() -> None:
    events = [{"source": "unknown"}, {"source": "app"}]
    stamp_source(events, "web")
    assert [e["source"] for e in events] == ["web", "app"]
    stamp_source(events := [{"source": "unknown"}], "unknown")
    assert events == [{"source": "unknown"}]


def test_pack_records_keeps_order_and_fits_and_ingest_accepts() -> None:
    body = orjson.dumps([{"event_id": f"e{i}", "type": "page_view", "anonymous_id": f"a{i}",
                          "timestamp": 1_795_000_000_000 + i,
                          "properties": {"url": "/" + "x" * 200}} for i in range(50)])
    good, bad = parse_record(body, now_ms=1_795_000_000_000)
    assert not bad
    whole = pack_records(good, 1 << 20)
    assert len(whole) == 1 and orjson.loads(whole[0]) == good
    parts = pack_records(good, 2_000)
    assert len(parts) > 5 and all(len(p) <= 2_000 for p in parts)
    again = [e for p in parts for e in parse_record(p, now_ms=1_795_000_000_000)[0]]
    assert again == good  # canonical events re-validate to themselves, in order
