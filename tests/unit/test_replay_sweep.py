"""processors.replay's sweep of event records older than the lateness: same changes, lean
final profiles (a profile with no new event would otherwise keep its last session's records)."""

from __future__ import annotations

from pathlib import Path

from processors.engine import Engine
from processors.lang.compile import compile_catalogue
from processors.lang.load import load_definitions
from processors.replay import replay
from schemas.validation import validate_event
from stream.tools.generate import GeneratorConfig, generate

CATALOGUE = Path(__file__).resolve().parents[2] / "processors" / "catalogue.yaml"


def test_sweeping_changes_nothing_but_the_records_kept() -> None:
    cfg = GeneratorConfig(customers=400, events=8_000, seed=5, duplicate_share=0.02,
                          out_of_order_share=0.02, forget_share=0.02)
    events = [validate_event(e, 2**53) for e in generate(cfg)]
    compiled = compile_catalogue(load_definitions(CATALOGUE))
    runs = {}
    for every in (10**9, 997, 1):
        log: list[object] = []
        res = replay(Engine(compiled), iter(events), on_change=log.append, sweep_every=every)
        runs[every] = (log, res)
    (log, res), (log_997, _), (log_1, res_1) = runs[10**9], runs[997], runs[1]
    assert len(log) > 1_000
    assert [tuple(c) for c in log_997] == [tuple(c) for c in log]
    assert [tuple(c) for c in log_1] == [tuple(c) for c in log]
    assert res_1.sizes() == res.sizes()
    horizon = res.watermark - compiled.allowed_lateness_ms  # type: ignore[operator]
    kept = sum(len(st.seen) for st in res.states.values())
    kept_1 = sum(len(st.seen) for st in res_1.states.values())
    stale = sum(1 for st in res.states.values() for r in st.seen.values() if r[0] < horizon)
    assert stale > 100
    # sweeping before every event: what is left is what the last events brought
    assert kept_1 <= kept - stale + 1 and kept_1 < kept
