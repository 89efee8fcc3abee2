"""Benchmark: a simulated day of the district's service requests, three dispatch policies.

    .venv/bin/python bench/dispatch_day.py [--per-100 1.0] [--seed 2026] [--day 2026-12-01]

The demo district (``callcenter/demo_district.py``: 13,500 elders, 500 volunteers with their
skills, radii and weekly windows) is seeded once into a SQLite file; each policy plays the same
day on its own copy. Everything the centre does runs through its real code with a simulated
clock (time-machine, and ``at``/``now`` passed explicitly): ``open_case``, ``send_wave``
(matching, wave size, the category's window and wave count, escalation), ``accept_offer``,
``decline_offer``, ``drop_out``, ``expire_and_advance`` (run when the scheduler's 5-second job
would first see an expired wave), ``submit_feedback`` and ``close_case``. Only the people are
simulated. Policies:

- ``ranked waves of 3``: the system as built (``match_volunteers``' score, 3 per wave);
- ``nearest 3 per wave``: the same waves, ranked by distance alone (what the score adds);
- ``nearest volunteer only``: the single nearest eligible volunteer per wave (the baseline).

Assumptions (``ASSUMPTIONS`` below, printed with the table): the request volume, its hourly
profile and category mix, and how volunteers answer. A volunteer's reaction to a given case is
drawn from a random stream of its own (seed, case, volunteer), so that the policies face the same
people in the same mood and differ only by whom they ask and when. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import heapq
import itertools
import math
import random
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import time_machine
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from callcenter import db, migrate
from callcenter.cases import close_case, open_case
from callcenter.demo_district import seed_district
from callcenter.logging_setup import configure_logging
from callcenter.models import Case, CaseEvent, CaseKind, CaseState, Elder, OutboxMessage
from volunteers import offers
from volunteers.catalog import PRIORITY_RANK, ServiceItem, get_catalog
from volunteers.matching import Candidate, haversine_m, match_volunteers, nearest_only
from volunteers.models import Offer, OfferStatus, Volunteer
from volunteers.task_flow import mark_arrived, submit_feedback

SHANGHAI = ZoneInfo("Asia/Shanghai")
SCHEDULER_TICK_S = 5  # schedules/dispatch_jobs.py OFFER_TICK_S

# Requests per local hour (relative): quiet nights, a morning peak, a smaller afternoon one.
HOURLY = (
    0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.5, 3.0, 5.0, 6.0, 6.0, 5.0,
    3.5, 3.0, 4.0, 4.5, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.3,
)  # fmt: skip
# Share of requests per category (percent). The seed article names health monitoring,
# housekeeping, repairs, daily-life care, comfort, legal and information help, and stresses small
# practical jobs (escorting, nail trimming, replacing appliances): these lead. Not requested ad
# hoc: emergency (operator first), visits (planned monthly), housing (repair projects).
CATEGORY_SHARE = {
    "appliances": 14, "repairs": 13, "housekeeping": 12, "health": 10, "errands": 9,
    "daily_care": 8, "medical_escort": 7, "personal_care": 7, "meals": 6, "comfort": 5,
    "outings": 3, "information": 2, "safety": 2, "legal": 1, "relief": 1,
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class People:
    """How volunteers answer an offer (assumptions, not measurements)."""

    silent: float = 0.25  # never answers (phone in a pocket, asleep, busy)
    answer_median_s: float = 60.0  # answer delay: lognormal, median grows with distance
    answer_s_per_km: float = 15.0
    answer_sigma: float = 0.8
    accept_base: float = 0.75  # P(accept | answers) = base - per_km·d - per_open·open - ...
    accept_per_km: float = 0.10
    accept_per_open_task: float = 0.20
    accept_per_task_today: float = 0.05
    drop_out: float = 0.03  # accepts, then withdraws 5–20 minutes later
    speed_kmh: float = 12.0  # e-bike across town
    service_median_min: float = 40.0  # on site: lognormal, sigma 0.5
    close_after_min: float = 15.0  # the operator's satisfaction call after the feedback


ASSUMPTIONS = """\
- Volume: {per_100} service requests per 100 elders per day ({requests} for {elders:,}
  elders). The public figure of 230,000 requests solved by 2023 is about 60 a day if spread over
  ten years (the start year is not in our sources): 1 per 100 is a busy day, 3 per 100 a storm.
