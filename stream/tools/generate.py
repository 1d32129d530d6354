"""Deterministic, realistic tracking-event generator (public envelope, epoch-ms timestamps).

``generate(GeneratorConfig(...))`` yields event dicts in *delivery* order. Without disorder
knobs, delivery order is time order. Customers have a stable profile (country, city, devices,
favourite categories, preferred hour of day, activity and spend levels) and produce sessions:

- browse: page views of products in their categories, on their devices;
- shop: browse, cart adds (and some removes), then checkout and purchase, or abandon;
- email: a campaign email sent, sometimes opened, sometimes clicked (then a short visit),
  rarely unsubscribed or bounced;
- identify at the first known session (traits incl. birthday, country, signup date) and a
  satisfaction score after some purchases;
- anonymous visitors: some customers start anonymously and later log in (an ``alias`` event
  links the anonymous id); some visitors stay anonymous; a few customers ask to be forgotten.

Disorder knobs (shares of events): ``duplicate_share`` (a copy delivered again a little later),
``out_of_order_share`` (delivered up to ``out_of_order_max_ms`` late, within lateness),
``late_share`` (delivered ``late_delay_ms`` late, beyond lateness), ``malformed_share``
(a broken envelope replaces the event). The same config and seed give the same stream.

Run ``python -m stream.tools.generate --events 1000 --customers 50 > events.jsonl`` for a file.

>>> evs = list(generate(GeneratorConfig(customers=20, events=300, seed=7)))
>>> len(evs) > 250 and all(a["timestamp"] <= b["timestamp"] for a, b in zip(evs, evs[1:]))
True
>>> evs == list(generate(GeneratorConfig(customers=20, events=300, seed=7)))
True
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

CATEGORIES = ("shoes", "bags", "electronics", "books", "home", "beauty", "toys", "sports",
              "garden", "fashion")
PRODUCTS_PER_CATEGORY = 40
COUNTRIES = (("US", ("New York", "Chicago", "Austin")), ("GB", ("London", "Leeds")),
             ("FR", ("Paris", "Lyon")), ("DE", ("Berlin", "Munich")), ("NL", ("Amsterdam",)),
             ("ES", ("Madrid", "Valencia")), ("IT", ("Milan", "Rome")), ("SE", ("Stockholm",)))
CURRENCY = {"US": "USD", "GB": "GBP", "SE": "SEK"}
PLATFORMS: tuple[tuple[float, tuple[tuple[str, str], ...]], ...] = (  # (weight, [(device, os)])
    (0.35, (("iphone", "ios"), ("mac", "macos"), ("ipad", "ios"))),
    (0.40, (("android", "android"), ("windows", "windows"))),
    (0.20, (("windows", "windows"), ("android", "android"))),
    (0.05, (("linux", "linux"), ("other", "android"))),
)
FIRST_NAMES = ("Ada", "Ben", "Chloe", "Dan", "Eva", "Femi", "Gus", "Hana", "Ivo", "Jade")


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """Knobs of the stream (all durations and instants in ms)."""

    customers: int = 1_000
    events: int = 10_000  # approximate target (sessions are whole)
    start: int = 1_793_491_200_000  # 2026-11-01T00:00:00Z
    days: float = 30.0
    seed: int = 0
    anonymous_share: float = 0.25  # customers whose first sessions are anonymous (then alias)
    visitor_share: float = 0.10  # extra anonymous-only visitors, relative to customers
    forget_share: float = 0.002  # customers who send a forget event at the end
    duplicate_share: float = 0.0
    out_of_order_share: float = 0.0
    out_of_order_max_ms: int = 10 * MINUTE
    late_share: float = 0.0
    late_delay_ms: int = 2 * HOUR
    malformed_share: float = 0.0
    source: str = "web"


@dataclass(slots=True)
class _Profile:
    cid: str
    anon: str | None  # anonymous id used before login, None when always known
    anon_sessions: int  # sessions left before the alias
    identified: bool
    country: str
    city: str
    devices: tuple[tuple[str, str], ...]
    categories: tuple[str, ...]
    hour: int  # preferred UTC hour of day
    spend: float  # price multiplier / purchase propensity
    weight: float  # activity level
    forget: bool


class _Gen:
    """Builds sessions; each session returns [(timestamp, event)]."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.ids = itertools.count(1)
        self.prefix = f"g{cfg.seed:x}-"
        rng = self.rng
        self.prices = {c: [round(rng.lognormvariate(3.3, 0.8), 2) for _ in
                           range(PRODUCTS_PER_CATEGORY)] for c in CATEGORIES}
        self.campaigns = [f"cmp-{i:03d}" for i in range(12)]

    def eid(self) -> str:
        return f"{self.prefix}{next(self.ids)}"

    def profile(self, i: int) -> _Profile:
        rng = self.rng
        country, cities = rng.choice(COUNTRIES)
        r, acc = rng.random(), 0.0
        devices = PLATFORMS[-1][1]
        for w, devs in PLATFORMS:
            acc += w
            if r < acc:
                devices = devs
                break
        anon = f"anon-{i:07d}" if rng.random() < self.cfg.anonymous_share else None
        return _Profile(
            cid=f"cust-{i:07d}", anon=anon, anon_sessions=rng.randint(1, 2) if anon else 0,
            identified=False, country=country, city=rng.choice(cities),
            devices=devices[: rng.randint(1, len(devices))],
            categories=tuple(rng.sample(CATEGORIES, rng.randint(1, 3))),
            hour=rng.choice((8, 12, 13, 19, 20, 21, 22)), spend=rng.lognormvariate(0, 0.5),
            weight=rng.paretovariate(1.5), forget=rng.random() < self.cfg.forget_share)

    def ev(self, typ: str, ts: int, cid: str | None, anon: str | None,
           props: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return ts, {"event_id": self.eid(), "type": typ, "customer_id": cid,
                    "anonymous_id": anon, "timestamp": ts, "source": self.cfg.source,
                    "properties": props}

    def session(self, p: _Profile, ts: int) -> list[tuple[int, dict[str, Any]]]:
        """One visit of p starting at ts (the kind is drawn from p's habits)."""
        rng = self.rng
        out: list[tuple[int, dict[str, Any]]] = []
        cid: str | None = p.cid
        anon = None
        if p.anon_sessions > 0:
            p.anon_sessions -= 1
            cid, anon = None, p.anon
            if p.anon_sessions == 0:  # logs in during this visit, after browsing
                out.extend(self.browse(p, ts, None, p.anon, rng.randint(1, 4)))
                ts = out[-1][0] + rng.randint(5_000, 60_000)
                out.append(self.ev("alias", ts, p.cid, p.anon, {}))
                cid, anon = p.cid, None
        if cid is not None and not p.identified:
            p.identified = True
            out.append(self.ev("identify", ts + 1_000, cid, None, {"traits": self.traits(p)}))
            ts += 2_000
        r = rng.random()
        if r < 0.22 and cid is not None:
            out.extend(self.email(p, ts))
        elif r < 0.55:
            out.extend(self.shop(p, ts, cid, anon))
        else:
            out.extend(self.browse(p, ts, cid, anon, rng.randint(1, 8)))
        return out

    def traits(self, p: _Profile) -> dict[str, Any]:
        rng = self.rng
        year = rng.randint(1950, 2006)
        return {"email": f"{p.cid}@example.com", "first_name": rng.choice(FIRST_NAMES),
                "country": p.country, "city": p.city, "gender": rng.choice(("f", "m", "x")),
                "birthday": f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "signup_date": f"{rng.randint(2018, 2026):04d}-{rng.randint(1, 10):02d}-"
                               f"{rng.randint(1, 28):02d}"}

    def product(self, p: _Profile) -> tuple[str, str, float]:
        cat = self.rng.choice(p.categories)
        i = self.rng.randrange(PRODUCTS_PER_CATEGORY)
        return cat, f"{cat[:3]}-{i:03d}", self.prices[cat][i]

    def browse(self, p: _Profile, ts: int, cid: str | None, anon: str | None,
               n: int) -> list[tuple[int, dict[str, Any]]]:
        rng = self.rng
        device, os_ = rng.choice(p.devices)
        out = []
        for _ in range(n):
            cat, pid, price = self.product(p)
            out.append(self.ev("page_view", ts, cid, anon, {
                "url": f"https://shop.example/{cat}/{pid}", "category": cat, "product_id": pid,
                "price": price, "device": device, "os": os_}))
            ts += rng.randint(3_000, 120_000)
        return out

    def shop(self, p: _Profile, ts: int, cid: str | None,
             anon: str | None) -> list[tuple[int, dict[str, Any]]]:
        rng = self.rng
        out = self.browse(p, ts, cid, anon, rng.randint(1, 4))
        ts = out[-1][0] + rng.randint(2_000, 60_000)
        cart: dict[str, tuple[int, float, str]] = {}
        for _ in range(rng.randint(1, 3)):
            cat, pid, price = self.product(p)
            qty = 1 if rng.random() < 0.8 else rng.randint(2, 3)
            old = cart.get(pid, (0, price, cat))
            cart[pid] = (old[0] + qty, price, cat)
            out.append(self.ev("cart_add", ts, cid, anon, {
                "product_id": pid, "price": price, "quantity": qty, "category": cat,
                "currency": CURRENCY.get(p.country, "EUR")}))
            ts += rng.randint(5_000, 180_000)
        if len(cart) > 1 and rng.random() < 0.25:
            pid = rng.choice(sorted(cart))
            del cart[pid]
            out.append(self.ev("cart_remove", ts, cid, anon, {"product_id": pid}))
            ts += rng.randint(5_000, 60_000)
        value = round(sum(q * pr for q, pr, _ in cart.values()), 2)
        if cid is None or rng.random() > min(0.9, 0.35 * p.spend):
            return out  # abandoned
        out.append(self.ev("checkout", ts, cid, None, {"cart_value": value, "step": "payment"}))
        ts += rng.randint(20_000, 300_000)
        out.append(self.ev("purchase", ts, cid, None, {
            "order_id": f"o-{self.eid()}", "amount": value,
            "currency": CURRENCY.get(p.country, "EUR"),
            "items": [{"product_id": k, "quantity": q, "price": pr, "category": c}
                      for k, (q, pr, c) in cart.items()]}))
        if rng.random() < 0.15:
            out.append(self.ev("identify", ts + rng.randint(HOUR, 3 * HOUR), cid, None,
                               {"traits": {"satisfaction": rng.randint(0, 10)}}))
        return out

    def email(self, p: _Profile, ts: int) -> list[tuple[int, dict[str, Any]]]:
        rng = self.rng
        camp = rng.choice(self.campaigns)
        mail = {"campaign_id": camp, "email_id": f"m-{self.eid()}"}
        out = [self.ev("email_sent", ts, p.cid, None, mail)]
        if rng.random() < 0.01:
            out.append(self.ev("email_bounce", ts + 2_000, p.cid, None,
                               {"campaign_id": camp, "kind": rng.choice(("hard", "soft"))}))
            return out
        if rng.random() < 0.35:
            ts += rng.randint(MINUTE, 6 * HOUR)
            out.append(self.ev("email_open", ts, p.cid, None, dict(mail)))
            if rng.random() < 0.02:
                out.append(self.ev("email_unsubscribe", ts + 30_000, p.cid, None,
                                   {"campaign_id": camp, "list_id": "news"}))
            elif rng.random() < 0.3:
                ts += rng.randint(5_000, 120_000)
                out.append(self.ev("email_click", ts, p.cid, None,
                                   {**mail, "url": "https://shop.example/sale"}))
                out.extend(self.browse(p, ts + 3_000, p.cid, None, rng.randint(1, 4)))
        return out

    def malformed(self, event: dict[str, Any]) -> dict[str, Any]:
        return malform(event, self.rng)


def malform(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A broken copy of ``event`` that validation rejects (one of five typical mistakes: no
    event id, misspelt type, no routing id, unparsable timestamp, properties not an object)."""
    bad = dict(event)
    kind = rng.randrange(5)
    if kind == 0:
        del bad["event_id"]
    elif kind == 1:
        bad["type"] = "page_veiw"
    elif kind == 2:
        bad["customer_id"] = bad["anonymous_id"] = None
    elif kind == 3:
        bad["timestamp"] = "yesterday"
    else:
        bad["properties"] = "not an object"
    return bad


def _session_starts(cfg: GeneratorConfig, rng: random.Random, profiles: list[_Profile],
                    visitors: int) -> list[tuple[int, int]]:
    """The sessions as (start, profile index or -1 - visitor), in time order."""
    weights = list(itertools.accumulate(p.weight for p in profiles))
    total_w = weights[-1] if weights else 0.0
    span = max(1, int(cfg.days * DAY))
    n_sessions = max(1, cfg.events // 5)
    starts: list[tuple[int, int]] = []
    for _ in range(n_sessions):
        if visitors and rng.random() < visitors / (cfg.customers + visitors):
            who = -1 - rng.randrange(visitors)
            hour = rng.randrange(24)
        else:
            who = rng.choices(range(cfg.customers), cum_weights=weights, k=1)[0] \
                if total_w else 0
            hour = profiles[who].hour if rng.random() < 0.6 else rng.randrange(24)
        day = rng.randrange(max(1, math.ceil(cfg.days)))
        at = day * DAY + hour * HOUR + rng.randrange(HOUR)
        if at < span:
            starts.append((cfg.start + at, who))
    starts.sort()
    return starts


def generate(cfg: GeneratorConfig) -> Iterator[dict[str, Any]]:
    """Yield the events of ``cfg`` in delivery order (time order unless disorder is asked)."""
    gen = _Gen(cfg)
    rng = gen.rng
    profiles = [gen.profile(i) for i in range(cfg.customers)]
    visitors = int(cfg.customers * cfg.visitor_share)
    guests = [gen.profile(cfg.customers + j) for j in range(visitors)]
    for j, g in enumerate(guests):  # anonymous-only: never log in, never get mail
        g.anon, g.anon_sessions, g.forget = f"visitor-{j:07d}", 1 << 62, False
    starts = _session_starts(cfg, rng, profiles, visitors)
    last_seen = {who: s for s, who in starts}
    pending: list[tuple[int, int, dict[str, Any]]] = []  # (delivery time, seq, event)
    seq = itertools.count()

    def push(events: list[tuple[int, dict[str, Any]]]) -> None:
        for ts, original in events:
            r = rng.random()
            deliver, event = ts, original
            if r < cfg.malformed_share:
                event = gen.malformed(original)
            elif r < cfg.malformed_share + cfg.late_share:
                deliver = ts + cfg.late_delay_ms
            elif r < cfg.malformed_share + cfg.late_share + cfg.out_of_order_share:
                deliver = ts + rng.randint(1, max(1, cfg.out_of_order_max_ms))
            heapq.heappush(pending, (deliver, next(seq), event))
            if cfg.duplicate_share and rng.random() < cfg.duplicate_share:
                again = deliver + rng.randint(0, max(1, cfg.out_of_order_max_ms))
                heapq.heappush(pending, (again, next(seq), dict(event)))

    for start, who in starts:
        while pending and pending[0][0] < start:
            yield heapq.heappop(pending)[2]
        p = profiles[who] if who >= 0 else guests[-1 - who]
        visit = gen.session(p, start)
        if p.forget and last_seen[who] == start:
            visit.append(gen.ev("forget", visit[-1][0] + DAY // 2, p.cid, None,
                                {"reason": "gdpr"}))
        push(visit)
    while pending:
        yield heapq.heappop(pending)[2]


def main(argv: list[str] | None = None) -> int:
    """Write a generated stream as JSON lines to stdout."""
    import orjson  # noqa: PLC0415 - only the CLI needs it

    ap = argparse.ArgumentParser(prog="python -m stream.tools.generate", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--customers", type=int, default=1_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duplicate-share", type=float, default=0.0)
    ap.add_argument("--out-of-order-share", type=float, default=0.0)
    ap.add_argument("--late-share", type=float, default=0.0)
    ap.add_argument("--malformed-share", type=float, default=0.0)
    a = ap.parse_args(argv)
    cfg = GeneratorConfig(customers=a.customers, events=a.events, days=a.days, seed=a.seed,
                          duplicate_share=a.duplicate_share,
                          out_of_order_share=a.out_of_order_share, late_share=a.late_share,
                          malformed_share=a.malformed_share)
    write = sys.stdout.buffer.write
    try:
        for event in generate(cfg):
            write(orjson.dumps(event) + b"\n")
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
