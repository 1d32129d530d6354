"""Wait until a local Kafka broker answers a metadata request; used by deploy/local/kafka.sh.

Usage: kafka_ready.py HOST:PORT TIMEOUT_S [--pid PID] [--log FILE [--log-from BYTES]]

Exit 0 once the broker lists itself in a DescribeCluster/metadata answer (it is then unfenced
and can create topics), 1 on timeout, 2 if the server process PID died first. Uses kafka-python
when importable (the project's .venv); otherwise falls back to "port accepts connections and the
log says 'Kafka Server started'", which is weaker but needs only the standard library.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


_last_error: list[str] = []


def _kafka_python_check(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient  # noqa: PLC0415 - optional dependency
    from kafka.errors import KafkaError  # noqa: PLC0415

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=3000,
            client_id="segstream-ready-check",
        )
    except (KafkaError, OSError, ValueError) as exc:
        _last_error[:] = [repr(exc)]
        return False
    try:
        brokers = admin.describe_cluster().get("brokers") or []
        if not brokers:
            _last_error[:] = ["DescribeCluster answered with no broker (not unfenced yet)"]
        return len(brokers) > 0
    except (KafkaError, OSError, ValueError) as exc:
        _last_error[:] = [repr(exc)]
        return False
    finally:
        admin.close()


def _log_check(host: str, port: int, log_file: str | None, log_from: int) -> bool:
    if not _port_open(host, port):
        return False
    if log_file is None:
        return True
    try:
        with Path(log_file).open("rb") as f:
            f.seek(log_from)  # only what this start wrote, not an earlier run's lines
            return b"Kafka Server started" in f.read()
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """Poll until ready; see the module docstring for the exit codes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("timeout", type=float)
    parser.add_argument("--pid", type=int)
    parser.add_argument("--log")
    parser.add_argument("--log-from", type=int, default=0)
    args = parser.parse_args(argv)
    host, _, port_s = args.bootstrap.rpartition(":")
    port = int(port_s)
    logging.basicConfig(level=logging.CRITICAL)  # kafka-python is chatty while the broker boots

    try:
        import kafka  # noqa: F401, PLC0415

        check = "kafka-python"
    except ImportError:
        check = "port+log"

    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not _pid_alive(args.pid):
            print(f"kafka process {args.pid} exited before it was ready", file=sys.stderr)
            return 2
        # Skip the (slow) client while nothing listens yet.
        if _port_open(host, port):
            ok = (
                _kafka_python_check(args.bootstrap)
                if check == "kafka-python"
                else _log_check(host, port, args.log, args.log_from)
            )
            if ok:
                print(f"ready ({check} check)", file=sys.stderr)
                return 0
        time.sleep(0.25)
    last = f"; last error: {_last_error[0]}" if _last_error else ""
    print(f"not ready after {args.timeout:.0f} s ({check} check){last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