- Time of day (Shanghai): relative weights per hour {hourly}; {night:.0%} fall between 22:00 and
  07:00, when no volunteer's window is open (they escalate to the operator at once).
- Categories (percent): {categories}; items uniform within a category; elders uniform.
- Volunteers: {silent:.0%} never answer an offer; the others answer after a lognormal delay
  (median {answer_median_s:.0f} s + {answer_s_per_km:.0f} s per km, sigma {answer_sigma}) and
  accept with probability {accept_base} - {accept_per_km}·km - {accept_per_open_task}·open
  tasks - {accept_per_task_today}·tasks done today (clamped to 0.05–0.95), else decline;
  an answer after the wave's window finds the offer expired. {drop_out:.0%} of acceptances
  withdraw 5–20 minutes later (the case goes back to matching). Travel at {speed_kmh:.0f} km/h,
  a lognormal {service_median_min:.0f} minutes on site, feedback on leaving, the operator closes
  {close_after_min:.0f} minutes later; a volunteer holds the task until the feedback.
- Each (case, volunteer) pair draws from its own random stream, the same under every policy."""


@dataclasses.dataclass(frozen=True)
class Request:
    number: int
    at: dt.datetime
    elder_id: int
    item: ServiceItem


def make_requests(
    rng: random.Random, day: dt.date, count: int, elder_ids: list[int]
) -> list[Request]:
    catalog = get_catalog()
    categories = list(CATEGORY_SHARE)
    requests = []
    for _ in range(count):
        hour = rng.choices(range(24), weights=HOURLY)[0]
        local = dt.datetime.combine(day, dt.time(hour), tzinfo=SHANGHAI) + dt.timedelta(
            seconds=rng.randrange(3600)
        )
        category = catalog.category(rng.choices(categories, weights=CATEGORY_SHARE.values())[0])
        item = rng.choice(category.items)
        requests.append((local.astimezone(dt.UTC), rng.choice(elder_ids), item))
    requests.sort(key=lambda r: r[0])
    return [Request(n, at, elder, item) for n, (at, elder, item) in enumerate(requests)]


# -- policies: what send_wave asks matching for --------------------------------------------------


def nearest_three(session: Session, **kwargs: Any) -> list[Candidate]:
    """The same waves, ranked by distance alone."""
    limit = kwargs.pop("limit")
    everyone = match_volunteers(session, limit=100_000, **kwargs)
    return sorted(everyone, key=lambda c: (c.distance_m, c.volunteer_id))[:limit]


def nearest_one(session: Session, **kwargs: Any) -> list[Candidate]:
    kwargs.pop("limit")
    nearest = nearest_only(session, **kwargs)
    return [nearest] if nearest is not None else []


POLICIES: dict[str, Callable[..., list[Candidate]] | None] = {
    "ranked waves of 3 (this system)": None,
    "nearest 3 per wave (distance only)": nearest_three,
    "nearest volunteer only (baseline)": nearest_one,
}


# -- the day ---------------------------------------------------------------------------------


class Day:
    """An event queue over a simulated clock, driving the centre's own functions."""

    def __init__(self, engine: Engine, people: People, seed: int, clock: Any) -> None:
        self.engine, self.people, self.seed, self.clock = engine, people, seed, clock
        self.queue: list[tuple[dt.datetime, int, str, Any]] = []
        self.order = itertools.count()
        self.ticks: set[dt.datetime] = set()
        self.last_offer_id = 0
        self.case_number: dict[int, int] = {}  # case id → request number (random streams)
        self.case_elder: dict[int, int] = {}
        self.open_tasks: Counter[int] = Counter()
        self.done_today: Counter[int] = Counter()
        with Session(engine) as s:
            self.homes = {
                vid: (lat, lon)
                for vid, lat, lon in s.execute(
                    select(Volunteer.id, Volunteer.home_latitude, Volunteer.home_longitude)
                ).tuples()
            }
            self.elders = {
                eid: (lat, lon)
                for eid, lat, lon in s.execute(
                    select(Elder.id, Elder.latitude, Elder.longitude)
                ).tuples()
            }

    def at(self, when: dt.datetime, kind: str, payload: Any = None) -> None:
        heapq.heappush(self.queue, (when, next(self.order), kind, payload))

    @contextmanager
    def unit(self, now: dt.datetime) -> Iterator[Session]:
        """One unit of work at ``now``, as a web request or a job run would be."""
        self.clock.move_to(now)
        with Session(self.engine) as session:
            yield session
            session.commit()
            self.watch_new_offers(session, now)

    def run(self, requests: list[Request]) -> None:
        for request in requests:
            self.at(request.at, "request", request)
        while self.queue:
            now, _, kind, payload = heapq.heappop(self.queue)
            getattr(self, f"on_{kind}")(now, payload)

    # Each new offer: when its wave's timer fires, and what its volunteer will do.
    def watch_new_offers(self, session: Session, now: dt.datetime) -> None:
        new = session.execute(
            select(Offer.id, Offer.case_id, Offer.volunteer_id, Offer.expires_at)
            .where(Offer.id > self.last_offer_id)
            .order_by(Offer.id)
        ).tuples()
        for offer_id, case_id, vid, expires in new:
            self.last_offer_id = offer_id
            tick = expires + dt.timedelta(seconds=-expires.timestamp() % SCHEDULER_TICK_S)
            if tick not in self.ticks:
                self.ticks.add(tick)
                self.at(tick, "tick")
            self.plan_answer(now, offer_id, case_id, vid)

    def plan_answer(self, now: dt.datetime, offer_id: int, case_id: int, vid: int) -> None:
        p = self.people
        rng = random.Random(f"{self.seed}:{self.case_number[case_id]}:{vid}")
        silent, u_accept, u_delay = rng.random(), rng.random(), rng.gauss(0.0, 1.0)
        if silent < p.silent:
            return
        km = self.distance_km(case_id, vid)
        delay = (p.answer_median_s + p.answer_s_per_km * km) * math.exp(p.answer_sigma * u_delay)
        accept = p.accept_base - p.accept_per_km * km
        accept -= p.accept_per_open_task * self.open_tasks[vid]
        accept -= p.accept_per_task_today * self.done_today[vid]
        yes = u_accept < min(0.95, max(0.05, accept))
        self.at(now + dt.timedelta(seconds=delay), "answer", (offer_id, case_id, vid, yes, rng))

    def distance_km(self, case_id: int, vid: int) -> float:
        return haversine_m(*self.elders[self.case_elder[case_id]], *self.homes[vid]) / 1000

    # -- events --

    def on_request(self, now: dt.datetime, request: Request) -> None:
        with self.unit(now) as session:
            case = open_case(
                session,
                kind=CaseKind.SERVICE,
                priority=PRIORITY_RANK[request.item.priority],
                actor="operator:sim",
                elder_id=request.elder_id,
                category_code=request.item.category_code,
                item_code=request.item.code,
                at=now,
            )
            self.case_number[case.id] = request.number
            self.case_elder[case.id] = request.elder_id
            offers.send_wave(session, case, actor="operator:sim", at=now)

    def on_tick(self, now: dt.datetime, _: None) -> None:
        self.clock.move_to(now)
        with Session(self.engine) as session:
            offers.expire_and_advance(session, now=now)  # commits per case itself
            self.watch_new_offers(session, now)

    def on_answer(self, now: dt.datetime, payload: tuple[int, int, int, bool, Any]) -> None:
        offer_id, case_id, vid, yes, rng = payload
        p = self.people
        with self.unit(now) as session:
            if not yes:
                offers.decline_offer(session, offer_id, at=now)
                return
            if offers.accept_offer(session, offer_id, at=now) != "accepted":
                return
        self.open_tasks[vid] += 1
        if rng.random() < p.drop_out:
            self.at(now + dt.timedelta(minutes=rng.uniform(5, 20)), "drop_out", (offer_id, vid))
            return
        travel = dt.timedelta(hours=self.distance_km(case_id, vid) / p.speed_kmh)
        on_site = dt.timedelta(minutes=p.service_median_min * math.exp(0.5 * rng.gauss(0, 1)))
        self.at(now + travel, "arrive", offer_id)
        self.at(now + travel + on_site, "feedback", (offer_id, case_id, vid, on_site))

    def on_drop_out(self, now: dt.datetime, payload: tuple[int, int]) -> None:
        offer_id, vid = payload
        with self.unit(now) as session:
            offers.drop_out(session, offer_id, at=now, reason="simulated: cannot go after all")
        self.open_tasks[vid] -= 1

    def on_arrive(self, now: dt.datetime, offer_id: int) -> None:
        with self.unit(now) as session:
            mark_arrived(session, offer_id, at=now)

    def on_feedback(self, now: dt.datetime, payload: tuple[int, int, int, dt.timedelta]) -> None:
        offer_id, case_id, vid, on_site = payload
        with self.unit(now) as session:
            minutes = max(1, round(on_site.total_seconds() / 60))
            submit_feedback(session, offer_id, what_was_done="已完成", minutes=minutes, at=now)
        self.open_tasks[vid] -= 1
        self.done_today[vid] += 1
        self.at(now + dt.timedelta(minutes=self.people.close_after_min), "close", case_id)

    def on_close(self, now: dt.datetime, case_id: int) -> None:
        with self.unit(now) as session:
            close_case(session, session.get_one(Case, case_id), actor="operator:sim",
                       satisfied=True, at=now)  # fmt: skip


