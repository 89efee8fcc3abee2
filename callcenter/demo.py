"""``hyt demo``: the whole centre on one machine, on the embedded default (SQLite).

The demo district is created, the centre starts (web console, call handler with SCAIP on the same
socket), simulated terminals place real SIP calls, volunteers answer through the real, signed SMS
webhook, and the case runs dispatch → handle → feedback → close. A narrated timeline prints as it
happens. ``--once`` runs the script and exits 0 only if every step happened as expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from callcenter import db, migrate
from callcenter.demo_district import seed_district
from callcenter.logging_setup import configure_logging
from callcenter.models import Alarm, AlarmKind, Case, CaseEvent, Elder, Role
from callcenter.settings import Settings, get_settings
from callcenter.web.auth import add_user
from devices import contact_id
from devices.models import Terminal, TerminalProtocol
from devices.simulator import press, send_scaip
from volunteers.models import AvailabilityWindow, Offer, Volunteer, VolunteerSkill
from volunteers.outbox_sender import ConsoleBackend, send_due
from volunteers.sms_settings import webhook_auth_token

DEMO_LOGINS = (
    ("operator", "演示接警员 demo operator", Role.OPERATOR, "hyt-demo-operator"),
    ("supervisor", "演示班长 demo supervisor", Role.SUPERVISOR, "hyt-demo-supervisor"),
)


class DemoFailed(RuntimeError):
    pass


def free_port(kind: int = socket.SOCK_DGRAM, preferred: int = 0) -> int:
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            found: int = s.getsockname()[1]
            return found
    raise OSError("no free port")


@dataclass
class Timeline:
    console: Console
    started: float = field(default_factory=time.monotonic)
    failures: list[str] = field(default_factory=list)

    def say(self, zh: str, en: str, ok: bool = True) -> None:
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        self.console.print(f"{time.monotonic() - self.started:6.1f}s {mark} {zh}  [dim]{en}[/dim]")
        if not ok:
            self.failures.append(en)

    def check(self, condition: bool, zh: str, en: str) -> None:
        self.say(zh, en, ok=condition)


class Demo:
    def __init__(
        self, console: Console, *, database: Path, elders: int, screenshots: Path | None = None
    ) -> None:
        self.console = console
        self.database = database
        self.elders = elders
        self.screenshots = screenshots
        self.t = Timeline(console)
        self.http: httpx.AsyncClient | None = None
        self.settings: Settings = get_settings()

    # -- helpers -------------------------------------------------------------------------

    def query(self, fn: Callable[[Session], Any]) -> Any:
        with db.session_factory()() as session:
            return fn(session)

    async def in_thread(self, fn: Callable[[Session], Any]) -> Any:
        return await asyncio.to_thread(self.query, fn)

    async def wait_for(self, fn: Callable[[Session], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.in_thread(fn)
            if value or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.2)

    async def sms_reply(self, phone: str, body: str) -> str:
        """A volunteer's SMS, as Twilio would deliver it: signed, to the real webhook."""
        assert self.http is not None
        path = "/webhooks/twilio/sms"
        params = {"From": phone, "Body": body, "MessageSid": f"SMdemo{time.time_ns()}"}
        url = self.settings.public_base_url.rstrip("/") + path
        signature = RequestValidator(webhook_auth_token()).compute_signature(url, params)
        response = await self.http.post(
            path, data=params, headers={"X-Twilio-Signature": signature}
        )
        response.raise_for_status()
        return response.text

    async def send_outbox(self) -> None:
        """The SMS sender (console backend): the texts print in the timeline."""
        sent = await asyncio.to_thread(send_due, db.session_factory(), ConsoleBackend())
        if sent:
            self.console.print(
                f"         [dim]↑ {sent} 条短信已发出 SMS sent (console backend)[/dim]"
            )

    # -- the script ------------------------------------------------------------------------

    def prepare_database(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.database}{suffix}").unlink(missing_ok=True)
        engine = db.make_engine(f"sqlite:///{self.database}")
        db.use_engine(engine)
        migrate.upgrade(engine)
        with db.session_scope() as session:
            summary = seed_district(session, elders=self.elders)
            for username, name, role, password in DEMO_LOGINS:
                add_user(
                    session, username=username, password=password, role=role, display_name=name
                )
        self.t.say(
            f"龙湖区演示辖区已建立：{summary.elders} 位老人、{summary.terminals} 台终端、"
            f"{summary.volunteers} 位志愿者",
            f"demo district created: {summary.elders} elders, {summary.terminals} "
            f"terminals, {summary.volunteers} volunteers",
        )

    def pick(self, protocol: TerminalProtocol, skip: int = 0) -> tuple[Terminal, Elder]:
        def find(session: Session) -> tuple[Terminal, Elder]:
            row = session.execute(
                select(Terminal, Elder)
                .join(Elder, Elder.id == Terminal.elder_id)
                .where(Terminal.protocol == protocol)
                .order_by(Terminal.id)
                .offset(skip)
                .limit(1)
            ).one()
            session.expunge_all()
            return row[0], row[1]

        result: tuple[Terminal, Elder] = self.query(find)
        return result

    def add_demo_volunteers(self, elder: Elder) -> list[str]:
        """Three volunteers on duty around the clock near the service elder, so that the demo
        works at any hour (the seeded ones keep their own weekly windows)."""
        phones = []
        with db.session_scope() as session:
            for n, (name, dlat) in enumerate(
                (("陈晓燕", 0.002), ("黄志伟", 0.004), ("蔡思敏", 0.006))
            ):
                volunteer = Volunteer(
                    code=f"DEMO{n + 1}",
                    name=name,
                    phone=f"+861390000{n + 1:04d}",
                    community=elder.community,
                    home_latitude=elder.latitude + dlat,
                    home_longitude=elder.longitude,
                    rating=4.9 - n * 0.1,
                    skills=[VolunteerSkill(category_code="appliances", level=2)],
                    availability=[
                        AvailabilityWindow(weekday=d, start_minute=0, end_minute=1440)
                        for d in range(7)
                    ],
                )
                session.add(volunteer)
                phones.append(volunteer.phone)
        return phones

    async def presses(self, centre: tuple[str, int]) -> tuple[Terminal, Elder]:
        sos_terminal, sos_elder = self.pick(TerminalProtocol.DTMF, 0)
        service_terminal, service_elder = self.pick(TerminalProtocol.DTMF, 1)
        cid_terminal, cid_elder = self.pick(TerminalProtocol.CONTACT_ID, 0)
        scaip_terminal, _ = self.pick(TerminalProtocol.SCAIP, 0)
        digit = {"sos": "1", "service": "2", "cancel": "9"}

        result = await press(
            centre, sip_user=sos_terminal.sip_user or "", digits=digit["sos"], hold_s=1.0
        )
        sos = await self.wait_for(
            lambda s: s.scalars(
                select(Alarm).where(
                    Alarm.terminal_id == sos_terminal.id, Alarm.kind == AlarmKind.LIFE_SAFETY
                )
            ).first()
        )
        self.t.check(
            result.answered and sos is not None,
            f"{sos_elder.name}按下紧急按钮：真实 SIP 呼叫已接通，告警已存入，接警员处理",
            "SOS press: real SIP call answered, alarm stored before the prompt, "
            "held for an operator",
        )

        result = await press(
            centre, sip_user=service_terminal.sip_user or "", digits=digit["service"]
        )
        service = await self.wait_for(
            lambda s: s.scalars(
                select(Alarm).where(
                    Alarm.terminal_id == service_terminal.id, Alarm.kind == AlarmKind.SERVICE
                )
            ).first()
        )
        self.t.check(
            result.answered and service is not None and service.case_id is not None,
            f"{service_elder.name}按下服务键（要更换灯泡）：服务工单已建立",
            "service press (a light bulb to replace): service case opened",
        )

        message = contact_id.encode(cid_terminal.account or "0000", "101", zone="001")
        result = await press(centre, sip_user=cid_terminal.sip_user or "", contact_id=[message])
        self.t.check(
            result.kiss_offs == 1,
            f"{cid_elder.name}的无线吊坠报警（Contact ID 101）：校验通过，入库后发出确认音",
            "pendant alarm (Contact ID 101): checksum OK, kiss-off after the commit",
        )

        scaip = await send_scaip(
            centre,
            cid=scaip_terminal.account or "",
            ref="1",
            mty="PI",
            stc=None,
            sip_user=scaip_terminal.sip_user,
        )
        self.t.check(
            scaip.ok,
            "SCAIP 终端心跳：200 OK + <mrs> snu 0，不建工单",
            "SCAIP heartbeat: 200 OK and <mrs> snu 0, no case",
        )

        await press(centre, sip_user=sos_terminal.sip_user or "", digits=digit["sos"], hold_s=0.5)
        repeat = await self.wait_for(
            lambda s: (
                len(s.scalars(select(Alarm).where(Alarm.terminal_id == sos_terminal.id)).all()) >= 2
            )
        )
        cases = self.query(
            lambda s: {
                a.case_id
                for a in s.scalars(select(Alarm).where(Alarm.terminal_id == sos_terminal.id))
            }
        )
        self.t.check(
            bool(repeat) and len(cases) == 1,
            "同一老人再次按键：并入同一工单，不重复建单",
            "repeat press: attached to the same open case",
        )

        await press(centre, sip_user=sos_terminal.sip_user or "", digits=digit["cancel"])
        cancel = await self.wait_for(
            lambda s: s.scalars(
                select(CaseEvent).where(CaseEvent.event == "cancel_requested")
            ).first()
        )
        self.t.check(
            cancel is not None,
            "老人按取消键：记入工单，接警员回电确认平安",
            "cancel press: noted on the case; the operator calls back to confirm",
        )
        return service_terminal, service_elder

    async def dispatch_loop(self, service_elder: Elder) -> None:
        assert self.http is not None
        http = self.http
        self.add_demo_volunteers(service_elder)
        login = await http.post(
            "/api/session", json={"username": "operator", "password": DEMO_LOGINS[0][3]}
        )
        login.raise_for_status()
        case_id = self.query(
            lambda s: s.scalars(select(Case.id).where(Case.elder_id == service_elder.id)).first()
        )
        case = (
            await http.patch(
                f"/api/cases/{case_id}",
                json={
                    "item_code": "appliances.replace_bulb",
                    "summary": "客厅灯泡坏了，老人看不清",
                },
            )
        ).json()
        candidates = (await http.get(f"/api/cases/{case_id}/candidates")).json()
        self.t.check(
            len(candidates) >= 3,
            f"接警员选择服务项目“更换灯泡”，系统推荐 {len(candidates)} 位志愿者："
            f"{candidates[0]['explain_zh']}",
            "operator picks the item; ranked volunteers with their scores explained",
        )
        wave = (await http.post(f"/api/cases/{case_id}/dispatch")).json()
        self.t.check(
            len(wave["offered_volunteer_ids"]) == 3,
            f"一键派单：工单 {case['code']} 同时发给 3 位志愿者（短信 + 签名链接）",
            "one-click dispatch: offered to 3 volunteers at once (SMS + signed link)",
        )
        await self.send_outbox()

        offered_phones = self.query(
            lambda s: list(
                s.scalars(
                    select(Volunteer.phone)
                    .join(Offer, Offer.volunteer_id == Volunteer.id)
                    .where(Offer.case_id == case_id)
                    .order_by(Offer.id)
                )
            )
        )
        await self.sms_reply(offered_phones[0], "2")
        self.t.say(
            "第一位志愿者回复“2”：不能前往（经 Twilio 签名校验的真实 webhook）",
            "first volunteer replies 2: declines (through the real, signed webhook)",
        )
        answer = await self.sms_reply(offered_phones[1], f"接 {case['code']}")
        detail = (await http.get(f"/api/cases/{case_id}")).json()
        statuses = sorted(o["status"] for o in detail["offers"])
        self.t.check(
            detail["state"] == "handle" and statuses == ["accepted", "declined", "stood_down"],
            "第二位志愿者回复“接”：抢单成功；其余志愿者即刻收到“无需前往”",
            "second volunteer accepts first; the others are stood down at once",
        )
        await self.send_outbox()
        link = answer.split("/v/offer/")[1].split("<")[0].split()[0]
        await http.post(f"/v/offer/{link}/arrived")
        await http.post(
            f"/v/offer/{link}/feedback",
            data={"what_was_done": "更换了客厅灯泡，检查了电线", "minutes": "25"},
        )
        state = (await http.get(f"/api/cases/{case_id}")).json()["state"]
        self.t.check(
            state == "feedback",
            "志愿者在手机页面标记到达并提交反馈（用时 25 分钟）",
            "volunteer marks arrival and sends feedback from the phone page",
        )
        closed = (
            await http.post(
                f"/api/cases/{case_id}/close",
                json={"satisfied": True, "note": "电话回访，老人满意"},
            )
        ).json()
        events = len((await http.get(f"/api/cases/{case_id}")).json()["events"])
        self.t.check(
            closed["state"] == "closed",
            f"接警员电话回访满意，办结。工单日志共 {events} 条",
            f"operator confirms satisfaction; case closed with {events} events logged",
        )

    async def visits(self) -> None:
        """A month of follow-up visits planned; one recorded with a finding that opens a case."""
        from schedules.models import Visit, VisitStatus
        from schedules.visit_planner import plan_period
        from schedules.visit_record import record_visit

        now = dt.datetime.now(dt.UTC)
        month = now.astimezone(self.settings.tz).strftime("%Y-%m")

        def plan(session: Session) -> tuple[int, int]:
            summary = plan_period(session, month=month, now=now)
            session.commit()
            return sum(summary.created.values()), summary.elders_due

        created, due = await asyncio.to_thread(lambda: self.query(plan))
        self.t.check(
            created > 0,
            f"{month} 月度探访计划：{due} 位老人，新建 {created} 次探访",
            f"{month} visit plan: {due} elders due, {created} visits created",
        )

        def record(session: Session) -> str:
            visit = session.scalars(
                select(Visit).where(Visit.status == VisitStatus.PLANNED).order_by(Visit.id)
            ).first()
            if visit is None:
                return ""
            checklist = {
                "health": True,
                "mood": True,
                "food": True,
                "utilities_safe": False,
                "terminal_tested": True,
                "terminal_worn": True,
            }
            finding = record_visit(
                session,
                visit.id,
                seen_in_person=True,
                checklist=checklist,
                needs="厨房燃气软管老化，需要更换",
                notes="老人精神很好",
            )
            session.commit()
            return finding.case.code if finding.case else ""

        code = await asyncio.to_thread(lambda: self.query(record))
        self.t.check(
            bool(code),
            f"志愿者上门探访并记录：发现燃气软管老化，已生成工单 {code}",
            f"a visit recorded with a finding (an old gas hose): case {code} opened",
        )

    async def run(self, *, once: bool) -> int:
        # The timeline is the story; the centre's own logs would drown it (they still go to
        # stderr for warnings and errors).
        configure_logging("WARNING")
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.console.rule("呼援通 HuYuanTong 演示 demo")
        with self.console.status("建库并生成演示辖区 creating the demo district …"):
            await asyncio.to_thread(self.prepare_database)
        http_port = free_port(socket.SOCK_STREAM, 0 if once else self.settings.http_port)
        sip_port = free_port(socket.SOCK_DGRAM, 0 if once else self.settings.sip_port)
        base = f"http://127.0.0.1:{http_port}"
        self.settings = Settings.model_validate(
            {
                **self.settings.model_dump(),
                "database_url": f"sqlite:///{self.database}",
                "http_host": "127.0.0.1",
                "http_port": http_port,
                "sip_host": "127.0.0.1",
                "sip_port": sip_port,
                "public_base_url": base,
            }
        )
        get_settings.cache_clear()
        os.environ["HYT_PUBLIC_BASE_URL"] = base  # the links and the webhook signatures use it
        from callcenter.server import start_all

        async with AsyncExitStack() as stack:
            with self.console.status("启动中心 starting the centre …"):
                # The demo sends its SMS itself, so that they print in the timeline, and plans
                # its visits itself, so that the plan is a step it can show (no scheduler).
                await start_all(self.settings, stack, background_jobs=False, scheduler=False)
            self.t.say(
                f"中心已启动：网页 {base}，呼叫处理 SIP 127.0.0.1:{sip_port}（含 SCAIP）",
                f"centre running: web {base}, call handler sip:127.0.0.1:{sip_port} with SCAIP",
            )
            self.http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base, timeout=30)
            )
            try:
                with self.console.status("模拟终端呼入 simulated terminals calling …"):
                    _, service_elder = await self.presses(("127.0.0.1", sip_port))
                await self.dispatch_loop(service_elder)
                await self.visits()
                if self.screenshots is not None:
                    await self.take_screenshots(base, self.screenshots)
            except Exception as exc:  # a step that broke: say which, fail the run
                self.t.say(f"演示中断：{exc!r}", f"demo step failed: {exc!r}", ok=False)
            self.summary(base)
            if not once and not self.t.failures:
                self.console.print(
                    "[bold]中心保持运行，按 Ctrl-C 退出 — the centre keeps running "
                    "until Ctrl-C[/bold]"
                )
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()
        return 1 if self.t.failures else 0

    async def take_screenshots(self, base: str, out_dir: Path) -> None:
        from callcenter.demo_screenshots import ScreenshotsUnavailable, take_screenshots

        username, _, _, password = DEMO_LOGINS[0]
        try:
            with self.console.status("为控制台截图 photographing the console …"):
                files = await take_screenshots(base, username, password, out_dir)
        except ScreenshotsUnavailable as exc:
            self.t.say(f"无法截图：{exc}", f"no screenshots: {exc}", ok=False)
            return
        names = ", ".join(str(f) for f in files)
        self.t.check(len(files) == 2, f"控制台截图：{names}", f"console screenshots: {names}")

    def summary(self, base: str) -> None:
        table = Table(title="演示账号 demo logins (development only)")
        table.add_column("用户 user")
        table.add_column("角色 role")
        table.add_column("密码 password")
        for username, name, role, password in DEMO_LOGINS:
            table.add_row(username, f"{name} ({role.value})", password)
        self.console.print(table)
        self.console.print(
            f"控制台 console: {base}/console   ·   API: {base}/docs   ·   "
            f"数据库 database: {self.database}"
        )
        verdict = (
            "全部步骤成功 every step happened"
            if not self.t.failures
            else (f"{len(self.t.failures)} 个步骤失败 steps failed: {self.t.failures}")
        )
        self.console.print(f"[bold]{verdict}[/bold]")


def run_demo(
    console: Console,
    *,
    database: Path,
    elders: int,
    once: bool = False,
    screenshots: Path | None = None,
) -> int:
    """The demo as a process: returns its exit code."""
    demo = Demo(console, database=database, elders=elders, screenshots=screenshots)
    try:
        return asyncio.run(demo.run(once=once))
    except KeyboardInterrupt:
        return 0
