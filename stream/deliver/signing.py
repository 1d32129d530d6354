"""The signature of a delivery: HMAC-SHA256 over ``timestamp + "." + body``.

Headers of every POST (a retry is signed again with a fresh timestamp)::

    X-Segstream-Timestamp: 1795424400          (Unix seconds, when this attempt was sent)
    X-Segstream-Signature: v1=5d41402abc4b2a...  (hex HMAC-SHA256, key = the destination secret)

A receiver recomputes the HMAC over the raw body bytes, compares in constant time and rejects
timestamps more than 5 minutes away from its clock (replay protection); docs/destinations.md
has the snippet, which tests/unit/test_deliver_signing.py runs.

>>> sig = signature(b"k", 1795424400, b'{"changes":[]}')
>>> sig.startswith("v1="), verify(b"k", "1795424400", sig, b'{"changes":[]}', now=1795424401)
(True, True)
>>> verify(b"k", "1795424400", sig, b'{"changes":[]}', now=1795424400 + 301)
False
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Segstream-Timestamp"
SIGNATURE_HEADER = "X-Segstream-Signature"
SCHEME = "v1"
TOLERANCE_S = 300


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """``v1=<hex>``: the HMAC-SHA256 of ``b"<timestamp>." + body`` under ``secret``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def headers(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    """The signature headers of one attempt."""
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(secret: bytes, timestamp: str, sig: str, body: bytes, *, now: float,
           tolerance_s: int = TOLERANCE_S) -> bool:
    """What a receiver checks (the reference for docs/destinations.md)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, ts, body), sig)