# -- the report ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else math.nan


def gini(values: list[int]) -> float:
    """0 when everyone does the same, towards 1 when one does everything."""
    ordered = sorted(values)
    n, total = len(ordered), sum(ordered)
    if not n or not total:
        return 0.0
    weighted = sum((i + 1) * v for i, v in enumerate(ordered))
    return (2 * weighted) / (n * total) - (n + 1) / n


def measure(engine: Engine) -> dict[str, float]:
    with Session(engine) as s:
        cases = s.execute(select(Case.id, Case.opened_at, Case.elder_id)).tuples().all()
        accepted_at = dict(
            s.execute(
                select(CaseEvent.case_id, func.min(CaseEvent.at))
                .where(CaseEvent.to_state == CaseState.HANDLE.value)
                .group_by(CaseEvent.case_id)
            )
            .tuples()
            .all()
        )
        # The reason send_wave gave: nobody eligible at all, or every wave passed unanswered.
        escalated = dict(
            s.execute(
                select(CaseEvent.case_id, CaseEvent.detail).where(
                    CaseEvent.to_state == CaseState.ESCALATED.value
                )
            )
            .tuples()
            .all()
        )
        served = (
            s.execute(
                select(Offer.volunteer_id, Case.elder_id)
                .join(Case, Case.id == Offer.case_id)
                .where(Offer.status.in_((OfferStatus.ACCEPTED, OfferStatus.COMPLETED)))
            )
            .tuples()
            .all()
        )
        volunteers = (
            s.execute(
                select(Volunteer.id, Volunteer.home_latitude, Volunteer.home_longitude).where(
                    Volunteer.active.is_(True), Volunteer.on_duty.is_(True)
                )
            )
            .tuples()
            .all()
        )
        elders = {
            eid: (lat, lon)
            for eid, lat, lon in s.execute(select(Elder.id, Elder.latitude, Elder.longitude))
        }
        n_offers = s.scalar(select(func.count()).select_from(Offer)) or 0
        n_sms = s.scalar(select(func.count()).select_from(OutboxMessage)) or 0
    minutes = [
        (accepted_at[cid] - opened).total_seconds() / 60
        for cid, opened, _ in cases
        if cid in accepted_at
    ]
    homes = {vid: (lat, lon) for vid, lat, lon in volunteers}
    tasks = Counter(vid for vid, _ in served)
    per_volunteer = [tasks.get(vid, 0) for vid in homes]
    doers = [n for n in per_volunteer if n]
    km = [haversine_m(*homes[vid], *elders[eid]) / 1000 for vid, eid in served if vid in homes]
    mean_tasks = statistics.mean(per_volunteer) if per_volunteer else 0.0
    return {
        "requests": len(cases),
        "accepted": len(accepted_at),
        "median": statistics.median(minutes) if minutes else math.nan,
        "p90": percentile(minutes, 0.9),
        "escalated": len(escalated) / len(cases) if cases else 0.0,
        "no_candidate": sum(1 for d in escalated.values() if d.get("reason") == "no_candidates")
        / len(cases)
        if cases
        else 0.0,
        "volunteers_used": len(doers),
        "max_tasks": max(per_volunteer, default=0),
        "p90_tasks": percentile([float(n) for n in doers], 0.9),
        "gini": gini(per_volunteer),
        "cv": statistics.pstdev(per_volunteer) / mean_tasks if mean_tasks else 0.0,
        "km": statistics.mean(km) if km else math.nan,
        "offers": n_offers / len(cases) if cases else 0.0,
        "sms": n_sms / len(cases) if cases else 0.0,
    }


