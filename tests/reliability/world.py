"""A small district for the reliability tests: console users of every role, an elder with
distinctive personal data, volunteers, and factories for fresh alarms, cases, offers and visits,
so that each request of a test acts on objects nobody else touched."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from callcenter.cases import open_case, transition
from callcenter.db import utcnow
from callcenter.intake import Press, record_alarm
from callcenter.models import AlarmKind, AlarmSource, Case, CaseKind, CaseState, Role
from callcenter.web.auth import add_user, session_token
from devices.models import TerminalProtocol
from schedules.models import Visit, VisitKind, VisitStatus
from tests.factories import make_elder, make_terminal
from volunteers.links import make_token
from volunteers.models import AvailabilityWindow, Offer, OfferStatus, Volunteer, VolunteerSkill

PASSWORD = "correct horse battery"
ITEM = "appliances.replace_bulb"
STAFF = {"operator": Role.OPERATOR, "supervisor": Role.SUPERVISOR, "admin": Role.ADMIN}
_serial = itertools.count(1)

# The elder's personal data: none of it may reach an SMS or a log line.
ELDER = {
    "name": "欧阳翠芬",
    "phone": "+8613922334455",
    "address": "金砂东路88号7栋1203室",
    "medical_notes": "阿尔茨海默病早期，心脏起搏器",
    "access_notes": "钥匙藏在门口鞋柜第二层",
    "medications": ["多奈哌齐"],
    "allergies": ["磺胺类"],
}
CONTACT = {"name": "欧阳志强", "phone": "+8613811112222"}


@dataclass
class World:
    engine: Engine
    elder_id: int
    terminal_id: int
    volunteer_ids: list[int]
    user_ids: dict[str, int]
    session_tokens: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s
            s.commit()

    def new_alarm(self, kind: AlarmKind = AlarmKind.SERVICE) -> int:
        with self.session() as s:
            recorded = record_alarm(
                s,
                Press(
                    source=AlarmSource.DTMF,
                    kind=kind,
                    dedup_key=f"w-{next(_serial)}",
                    terminal_id=self.terminal_id,
                    elder_id=self.elder_id,
                ),
                repeat_window_s=0,  # every alarm its own case: nothing attaches elsewhere
            )
        return recorded.alarm_id

    def new_case(self, state: CaseState = CaseState.DISPATCH, *, item: bool = True) -> int:
        with self.session() as s:
            case = open_case(
                s,
                kind=CaseKind.SERVICE,
                priority=2,
                actor="test",
                elder_id=self.elder_id,
                category_code="appliances" if item else None,
                item_code=ITEM if item else None,
                summary="客厅灯泡坏了",
            )
            path = {
                CaseState.DISPATCH: [],
                CaseState.HANDLE: [CaseState.HANDLE],
                CaseState.FEEDBACK: [CaseState.HANDLE, CaseState.FEEDBACK],
            }[state]
            for to_state in path:
                transition(s, case, to_state, actor="test")
            return case.id

    def new_offer(self, *, accepted: bool = False, volunteer: int = 0) -> tuple[int, int, str]:
        """(offer id, case id, the volunteer's signed link token) for a fresh case."""
        case_id = self.new_case(CaseState.HANDLE if accepted else CaseState.DISPATCH)
        volunteer_id = self.volunteer_ids[volunteer]
        with self.session() as s:
            now = utcnow()
            offer = Offer(
                case_id=case_id,
                volunteer_id=volunteer_id,
                wave=1,
                status=OfferStatus.ACCEPTED if accepted else OfferStatus.PENDING,
                sent_at=now,
                expires_at=now + dt.timedelta(hours=1),
                responded_at=now if accepted else None,
            )
            s.add(offer)
            if accepted:
                s.get_one(Case, case_id).assigned_volunteer_id = volunteer_id
            s.flush()
            return offer.id, case_id, make_token("offer", offer.id, case_id)

    def new_visit(self, *, volunteer: int = 0, planned: dt.date | None = None) -> tuple[int, str]:
        """(visit id, the assigned volunteer's signed link token) for a planned visit."""
        volunteer_id = self.volunteer_ids[volunteer]
        planned = planned or dt.date.today() + dt.timedelta(days=1)
        with self.session() as s:
            visit = Visit(
                elder_id=self.elder_id,
                volunteer_id=volunteer_id,
                kind=VisitKind.EXTRA,
                period=f"t{next(_serial)}",
                planned_date=planned,
                window_end=planned + dt.timedelta(days=6),
                status=VisitStatus.PLANNED,
            )
            s.add(visit)
            s.flush()
            return visit.id, make_token("visit", visit.id, volunteer_id)


def build_world(
    engine: Engine, *, volunteers: int = 6, staff: tuple[str, ...] = tuple(STAFF)
) -> World:
    """``staff``: the console roles to create (each costs an argon2 hash)."""
    with Session(engine, expire_on_commit=False) as s:
        users = {
            name: add_user(
                s,
                username=f"{name}-{next(_serial)}",
                password=PASSWORD,
                role=role,
                display_name=f"{name} 测试",
            )
            for name, role in STAFF.items()
            if name in staff
        }
        elder = make_elder(s, **ELDER)  # type: ignore[arg-type]
        elder.contacts[0].name, elder.contacts[0].phone = CONTACT["name"], CONTACT["phone"]
        terminal = make_terminal(s, elder, TerminalProtocol.DTMF)
        volunteer_ids = []
        for n in range(volunteers):
            serial = next(_serial)
            volunteer = Volunteer(
                code=f"RV{serial:05d}",
                name=f"志愿者甲{serial}",
                phone=f"+86137{serial:08d}",
                community="金湖社区",
                home_latitude=23.365 + n * 0.001,
                home_longitude=116.705,
                max_concurrent_tasks=100,
                skills=[
                    VolunteerSkill(category_code="appliances", level=2),
                    VolunteerSkill(category_code="visits", level=1),
                ],
                availability=[
                    AvailabilityWindow(weekday=d, start_minute=0, end_minute=1440) for d in range(7)
                ],
            )
            s.add(volunteer)
            s.flush()
            volunteer_ids.append(volunteer.id)
        s.commit()
        world = World(
            engine=engine,
            elder_id=elder.id,
            terminal_id=terminal.id,
            volunteer_ids=volunteer_ids,
            user_ids={name: user.id for name, user in users.items()},
            session_tokens={name: session_token(user) for name, user in users.items()},
        )
    return world
