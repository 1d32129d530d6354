"""Stable 64-bit hashes of event ids and series texts (keyed BLAKE2b, not crc32/adler32).

crc32 and adler32 are linear: ids can be crafted to collide (``aca``/``bab`` blocks) and a real
event would be dropped as a duplicate. BLAKE2b is a cryptographic hash; keyed with a secret
per deployment (``SEGSTREAM_ID_HASH_KEY``), nobody who does not know the key can even search
for a collision offline. Unkeyed, finding one takes ~2^32 hash evaluations (birthday bound).
"""

from __future__ import annotations

from hashlib import blake2b

#: key used when a deployment sets none (documented: set your own in production)
DEFAULT_ID_KEY = b"segstream-event-id-v2"
_SERIES_PERSON = b"segstr-series"
_KEYED: dict[bytes, blake2b] = {}  # key -> hasher holding the keyed initial state


def deployment_key(secret: str) -> bytes:
    """The BLAKE2b key for a deployment's secret (``SEGSTREAM_ID_HASH_KEY``; empty: the
    built-in default). Any length of secret gives a 32-byte key.

    >>> len(deployment_key("s3cret")), deployment_key("") == DEFAULT_ID_KEY
    (32, True)
    """
    if not secret:
        return DEFAULT_ID_KEY
    return blake2b(secret.encode(), digest_size=32, person=b"segstr-idkey").digest()


def id_hash(event_id: str, key: bytes = DEFAULT_ID_KEY) -> int:
    """64-bit keyed hash of an event id (de-duplication; the same in every process).

    >>> id_hash("e1") == id_hash("e1") != id_hash("e2")
    True
    >>> id_hash("e1") != id_hash("e1", b"other-deployment")
    True
    """
    h = _KEYED.get(key)
    if h is None:
        if len(_KEYED) >= 16:  # a few deployments' keys per process at most (tests)
            _KEYED.clear()
        h = _KEYED[key] = blake2b(digest_size=8, key=key)
    h = h.copy()  # the keyed initial state: copying it skips keying (0.55 vs 0.89 us)
    h.update(event_id.encode())
    return int.from_bytes(h.digest(), "big")


def series_hash(text: str) -> int:
    """64-bit hash of a series' canonical text (identifies the series in encoded states).

    >>> series_hash('page_view where category == "v29685295"') != series_hash(
    ...     'page_view where category == "v32060020"')
    True
    """
    return int.from_bytes(
        blake2b(text.encode(), digest_size=8, person=_SERIES_PERSON).digest(), "big")
