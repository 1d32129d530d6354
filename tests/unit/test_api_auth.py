"""Bearer-token authentication of the API (stream.worker.api.TokenAuth)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stream.settings import Settings, SettingsError, env_name
from stream.worker.api import ApiError, TokenAuth

GOOD = "good-token-0123456789"
OTHER = "other-token-0123456789"
OLD = "old-token-0123456789ab"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def auth(**kw: str) -> TokenAuth:
    """Settings from these environment values (by key): lists are parsed as in production."""
    return TokenAuth.from_settings(Settings.from_env({env_name(k): v for k, v in kw.items()}))


def status(a: TokenAuth, header: str | None) -> tuple[int, str] | None:
    try:
        a.check(header)
    except ApiError as err:
        assert GOOD not in err.message and OLD not in err.message  # never echoed
        return err.status, err.code
    return None


@pytest.mark.parametrize(("header", "expected"), [
    (f"Bearer {GOOD}", None),
    (f"bearer  {GOOD} ", None),  # scheme is case-insensitive, spaces around the token ignored
    (f"Bearer {OTHER}", None),
    (None, (401, "missing_token")),
    ("", (401, "missing_token")),
    ("Bearer", (401, "missing_token")),
    (f"Basic {GOOD}", (401, "missing_token")),
    (GOOD, (401, "missing_token")),  # no scheme
    ("Bearer wrong-token-0123456789", (401, "invalid_token")),
    (f"Bearer {GOOD}x", (401, "invalid_token")),
    (f"Bearer {OLD}", (403, "token_revoked")),
])
def test_header_outcomes(header: str | None, expected: tuple[int, str] | None) -> None:
    a = auth(api_tokens=f"{GOOD}, {OTHER},{OLD}", api_revoked_tokens=sha(OLD).upper())
    assert status(a, header) == expected


def test_tokens_file_comments_and_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text(f"# team A\n{GOOD}\n\n   # old\n{OTHER}\n")
    a = auth(api_tokens_file=str(f))
    assert len(a.accepted) == 2
    assert status(a, f"Bearer {OTHER}") is None
    assert status(a, "Bearer # team A") == (401, "invalid_token")


def test_no_token_configured_refuses_everything_unless_insecure() -> None:
    assert status(auth(), f"Bearer {GOOD}") == (503, "auth_not_configured")
    assert status(auth(api_auth="none"), None) is None


@pytest.mark.parametrize(("kw", "message"), [
    ({"api_tokens": "tiny1"}, "1 API token"),
    ({"api_revoked_tokens": "abc"}, "SHA-256 hex"),
    ({"api_revoked_tokens": "z" * 64}, "SHA-256 hex"),
    ({"api_tokens_file": "/nonexistent/tokens"}, "SEGSTREAM_API_TOKENS_FILE"),
])
def test_unusable_configuration_is_refused_without_echoing_tokens(
        kw: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as err:
        auth(**kw)
    assert "tiny1" not in str(err.value)


def test_tokens_stay_out_of_the_settings_repr() -> None:
    assert GOOD not in repr(Settings.build(api_tokens=(GOOD,)))
