"""Connection security on real servers: a Redis that requires a password (deploy/local/redis.sh
with SEGSTREAM_REDIS_PASSWORD, a private instance), and a Kafka broker with a SASL/PLAIN
listener (deploy/local/kafka.sh with SEGSTREAM_KAFKA_SASL_USERS, a private instance).

- the worker (ingest + segmentation) runs a stream end to end with the passwords, the API
  reads membership with them; Redis == offline replay == change log (check_end_state);
- without the password or with a wrong one the worker stops at once with a clear error that
  does not contain any password;
- a worker logging at debug, sent wrong tokens, shows none of its secrets in its log or in
  any HTTP response.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .pipeline import (
    Pipeline,
    check_end_state,
    flapping_events,
    leased_server,
    make_pipeline,
    produce,
    slow_segments,
    wait_caught_up,
)
from .support import REPO, Worker, free_port

REDIS_PASSWORD = "redis-pw-Tq83vz1099xx"
WRONG_PASSWORD = "wrong-pw-Jk41mn7766xx"
TOKEN = "api-token-Gh27xy0123456789"
WRONG_TOKEN = "api-token-Zz00zz0123456789"
SASL_USER = "segstream"
SASL_PASSWORD = "sasl-pw-Wd52rt3388xx"
SECRETS = (REDIS_PASSWORD, WRONG_PASSWORD, TOKEN, WRONG_TOKEN, SASL_PASSWORD)
EXIT_WAIT_S = 90.0


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private Redis that requires REDIS_PASSWORD (requirepass)."""
    port = free_port()
    env = {"SEGSTREAM_REDIS_PORT": str(port), "SEGSTREAM_REDIS_FRESH": "1",
           "SEGSTREAM_REDIS_DATA": str(tmp_path_factory.mktemp("redis-auth")),
           "SEGSTREAM_REDIS_PASSWORD": REDIS_PASSWORD}
    with leased_server("redis.sh", env, "a private Redis with a password"):
        yield port


