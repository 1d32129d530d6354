"""The delivery signature, and the verification snippet of docs/destinations.md run for real
against what the sender signs (and against tampering, old timestamps, a wrong secret)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream.deliver import signing

DOCS = Path(__file__).resolve().parents[2] / "docs" / "destinations.md"
BODY = b'{"destination":"crm","batch_id":"b1","changes":[{"customer_id":"c-1","version":1}]}'


@pytest.fixture(scope="module")
def verify_segstream() -> Callable[[bytes, Any, bytes], bool]:
    text = DOCS.read_text()
    assert text.count("```python verify\n") == 1
    code = text.split("```python verify\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    return namespace["verify_segstream"]  # type: ignore[no-any-return]


def test_the_documented_snippet_accepts_what_segstream_signs(verify_segstream: Any) -> None:
    headers = signing.headers(b"k3y", int(time.time()), BODY)
    assert verify_segstream(b"k3y", headers, BODY)


@pytest.mark.parametrize("what", ["body", "secret", "signature", "old", "future", "garbage"])
def test_the_documented_snippet_rejects(verify_segstream: Any, what: str) -> None:
    now = int(time.time())
    ts = now - 301 if what == "old" else now + 301 if what == "future" else now
    headers = signing.headers(b"k3y", ts, BODY)
    body, secret = BODY, b"k3y"
    if what == "body":
        body = BODY.replace(b'"version":1', b'"version":2')
    elif what == "secret":
        secret = b"other"
    elif what == "signature":
        # a different last hex digit than the real one: always a tampered signature
        sig = headers[signing.SIGNATURE_HEADER]
        headers[signing.SIGNATURE_HEADER] = sig[:-1] + ("1" if sig[-1] == "0" else "0")
    elif what == "garbage":
        headers[signing.TIMESTAMP_HEADER] = "soon"
    assert not verify_segstream(secret, headers, body)


def test_within_five_minutes_is_accepted(verify_segstream: Any) -> None:
    headers = signing.headers(b"k3y", int(time.time()) - 290, BODY)
    assert verify_segstream(b"k3y", headers, BODY)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    want = hmac.new(b"k", b"1795424400." + BODY, hashlib.sha256).hexdigest()
    assert signing.signature(b"k", 1795424400, BODY) == f"v1={want}"
    assert signing.verify(b"k", "1795424400", f"v1={want}", BODY, now=1795424400)
    assert not signing.verify(b"k", "1795424400", f"v1={want}", BODY, now=1795424400 + 301)
