"""The `segstream segments` commands on the real broker and Redis: the read-only ones
(`validate`, `show`, `apply --dry-run`) create no topic, `show --json` reads what `apply`
published, and `apply --dry-run` reports per segment its size today (Redis) and the size under
the new definitions estimated from the stored states, which is what the live switch reaches."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import yaml
from kafka import KafkaAdminClient

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.replay import replay
from schemas.partitioner import partition_for
from state.codec import encode_state
from state.redis_store import RedisStore, redis_client
from state.store import Commit, MemberOp

from .pipeline import REPO, canonical, expected_members, flapping_events, slow_segments

PARTITIONS = 4


def segments_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", "segments", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def topics_with(bootstrap: str, prefix: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {t for t in admin.list_topics() if t.startswith(prefix)}
    finally:
        admin.close()


def cli_env(bootstrap: str, redis_url: str, prefix: str, namespace: str,
            segments: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "SEGSTREAM_KAFKA_BOOTSTRAP": bootstrap,
            "SEGSTREAM_REDIS_URL": redis_url, "SEGSTREAM_REDIS_NAMESPACE": namespace,
            "SEGSTREAM_TOPIC_PREFIX": prefix, "SEGSTREAM_SEGMENTS_FILE": str(segments),
            "SEGSTREAM_BUNDLE_PARTITIONS": str(PARTITIONS)}


def test_read_only_commands_create_no_topic(kafka_bootstrap: str, redis_url: str,
                                            unique_topic_prefix: str, tmp_path: Path) -> None:
    v1 = slow_segments(tmp_path)
    env = cli_env(kafka_bootstrap, redis_url, unique_topic_prefix, "ro-empty:", v1)
    before = topics_with(kafka_bootstrap, unique_topic_prefix)
    assert before == set()
    for args in (["validate", str(v1)], ["show"], ["show", "--json"],
                 ["apply", str(v1), "--dry-run"]):
        out = segments_cli(env, *args)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
    assert topics_with(kafka_bootstrap, unique_topic_prefix) == before, "a topic was created"
    shown = orjson.loads(segments_cli(env, "show", "--json").stdout)
    assert shown == {"published": False, "topic": f"{unique_topic_prefix}segstream-definitions"}

    applied = segments_cli(env, "apply", str(v1))  # the one command that creates it
    assert applied.returncode == 0, applied.stderr
    assert topics_with(kafka_bootstrap, unique_topic_prefix) == {
        f"{unique_topic_prefix}segstream-definitions"}
    shown = orjson.loads(segments_cli(env, "show", "--json").stdout)
    assert shown["published"] is True and shown["version"] == "faults-1"
    assert shown["text"] == v1.read_text()
    assert [s["name"] for s in shown["segments"]] == [
        s.name for s in load_definitions(v1).segments]


async def seed(redis_url: str, namespace: str, states: dict[str, object],
               members: dict[str, set[str]], versions: dict[tuple[str, str], int]) -> None:
    """Store the states and memberships as the workers' commits do."""
    client = redis_client(redis_url)
    store = RedisStore(client, namespace=namespace)
    try:
        for p in range(PARTITIONS):
            mine = [cid for cid in states if partition_for(cid, PARTITIONS) == p]
            epoch = await store.claim(p)
            await store.commit(Commit(
                p, epoch, offset=0,
                states={cid: encode_state(states[cid]) for cid in mine},  # type: ignore[arg-type]
                members=[MemberOp(cid, seg, versions[cid, seg])
                         for seg, ids in members.items() for cid in ids if cid in mine]))
    finally:
        await client.aclose()


def dry_run_table(stdout: str) -> dict[str, tuple[int, int]]:
    """segment -> (today, estimated) from `apply --dry-run`'s table."""
    rows = re.findall(r"^  (\w+)\s+(\d+)\s+(\d+)\s+[+-]\d+$", stdout, re.MULTILINE)
    return {name: (int(today), int(after)) for name, today, after in rows}


def test_dry_run_shows_sizes_today_and_estimated_from_redis(
        kafka_bootstrap: str, redis_url: str, unique_topic_prefix: str, tmp_path: Path) -> None:
    v1 = slow_segments(tmp_path)
    now = int(time.time() * 1000)
    events = flapping_events(random.Random(5), now, 40, 8)
    # the state a worker would hold: the engine over the events, at their last instant
    engine = Engine(compile_catalogue(load_definitions(v1)))
    versions: dict[tuple[str, str], int] = {}
    result = replay(engine, sorted(canonical(events), key=lambda e: e["timestamp"]),
                    on_change=lambda ch: versions.__setitem__((ch.customer_id, ch.segment),
                                                              ch.version))
    members = {seg: set(ids) for seg, ids in result.members.items() if ids}
    assert members.get("cart_open") and members.get("german"), "the data must fill segments"
    namespace = f"dry{unique_topic_prefix.replace('-', '')}:"
    asyncio.run(seed(redis_url, namespace, result.states, members, versions))

    # v2: one segment changed, one removed, one added (as in test_definitions)
    doc = yaml.safe_load(v1.read_text())
    doc["version"] = "faults-2"
    doc["segments"] = [s for s in doc["segments"] if s["name"] != "cart_open"]
    for s in doc["segments"]:
        if s["name"] == "viewers_1h":
            s["condition"] = "count(page_view, 1h) >= 3"
    doc["segments"].append({"name": "french", "description": "Country trait is FR.",
                            "condition": 'trait.country == "FR"'})
    v2 = tmp_path / "v2.yaml"
    v2.write_text(yaml.safe_dump(doc))

    env = cli_env(kafka_bootstrap, redis_url, unique_topic_prefix, namespace, v1)
    out = segments_cli(env, "apply", str(v2), "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "dry run: nothing published" in out.stdout
    print("\n" + out.stdout)
    assert f"{len(result.states)} stored customers evaluated with faults-2" in out.stdout
    table = dry_run_table(out.stdout)
    # estimated = what the offline replay of the same events under v2 gives (what the live
    # switch reaches, test_definitions.py); today = the sizes the commits recorded
    want = expected_members(events, v2, int(time.time() * 1000))
    names = {s["name"] for s in doc["segments"]} | {"cart_open"}
    assert set(table) == names
    for name in names:
        assert table[name] == (len(members.get(name, ())), len(want.get(name, ()))), name
    assert table["cart_open"][1] == 0 and table["french"][0] == 0
    assert table["french"][1] > 0
    assert topics_with(kafka_bootstrap, unique_topic_prefix) == set()
