"""The destinations file: defaults, every kind of error with its line, all at once, did you
mean, secrets from the environment or a file and never in an error, and the command's exit
codes (3 for a bad file, 2 for a bad command line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from processors.lang.errors import CombinedDefinitionError, DefinitionError
from stream.deliver.config import Destination, load_destinations

REPO = Path(__file__).resolve().parents[2]


def errors_of(text: str, **kw: object) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        load_destinations(text, name="d.yaml", **kw)  # type: ignore[arg-type]
    err = info.value
    return [str(e) for e in err.errors] if isinstance(err, CombinedDefinitionError) \
        else [str(err)]


def test_a_full_destination_and_the_defaults() -> None:
    dests = load_destinations("""
destinations:
  - name: ads
    url: https://hooks.example.com/in
    secret_env: ADS_SECRET
    segments: [vip, cart_abandoners]
    batch: {max_changes: 50, max_wait: 2s}
    timeout: 1500ms
    max_tries: 3
    backoff: {base: 100ms, max: 5s}
  - {name: crm, url: "http://crm:8080/x", secret: inline, batch: {max_wait: 0}}
""", environ={"ADS_SECRET": " from-env \n"})
    ads, crm = dests
    assert ads == Destination("ads", "https://hooks.example.com/in", "from-env",
                              frozenset({"vip", "cart_abandoners"}), 50, 2000, 1500, 3, 100,
                              5000)
    assert (crm.segments, crm.max_changes, crm.max_wait_ms, crm.timeout_ms, crm.max_tries,
            crm.backoff_base_ms, crm.backoff_max_ms) == (None, 100, 0, 10_000, 8, 500, 60_000)
    assert crm.wants("anything") and ads.wants("vip") and not ads.wants("buyers")


def test_secret_file(tmp_path: Path) -> None:
    f = tmp_path / "s"
    f.write_text("file-secret\n")
    (d,) = load_destinations(f"destinations: [{{name: a, url: 'http://h/x', secret_file: {f}}}]")
    assert d.secret == "file-secret"
    assert "file-secret" not in repr(d)


def test_every_error_at_once_with_its_line() -> None:
    errors = errors_of("""destinations:
  - name: ok
    url: http://h/x
    secret: s
    batch: {max_change: 5}
    timeuot: 3s
  - name: Bad Name
    url: ftp://h
    secret: s
    secret_env: ALSO
    segments: []
    max_tries: 0
    backoff: {base: 2s, max: 1s}
  - name: ok
    url: http://h/y
    secret: s
    timeout: soon
""")
    assert errors == [
        "d.yaml:5: destination 'ok': batch: unknown key 'max_change' (did you mean "
        "'max_changes'?); allowed: max_changes, max_wait",
        "d.yaml:6: destination 'ok': unknown key 'timeuot' (did you mean 'timeout'?); allowed: "
        "name, url, secret, secret_env, secret_file, segments, batch, timeout, max_tries, "
        "backoff",
        "d.yaml:7: destinations[1]: name 'Bad Name' must match [a-z][a-z0-9_-]*",
        "d.yaml:8: destinations[1]: url: must start with http:// or https://, not 'ftp://h'",
        "d.yaml:9: destinations[1]: exactly one of secret, secret_env, secret_file is "
        "required (found secret, secret_env)",
        "d.yaml:11: destinations[1]: segments: must be \"all\" or a non-empty list of segment "
        "names, not []",
        "d.yaml:12: destinations[1]: max_tries: must be a whole number from 1 to 100, not 0",
        "d.yaml:13: destinations[1]: backoff: max (1000 ms) must be at least base (2000 ms)",
        "d.yaml:14: destination 'ok': duplicate name (first on line 2)",
        "d.yaml:17: destination 'ok': timeout: must be a duration such as 500ms, 10s or 1m "
        "(at least 1 ms), not 'soon'",
    ]


def test_file_level_errors() -> None:
    assert errors_of("destinations: []\nextra: 1\n") == [
        "d.yaml:1: destinations must be a non-empty list",
        "d.yaml:2: unknown key 'extra'; allowed: destinations"]
    assert errors_of("- a\n") == ["d.yaml: the file must be a mapping with a destinations list"]
    assert errors_of("destinations: [a: 1\n")[0].startswith("d.yaml:2: not valid YAML")
    assert errors_of("destinations: [x]\ndestinations: [y]\n")[0] == \
        "d.yaml:2: duplicate key 'destinations' (first on line 1)"


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    text = "destinations: [{name: a, url: 'http://h', secret: [hunter2]}]"
    assert all("hunter2" not in e for e in errors_of(text))
    missing = errors_of("destinations: [{name: a, url: 'http://h/x', secret_env: NOPE}]",
                        environ={})
    assert missing == ["d.yaml:1: destination 'a': secret_env: the environment variable NOPE "
                       "is not set or empty"]
    gone = tmp_path / "gone"
    assert errors_of(f"destinations: [{{name: a, url: 'http://h/x', secret_file: {gone}}}]") \
        == [f"d.yaml:1: destination 'a': secret_file: {gone}: No such file or directory"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", "deliver", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def test_command_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("destinations:\n  - {name: a, url: 'http://h/x', secret: s, max_tries: x}\n")
    r = run_cli("--destinations", str(bad))
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert f"{bad}:2: destination 'a': max_tries: must be a whole number" in r.stderr
    r = run_cli("--destinations", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "--destinations FILE" in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text("destinations:\n  - {name: a, url: 'http://u:pw@h/x', secret: hunter2}\n")
    r = run_cli("--destinations", str(good), "--check")
    assert r.returncode == 0, r.stderr
    assert "1 destination(s) OK" in r.stdout and "a: http://u:***@h/x" in r.stdout
    assert "hunter2" not in r.stdout + r.stderr and ":pw@" not in r.stdout