def http_get(url: str, token: str | None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(base: str, worker: Worker, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited ({worker.proc.returncode}):\n{worker.log_tail()}")
        try:
            if http_get(base + "/ready", None)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"worker not ready:\n{worker.log_tail()}")


def full_log(worker: Worker) -> str:
    return worker.log_path.with_suffix(f".{worker.runs}.log").read_text(errors="replace")


def assert_no_secret(text: str, what: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{what} shows the secret {secret[:8]}..."


def wait_exit(worker: Worker, timeout_s: float = EXIT_WAIT_S) -> int:
    assert worker.proc is not None
    try:
        return worker.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within {timeout_s} s:\n{worker.log_tail()}")


def run_until_exit(p: Pipeline) -> tuple[Worker, int, float, str]:
    """Start a worker of ``p`` that must stop by itself: (worker, exit status, seconds it ran,
    its whole log)."""
    worker = p.worker()
    started = time.monotonic()
    try:
        worker.start()
        status = wait_exit(worker)
    finally:
        p.stop_all()
    return worker, status, time.monotonic() - started, full_log(worker)


def run_end_to_end(kafka_bootstrap: str, redis_view_url: str, prefix: str, tmp: Path,
                   **env: str) -> None:
    """A worker with ``env`` (credentials) at debug log level: a stream end to end, the API
    with the right / a wrong / no token; no secret in its log or in any response."""
    segments = slow_segments(tmp)
    p = make_pipeline(kafka_bootstrap, redis_view_url, prefix, tmp, segments,
                      SEGSTREAM_API_TOKENS=TOKEN, SEGSTREAM_LOG_LEVEL="debug", **env)
    events = flapping_events(random.Random(5), int(time.time() * 1000), customers=60,
                             per_customer=5)
    produce(p.bootstrap, p.names["raw"], events, partitions=p.raw_partitions)
    worker = p.worker()
    try:
        worker.start()
        wait_caught_up(p, len(events), [worker])
        report = check_end_state(p, events, segments)
        base = f"http://127.0.0.1:{worker.env['SEGSTREAM_WEB_PORT']}"
        wait_ready(base, worker)
        responses: list[bytes] = []
        member = sorted(report.members["german"])[0]
        status, body = http_get(f"{base}/customers/{member}/segments", TOKEN)
        responses.append(body)
        assert status == 200, body
        assert "german" in {s["segment"] for s in orjson.loads(body)["segments"]}
        status, body = http_get(f"{base}/segments/german/members?limit=1000", TOKEN)
        responses.append(body)
        assert status == 200 and set(orjson.loads(body)["members"]) == report.members["german"]
        for token, code in ((WRONG_TOKEN, "invalid_token"), (None, "missing_token"),
                            (REDIS_PASSWORD, "invalid_token")):
            status, body = http_get(f"{base}/segments", token)
            responses.append(body)
            assert (status, orjson.loads(body)["error"]["code"]) == (401, code)
        assert_no_secret(b"\n".join(responses).decode(), "an API response")
        print(f"\n{len(events)} events, {report.changes} changes, sizes {report.sizes()}")
    finally:
        p.stop_all()
    log = full_log(worker)
    assert "segstream configuration: Settings(" in log, "no configuration line"
    assert "[DEBUG]" in log, "the worker did not log at debug level"
    assert_no_secret(log, "the worker's log")
    print(f"worker log: {len(log.splitlines())} lines at debug, no secret in them")


def test_worker_and_api_with_a_redis_password(
    kafka_bootstrap: str, redis_port: int, unique_topic_prefix: str, tmp_path: Path
) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(REDIS_PASSWORD + "\n")
    run_end_to_end(kafka_bootstrap, f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0",
                   unique_topic_prefix, tmp_path,
                   SEGSTREAM_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                   SEGSTREAM_REDIS_PASSWORD_FILE=str(secret))


@pytest.mark.parametrize("password", [None, WRONG_PASSWORD], ids=["missing", "wrong"])
def test_a_refused_redis_password_stops_the_worker_clearly(
    kafka_bootstrap: str, redis_port: int, unique_topic_prefix: str, tmp_path: Path,
    password: str | None
) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    env = {} if password is None else {"SEGSTREAM_REDIS_PASSWORD": password}
    p = make_pipeline(kafka_bootstrap, url, unique_topic_prefix, tmp_path, slow_segments(tmp_path),
                      SEGSTREAM_API_TOKENS=TOKEN, SEGSTREAM_LOG_LEVEL="debug", **env)
    worker, status, took, log = run_until_exit(p)
    assert status != 0
    assert f"Redis at {url} refused the credentials" in log, worker.log_tail()
    assert ("gave no password" if password is None else "gave a password") in log
    assert_no_secret(log, "the worker's log")
    print(f"\n{'no' if password is None else 'a wrong'} password: the worker stopped "
          f"(status {status}) {took:.1f} s after its start")


def test_redis_rebuild_cli_with_and_without_the_password(redis_port: int, tmp_path: Path
                                                         ) -> None:
    """A tool takes the same settings: `segstream redis-rebuild --dry-run` works with the
    password, and without it fails with Redis' error and no password shown."""
    base = {"PATH": "/usr/bin:/bin", "SEGSTREAM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "SEGSTREAM_REDIS_NAMESPACE": "rebuild-auth:", "SEGSTREAM_BUNDLE_PARTITIONS": "2"}
    cmd = [sys.executable, "-m", "stream.cli", "redis-rebuild", "--dry-run"]
    ok = subprocess.run(cmd, cwd=REPO, env={**base, "SEGSTREAM_REDIS_PASSWORD": REDIS_PASSWORD},
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(cmd, cwd=REPO, env={**base, "SEGSTREAM_REDIS_PASSWORD": WRONG_PASSWORD},
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 69
    assert "refused the credentials: AuthenticationError" in bad.stderr, bad.stdout + bad.stderr
    assert_no_secret(bad.stdout + bad.stderr + ok.stdout + ok.stderr, "redis-rebuild's output")


def test_segments_dry_run_with_a_wrong_redis_password(redis_port: int, kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    """`segments apply --dry-run` reads Redis for the sizes: a refused password is one line
    and exit 69 at once (no wait), with no password shown."""
    env = {"PATH": "/usr/bin:/bin", "SEGSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SEGSTREAM_TOPIC_PREFIX": f"dryauth{os.getpid()}-",
           "SEGSTREAM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "SEGSTREAM_REDIS_PASSWORD": WRONG_PASSWORD}
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "stream.cli", "segments", "apply",
                          str(REPO / "processors" / "catalogue.yaml"), "--dry-run"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 69, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"segstream segments: Redis at redis://127.0.0.1:{redis_port}/0 refused the "
        f"credentials: {out.stderr.split('credentials: ', 1)[1].strip()}"]
    assert "AuthenticationError" in out.stderr
    assert time.monotonic() - started < 15  # not the SEGSTREAM_CONNECT_WAIT_S wait
    assert_no_secret(out.stdout + out.stderr, "segments apply --dry-run's output")


# --- Kafka SASL -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A private broker with a PLAINTEXT listener (tools, the test's own checks) and a
    SASL_PLAINTEXT one (PLAIN, user SASL_USER): (plain bootstrap, SASL bootstrap)."""
    port, controller, sasl = free_port(), free_port(), free_port()
    env = {"SEGSTREAM_KAFKA_PORT": str(port), "SEGSTREAM_KAFKA_CONTROLLER_PORT": str(controller),
           "SEGSTREAM_KAFKA_SASL_PORT": str(sasl), "SEGSTREAM_KAFKA_FRESH": "1",
           "SEGSTREAM_KAFKA_SASL_USERS": f"{SASL_USER}:{SASL_PASSWORD}",
           "SEGSTREAM_KAFKA_DATA": str(tmp_path_factory.mktemp("kafka-sasl")),
           "SEGSTREAM_KAFKA_HEAP_OPTS": "-Xmx512m -Xms128m"}
    with leased_server("kafka.sh", env, "a private Kafka with a SASL listener"):
        yield f"127.0.0.1:{port}", f"127.0.0.1:{sasl}"


def sasl_env(bootstrap: str, password: str) -> dict[str, str]:
    return {"SEGSTREAM_KAFKA_BOOTSTRAP": bootstrap,
            "SEGSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
            "SEGSTREAM_KAFKA_SASL_MECHANISM": "plain",
            "SEGSTREAM_KAFKA_SASL_USERNAME": SASL_USER, "SEGSTREAM_KAFKA_SASL_PASSWORD": password}


def test_worker_over_kafka_sasl_and_redis_auth(
    sasl_kafka: tuple[str, str], redis_port: int, unique_topic_prefix: str, tmp_path: Path
) -> None:
    """Every Kafka client of the worker (Faust's consumer, producer and topic creation, the
    definitions follower) authenticates with SASL/PLAIN; Redis with its password; secrets of
    both, and the API token, stay out of the debug log and the responses."""
    plain, sasl = sasl_kafka
    run_end_to_end(plain, f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0",
                   unique_topic_prefix, tmp_path,
                   SEGSTREAM_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                   SEGSTREAM_REDIS_PASSWORD=REDIS_PASSWORD,
                   **sasl_env(sasl, SASL_PASSWORD))


def test_a_wrong_sasl_password_is_refused_clearly(
    sasl_kafka: tuple[str, str], redis_port: int, unique_topic_prefix: str, tmp_path: Path
) -> None:
    plain, sasl = sasl_kafka
    p = make_pipeline(plain, f"redis://127.0.0.1:{redis_port}/0", unique_topic_prefix, tmp_path,
                      slow_segments(tmp_path), SEGSTREAM_REDIS_PASSWORD=REDIS_PASSWORD,
                      SEGSTREAM_LOG_LEVEL="debug", **sasl_env(sasl, WRONG_PASSWORD))
    worker, status, took, log = run_until_exit(p)
    assert status != 0
    assert "SaslAuthenticationFailed: Authentication failed" in log, worker.log_tail()
    assert_no_secret(log, "the worker's log")
    # a tool (kafka-python) with the wrong password fails too, showing no secret (kafka-python
    # only says "Unable to bootstrap": the SASL cause goes to its logger, unconfigured here)
    cli = subprocess.run([sys.executable, "-m", "stream.cli", "segments", "show"], cwd=REPO,
                         env={**p.env, **sasl_env(sasl, WRONG_PASSWORD)}, capture_output=True,
                         text=True, timeout=120, check=False)
    assert cli.returncode == 69  # a server cannot be reached: the CLI's one status for it
    assert "Traceback" not in cli.stderr
    assert "cannot be reached" in cli.stderr.splitlines()[-1], cli.stdout + cli.stderr
    assert_no_secret(cli.stdout + cli.stderr, "segments show's output")
    print(f"\nwrong SASL password: the worker stopped (status {status}) {took:.1f} s after "
          "its start")
