"""Session fixtures for every test: a real Kafka broker and a real Redis on 127.0.0.1.

`kafka_bootstrap` and `redis_url` are lazy (only tests that ask for them start anything, so
tests/unit never starts a server). Each one reuses a server that already answers on its port
(e.g. `make infra-up`, or another pytest session); otherwise it starts a throwaway instance
through deploy/local/kafka.sh / redis.sh (instance dirs .run/test-kafka and .run/test-redis, wiped
when started) holding a *lease* for this pytest process. At session end the lease is released:
the server stops unless another lease holder still uses it. If pytest is killed, the watchdog
that the script started beside the server stops it within about a second (no orphan JVM).
A server that cannot start makes the fixture FAIL with the script's output and log tail.

Environment: SEGSTREAM_KAFKA_PORT [29092], SEGSTREAM_KAFKA_CONTROLLER_PORT [29093],
SEGSTREAM_REDIS_PORT [26379], SEGSTREAM_REDIS_PASSWORD; SEGSTREAM_KAFKA_BOOTSTRAP /
SEGSTREAM_REDIS_URL, when set (deploy/local/with-infra.sh sets them), name servers to use as
they are (they must answer; nothing is started).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCAL_DIR = REPO / "deploy" / "local"
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"

KAFKA_PORT = int(os.environ.get("SEGSTREAM_KAFKA_PORT", "29092"))
REDIS_PORT = int(os.environ.get("SEGSTREAM_REDIS_PORT", "26379"))
START_TIMEOUT_S = 300  # the scripts have their own, shorter readiness timeouts


@dataclass(frozen=True)
class LocalServer:
    """One local server managed by a deploy/local script, as the test session sees it."""

    name: str  # "kafka" or "redis"
    port: int
    instance: Path  # the script's instance dir (SEGSTREAM_KAFKA_DATA / SEGSTREAM_REDIS_DATA)
    extra_env: Mapping[str, str] = field(default_factory=dict)  # e.g. the controller port

    @property
    def script(self) -> Path:
        return LOCAL_DIR / f"{self.name}.sh"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for the script: this instance, this port, plus `extra`."""
        env = dict(os.environ)
        env[f"SEGSTREAM_{self.name.upper()}_DATA"] = str(self.instance)
        env[f"SEGSTREAM_{self.name.upper()}_PORT"] = str(self.port)
        env.update(self.extra_env)
        env.update(extra or {})
        return env

    def run(
        self, *args: str, extra: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the script with `args`, capturing its output (stdout and stderr together)."""
        return subprocess.run(
            [str(self.script), *args],
            env=self.env(extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )


def pytest_report_header() -> str:
    """Which engine build the run tests: mypyc-compiled, or pure Python and why."""
    from processors import native  # noqa: PLC0415

    return f"segstream engine: {native.describe()}"


def port_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def kafka_answers(bootstrap: str) -> bool:
    """True when a Kafka broker at `bootstrap` answers DescribeCluster with itself listed."""
    # Imported here, not at the top: a unit-test run never loads the clients, and kafka-python's
    # import-time DeprecationWarnings then fall under the filters set in pytest_configure.
    from kafka import KafkaAdminClient  # noqa: PLC0415
    from kafka.errors import KafkaError  # noqa: PLC0415

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        admin.close()


def redis_answers(url: str) -> bool:
    """True when the Redis at `url` answers PING."""
    import redis  # noqa: PLC0415 - lazy, see kafka_answers

    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def answers_within(answers: Callable[[], bool], seconds: float) -> bool:
    """Poll `answers` until it is true or `seconds` have passed (a loaded 2-core machine can
    make one metadata request time out, so a single try would make the fixtures flaky)."""
    deadline = time.monotonic() + seconds
    while True:
        if answers():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _acquire(server: LocalServer, answers: Callable[[], bool]) -> bool:
    """Make `server` available; return True when this session holds a lease on it.

    Our own test instance already running: join it (lease). Something else answering on the
    port: reuse it, no lease, never stop it. Nothing there: start a fresh instance (lease).
    """
    running = server.run("status").returncode == 0
    if not running and port_listening(server.port):
        if answers_within(answers, 30):
            return False
        pytest.fail(
            f"127.0.0.1:{server.port} is taken by a process that is not a working {server.name}; "
            f"stop it or set SEGSTREAM_{server.name.upper()}_PORT",
            pytrace=False,
        )
    lease = {"SEGSTREAM_LEASE_PID": str(os.getpid()), f"SEGSTREAM_{server.name.upper()}_FRESH": "1"}
    try:
        result = server.run("start", extra=lease)
    except subprocess.TimeoutExpired as exc:
        server.run("release", str(os.getpid()))
        pytest.fail(f"{server.script} start did not finish within {exc.timeout} s", pytrace=False)
    if result.returncode != 0:
        server.run("release", str(os.getpid()))
        pytest.fail(
            f"could not start {server.name} for the integration tests "
            f"({server.script} start exited {result.returncode}):\n{result.stdout}",
            pytrace=False,
        )
    if not answers_within(answers, 60):
        pytest.fail(f"{server.name} started but does not answer:\n{result.stdout}", pytrace=False)
    return True


def _release(server: LocalServer) -> None:
    result = server.run("release", str(os.getpid()))
    if result.returncode != 0:
        print(f"warning: releasing {server.name} failed:\n{result.stdout}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """'127.0.0.1:PORT' of a Kafka 3.9 broker (KRaft, 1 node, auto-create on, 4 partitions)."""
    given = os.environ.get("SEGSTREAM_KAFKA_BOOTSTRAP")
    if given:
        if not kafka_answers(given):
            pytest.fail(f"SEGSTREAM_KAFKA_BOOTSTRAP={given} does not answer", pytrace=False)
        yield given
        return
    bootstrap = f"127.0.0.1:{KAFKA_PORT}"
    server = LocalServer("kafka", KAFKA_PORT, REPO / ".run" / "test-kafka")
    leased = _acquire(server, lambda: kafka_answers(bootstrap))
    try:
        yield bootstrap
    finally:
        if leased:
            _release(server)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """'redis://127.0.0.1:PORT/0' of a Redis 7 server (no persistence when we start it)."""
    given = os.environ.get("SEGSTREAM_REDIS_URL")
    if given:
        if not redis_answers(given):
            pytest.fail(f"SEGSTREAM_REDIS_URL={given} does not answer", pytrace=False)
        yield given
        return
    password = os.environ.get("SEGSTREAM_REDIS_PASSWORD", "")
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{REDIS_PORT}/0"
    server = LocalServer("redis", REDIS_PORT, REPO / ".run" / "test-redis")
    leased = _acquire(server, lambda: redis_answers(url))
    try:
        yield url
    finally:
        if leased:
            _release(server)


@pytest.fixture(scope="session")
def topic_prefix() -> str:
    """A prefix unique to this test run, e.g. 't1795436967-4242-': name topics and keys with it."""
    return f"t{int(time.time())}-{os.getpid()}-"


_prefix_counter = itertools.count(1)


@pytest.fixture
def unique_topic_prefix(topic_prefix: str) -> str:
    """A prefix unique to one test, for tests that must not see each other's topics or keys."""
    return f"{topic_prefix}{next(_prefix_counter)}-"


def pytest_configure(config: pytest.Config) -> None:
    """Silence kafka-python's own use of deprecated importlib.resources calls (100+ per run)."""
    for module in ("kafka.protocol.schemas.load_json", "importlib.resources._legacy"):
        config.addinivalue_line(
            "filterwarnings",
            rf"ignore:.* is deprecated\. Use files\(\):DeprecationWarning:{module}",
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration as `integration`."""
    del config
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)
