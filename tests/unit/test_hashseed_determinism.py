"""Determinism across processes: the same events give byte-identical change logs whatever
PYTHONHASHSEED (string hash randomisation) is, pure Python, in two subprocesses.

The stream is the shape of a once-seen flaky property failure (anonymous a1 and customer c1
with cart_add / checkout / page_view at one instant, an alias, a purchase, later cart events)
plus seeded random streams of the same kinds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, random, sys
sys.path.insert(0, "tests/unit")
from test_property_support import FIXTURES, MIN, T0, SLOT, PRODUCT_PRICE
from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.replay import replay

cat = load_definitions(FIXTURES / "property_segments.yaml")
rng = random.Random(7)

def ev(i, typ, cid, anon, ts, props):
    return {"event_id": f"e{i}", "type": typ, "customer_id": cid, "anonymous_id": anon,
            "timestamp": ts, "source": "prop", "schema_version": 1, "properties": props}

def stream():
    out = []
    for i in range(rng.randint(2, 9)):
        typ = rng.choice(["cart_add", "cart_add", "cart_remove", "purchase", "checkout",
                          "page_view", "alias", "alias"])
        ts = T0 + rng.choice([0, 0, 0, 1, 2, 20, 30, 45]) * SLOT + rng.choice((0, 0, 1, -1))
        cid, anon, props = "c1", None, {}
        if typ == "alias":
            anon = "a1"
        else:
            if typ in ("cart_add", "cart_remove", "page_view") and rng.random() < 0.5:
                cid, anon = None, "a1"
            if typ == "cart_add":
                p = rng.choice(sorted(PRODUCT_PRICE))
                props = {"product_id": p, "price": PRODUCT_PRICE[p], "quantity": rng.choice((1, 3))}
            elif typ == "cart_remove":
                props = {"product_id": rng.choice(sorted(PRODUCT_PRICE))}
            elif typ == "purchase":
                props = {"order_id": "o", "amount": 30.0, "currency": "EUR"}
            elif typ == "checkout":
                props = {"cart_value": 10.0}
            else:
                props = {"url": "/x"}
        out.append(ev(i, typ, cid, anon, ts, props))
    out.sort(key=lambda e: e["timestamp"])
    return [dict(e) for e in out for _ in range(2 if rng.random() < 0.25 else 1)]

fixed = [ev(0, "cart_add", None, "a1", T0, {"product_id": "p3", "price": 45.5, "quantity": 3}),
         ev(1, "cart_add", "c1", None, T0, {"product_id": "p2", "price": 25.0}),
         ev(2, "checkout", "c1", None, T0, {"cart_value": 10.0}),
         ev(3, "page_view", None, "a1", T0, {"url": "/x"}),
         ev(4, "alias", "c1", "a1", T0, {}),
         ev(5, "purchase", "c1", None, T0 + 4 * MIN, {"order_id": "o", "amount": 30.0}),
         ev(6, "cart_add", None, "a1", T0 + 8 * MIN, {"product_id": "p1", "price": 8.0})]
out = []
for events in [fixed] + [stream() for _ in range(150)]:
    log = []
    replay(Engine(compile_catalogue(cat)), events, until=events[-1]["timestamp"] + 20 * MIN,
           on_change=log.append)
    out.append([list(c) for c in log])
print(json.dumps(out))
"""


def _run(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "SEGSTREAM_PURE_PYTHON": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_change_logs_identical_under_two_hash_seeds() -> None:
    a, b = _run("0"), _run("12345")
    assert json.loads(a)[0], "the fixed stream produced no change"
    assert a == b