def play(
    template: Path, workdir: Path, name: str, per_100: float, args: argparse.Namespace
) -> dict[str, float]:
    path = workdir / f"{len(list(workdir.iterdir()))}.db"
    shutil.copyfile(template, path)
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        with Session(engine) as s:
            elder_ids = list(s.scalars(select(Elder.id).order_by(Elder.id)))
        count = round(len(elder_ids) * per_100 / 100)
        requests = make_requests(random.Random(args.seed), args.day, count, elder_ids)
        policy = POLICIES[name]
        started = time.perf_counter()
        with time_machine.travel(requests[0].at, tick=False) as clock:
            day = Day(engine, People(), args.seed, clock)
            if policy is None:
                day.run(requests)
            else:
                with mock.patch.object(offers, "match_volunteers", policy):
                    day.run(requests)
        result = measure(engine)
        result["seconds"] = time.perf_counter() - started
        return result
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--per-100",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[1.0, 3.0],
        help="requests per 100 elders per day; several (1,3) play several days",
    )
    parser.add_argument("--elders", type=int, default=13_500)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--day", type=dt.date.fromisoformat, default=dt.date(2026, 12, 1))
    args = parser.parse_args()
    configure_logging("ERROR")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        template = workdir / "district.db"
        engine = db.make_engine(f"sqlite:///{template}")
        migrate.upgrade(engine)
        with Session(engine) as s:
            summary = seed_district(s, seed=args.seed, elders=args.elders)
            s.commit()
        engine.dispose()
        runs = workdir / "runs"
        runs.mkdir()
        for per_100, name in itertools.product(args.per_100, POLICIES):
            r = play(template, runs, name, per_100, args)
            print(f"{per_100:g}/100, {name}: {r['seconds']:.1f} s", file=sys.stderr)
            rows.append(
                f"| {per_100:g} | {name} | {r['requests']:.0f} | {r['accepted']:.0f} | "
                f"{r['median']:.1f} | {r['p90']:.1f} | {r['escalated']:.1%} | "
                f"{r['no_candidate']:.1%} | {r['volunteers_used']:.0f} | "
                f"{r['max_tasks']:.0f} | {r['p90_tasks']:.0f} | {r['gini']:.2f} | {r['cv']:.2f} | "
                f"{r['km']:.2f} | {r['offers']:.1f} | {r['sms']:.1f} |"
            )
    people = People()
    night = sum(HOURLY[h] for h in (*range(22, 24), *range(0, 7))) / sum(HOURLY)
    command = " ".join([".venv/bin/python", *sys.argv])
    print(f"\n`{command}` — SQLite, {summary.elders:,} elders, {summary.volunteers} volunteers, "
          f"{args.day} (Shanghai), {time.perf_counter() - started:.0f} s in all\n")  # fmt: skip
    print(
        "| requests per 100 elders | policy | requests | accepted | median min to accept "
        "| p90 min | escalated | of which: nobody (left) to ask | volunteers used "
        "| max tasks/volunteer | p90 tasks (of those used) | Gini (all on duty) "
        "| CV | mean km to elder | offers/request | SMS/request |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    text = ASSUMPTIONS.format(
        per_100=" and ".join(f"{x:g}" for x in args.per_100),
        requests=" and ".join(str(round(summary.elders * x / 100)) for x in args.per_100),
        elders=summary.elders,
        hourly=", ".join(f"{w:g}" for w in HOURLY),
        night=night,
        categories=", ".join(f"{k} {v}" for k, v in CATEGORY_SHARE.items()),
        **dataclasses.asdict(people),
    )
    # One bullet per assumption, wrapped for the Markdown file.
    for bullet in text.removeprefix("- ").split("\n- "):
        print(
            textwrap.fill(
                " ".join(bullet.split()), 100, initial_indent="- ", subsequent_indent="  "
            )
        )


if __name__ == "__main__":
    main()
