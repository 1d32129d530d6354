"""The command line as a Unix tool: --version, bare commands print help (exit 0, stdout), help
texts for users with every option's default, one exit status (69) when Kafka or Redis cannot
be reached, quiet exits on a closed pipe, ``--invalid-out -``, ``segments validate --json``.

The failure cases run the real CLI as a subprocess (``python -m stream.cli``) against closed
ports and assert the exact exit status and that no traceback reaches stderr."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stream.cli.main import build_parser
from stream.cli.servers import EXIT_UNAVAILABLE

REPO = Path(__file__).resolve().parents[2]
CLOSED = "127.0.0.1:1"  # nothing listens on port 1
GROUPS = ["segments", "schemas"]


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SEGSTREAM_CONNECT_WAIT_S": "1",
               **(env or {})}
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=timeout, input=stdin,
                          check=False)


def test_version_is_the_package_version() -> None:
    out = cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"segstream {importlib.metadata.version('segstream')} ")


@pytest.mark.parametrize("args", [[], *([g] for g in GROUPS)])
def test_a_bare_command_prints_its_help_on_stdout_and_exits_0(args: list[str]) -> None:
    out = cli(*args)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout.startswith(f"usage: segstream{''.join(' ' + a for a in args)} ")


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(parser: argparse.ArgumentParser, path: str
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")
    yield from walk(build_parser(), "segstream")


def test_help_texts_are_for_users_and_every_option_says_its_default() -> None:
    problems = []
    for path, parser in _parsers():
        text = parser.format_help()
        problems += [f"{path}: {m!r} in --help" for m in ("``", ":mod:", ":func:", ":class:",
                                                          ":meth:", "create_app")
                     if m in text]
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.required:
                continue  # flags, positionals and required options have no default to tell
            if not action.help:
                problems.append(f"{path} {action.option_strings[0]}: no help")
                continue
            shown = formatter._get_help_string(action)  # type: ignore[attr-defined]
            if "default" not in shown.lower():
                problems.append(f"{path} {action.option_strings[0]}: no default in its help")
    assert problems == []


def test_an_option_with_a_default_shows_it() -> None:
    help_text = cli("watch", "--help").stdout
    assert "redraw every N seconds (default: 1.0)" in " ".join(help_text.split())


# --- servers that cannot be reached ------------------------------------------------------------
def assert_unavailable(out: subprocess.CompletedProcess[str], what: str) -> None:
    assert out.returncode == EXIT_UNAVAILABLE, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert "waiting up to 1 s (SEGSTREAM_CONNECT_WAIT_S)" in lines[0]  # the wait is announced
    assert f"{what} cannot be reached" in lines[-1]
    assert len(lines) == 2, out.stderr


@pytest.mark.parametrize("args", [
    ["segments", "show"], ["segments", "show", "--json"],
    ["segments", "apply", "processors/catalogue.yaml"],
    ["segments", "apply", "processors/catalogue.yaml", "--dry-run"],
    ["watch", "--once", "1"]])
def test_kafka_unreachable_is_one_line_and_exit_69(args: list[str]) -> None:
    out = cli(*args, env={"SEGSTREAM_KAFKA_BOOTSTRAP": CLOSED})
    assert_unavailable(out, f"Kafka at {CLOSED}")


def test_redis_unreachable_is_one_line_and_exit_69() -> None:
    out = cli("redis-rebuild", "--dry-run", env={"SEGSTREAM_REDIS_URL": f"redis://{CLOSED}/0"})
    assert_unavailable(out, f"Redis at redis://{CLOSED}/0")


def test_simulate_to_an_unreachable_kafka_exits_69() -> None:
    out = cli("simulate", "--duration", "1", env={"SEGSTREAM_KAFKA_BOOTSTRAP": CLOSED})
    assert out.returncode == EXIT_UNAVAILABLE, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        line for line in out.stderr.strip().splitlines() if line.startswith("segstream simulate:")]


# --- closed pipes ------------------------------------------------------------------------------
def _closed_early(args: list[str]) -> tuple[int, str]:
    """Run the CLI with stdout into ``head -c 100``; (its exit status, its stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.read(100)
    proc.stdout.close()  # what `| head` does
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


@pytest.mark.parametrize("args", [
    ["simulate", "--to", "-", "--rate", "1000", "--duration", "600"],
    ["replay", "--segments", "processors/catalogue.yaml", "--events",
     "tests/fixtures/events.jsonl", "--out", "-", "--quiet"]])
def test_a_closed_stdout_ends_the_command_quietly(args: list[str]) -> None:
    status, err = _closed_early(args)
    assert status == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Broken pipe" not in err, err


# --- replay --invalid-out - and segments validate --json ---------------------------------------
def test_invalid_out_dash_is_stdout() -> None:
    events = '{"type": "nope"}\nnot json\n'
    out = cli("replay", "--segments", "processors/catalogue.yaml", "--events", "-",
              "--invalid-out", "-", "--quiet", stdin=events)
    assert out.returncode == 0, out.stderr
    rejected = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [r["line"] for r in rejected] == [1, 2]
    assert "events: 2 read, 0 valid, 2 invalid" in out.stderr  # the summary moves to stderr
    assert not Path(REPO / "-").exists()


def test_segments_validate_json(tmp_path: Path) -> None:
    ok = cli("segments", "validate", "processors/catalogue.yaml", "--json")
    assert ok.returncode == 0, ok.stderr
    doc = orjson.loads(ok.stdout)
    assert doc["ok"] is True and doc["segments"] and {"name", "condition"} <= set(
        doc["segments"][0])
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\nsegments:\n  - name: a\n    description: d\n"
                   "    condition: count(nope, 1d) >= 1\n")
    out = cli("segments", "validate", str(bad), "--json")
    assert out.returncode == 3 and out.stderr == ""
    doc = orjson.loads(out.stdout)
    assert doc["ok"] is False and doc["errors"][0]["line"] == 5
    assert "nope" in doc["errors"][0]["message"]


def test_schemas_export_to_a_directory_that_cannot_be_written_exits_4(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    out = cli("schemas", "export", str(blocked / "dir"))
    assert out.returncode == 4 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("segstream schemas export: cannot write ")
