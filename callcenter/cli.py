"""The ``hyt`` command: one CLI for every process and chore of the centre."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from callcenter import db, migrate
from callcenter.logging_setup import configure_logging
from callcenter.settings import Settings

if TYPE_CHECKING:
    from devices.models import TerminalProtocol

app = typer.Typer(
    help="呼援通 HuYuanTong — elderly emergency-call and volunteer-dispatch centre.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()


@app.callback()
def _startup() -> None:
    configure_logging()


def _session_ready() -> None:
    """Stop with a clear message, not a traceback, when the schema is missing or old."""
    try:
        migrate.require_head(db.get_engine())
    except migrate.SchemaNotReady as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or migrate the database at HYT_DATABASE_URL to the newest schema."""
    migrate.upgrade(db.get_engine(), revision)
    console.print(f"[green]database at revision {revision}[/green]")


@db_app.command("check")
def db_check() -> None:
    """Fail if the models and the migrations disagree (run in CI)."""
    migrate.check(db.get_engine())
    console.print("[green]no schema drift[/green]")


class ImportKind(StrEnum):
    elders = "elders"
    volunteers = "volunteers"
    terminals = "terminals"


@app.command("import")
def import_file(
    kind: ImportKind,
    path: Annotated[Path, typer.Argument(help="CSV (UTF-8 or GB18030) or XLSX file")],
    commit: Annotated[bool, typer.Option("--commit", help="write; default is a dry run")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Import elders, volunteers or terminals: all rows or none. 导入老人、志愿者或终端。"""
    from callcenter.importers import importer_for
    from callcenter.importing import run_import

    _session_ready()
    with db.session_factory()() as session:
        report = run_import(importer_for(kind.value), path, session, commit=commit)
    if as_json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        for error in report.errors:
            console.print(f"[red]✗[/red] {error}", highlight=False)
        verdict = (
            "[green]已导入 imported[/green]"
            if report.committed
            else (
                "[yellow]检查通过 dry run OK (use --commit)[/yellow]"
                if report.ok
                else "[red]未导入 nothing imported[/red]"
            )
        )
        console.print(
            f"{kind.value}: {report.rows} rows, {report.valid_rows} valid, "
            f"{len(report.errors)} problems — {verdict}"
        )
    raise typer.Exit(0 if report.ok else 1)


@app.command("sip")
def sip(
    backend: Annotated[str | None, typer.Option(help="aiosipua (default) or pyvoip")] = None,
    port: Annotated[int | None, typer.Option(help="SIP port (HYT_SIP_PORT)")] = None,
) -> None:
    """Run the call handler: terminals call in, presses become alarms. 呼叫处理。"""
    import asyncio

    from callcenter.settings import get_settings
    from callcenter.sip.runner import serve_until_signalled

    settings = _with_overrides(get_settings(), sip_backend=backend, sip_port=port)
    _session_ready()
    asyncio.run(serve_until_signalled(settings, calls=True, scaip=True))


@app.command("scaip")
def scaip(
    port: Annotated[int | None, typer.Option(help="SCAIP port (HYT_SCAIP_PORT)")] = None,
) -> None:
    """Run the SCAIP ingress alone (SIP MESSAGE application/scaip+xml). SCAIP 接入。"""
    import asyncio

    from callcenter.settings import get_settings
    from callcenter.sip.runner import serve_until_signalled

    settings = _with_overrides(get_settings(), scaip_port=port)
    _session_ready()
    asyncio.run(serve_until_signalled(settings, calls=False, scaip=True))


def _with_overrides(settings: Settings, **changes: object) -> Settings:
    """Command-line options win over HYT_* variables; the result is validated again."""
    values = {k: v for k, v in changes.items() if v is not None}
    return Settings.model_validate({**settings.model_dump(), **values}) if values else settings


user_app = typer.Typer(help="Console accounts. 账号。", no_args_is_help=True)
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="operator, supervisor or admin")] = "operator",
    name: Annotated[str, typer.Option(help="display name, e.g. 张接警")] = "",
    password: Annotated[
        str | None, typer.Option(help="default: asked for (or read from stdin when piped)")
    ] = None,
) -> None:
    """Create a console account (argon2-hashed password). 创建账号。"""
    from callcenter.models import Role
    from callcenter.web.auth import UserError, add_user

    try:
        role_value = Role(role)
    except ValueError:
        console.print(f"[red]role must be one of {', '.join(r.value for r in Role)}[/red]")
        raise typer.Exit(2) from None
    if password is None:
        password = (
            sys.stdin.readline().rstrip("\n")
            if not sys.stdin.isatty()
            else typer.prompt("password / 密码", hide_input=True, confirmation_prompt=True)
        )
    _session_ready()
    try:
        with db.session_scope() as session:
            add_user(session, username=username, password=password, role=role_value,
                     display_name=name)  # fmt: skip
    except UserError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[green]✓ {username} ({role_value.value})[/green]")


@app.command("web")
def web(
    host: Annotated[str | None, typer.Option(help="HYT_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="HYT_HTTP_PORT")] = None,
) -> None:
    """Run the web console and API alone. 网页控制台。"""
    import uvicorn

    from callcenter.settings import get_settings
    from callcenter.web.app import create_app

    settings = _with_overrides(get_settings(), http_host=host, http_port=port)
    _session_ready()
    uvicorn.run(create_app(), host=settings.http_host, port=settings.http_port, log_level="info")


@app.command("serve")
def serve() -> None:
    """Run everything in one process (small site): web, call handler, SCAIP. 一体化运行。"""
    import asyncio

    from callcenter.server import serve_all
    from callcenter.settings import get_settings

    _session_ready()
    asyncio.run(serve_all(get_settings()))


@app.command("scheduler")
def scheduler() -> None:
    """Run the scheduler: visits, overdue sweep, terminal watchdog, offer timers, SMS outbox.
    One is active per database (PostgreSQL advisory lock); a second one waits. 定时任务。"""
    from callcenter.settings import get_settings
    from schedules import dispatch_jobs, reminders  # noqa: F401  (their import registers the jobs)
    from schedules.runner import run_scheduler

    _session_ready()
    run_scheduler(get_settings())


visits_app = typer.Typer(help="Follow-up home visits. 探访。", no_args_is_help=True)
app.add_typer(visits_app, name="visits")


@visits_app.command("plan")
def visits_plan(
    month: Annotated[str, typer.Option(help="YYYY-MM")],
) -> None:
    """Plan a month's visits; running it twice creates nothing twice. 生成月度探访计划。"""
    from schedules.visit_planner import plan_cli

    _session_ready()
    raise typer.Exit(plan_cli(month))


@app.command("seed-demo")
def seed_demo(
    seed: Annotated[int, typer.Option(help="random seed: same seed, same district")] = 2026,
    elders: Annotated[int, typer.Option(min=1, max=1_000_000)] = 13_500,
) -> None:
    """Create the synthetic Longhu district: elders 75+, terminals, volunteers. 生成演示辖区。"""
    from callcenter.demo_district import DistrictNotEmpty, seed_district

    _session_ready()
    try:
        with db.session_scope() as session:
            summary = seed_district(session, seed=seed, elders=elders)
    except DistrictNotEmpty as exc:
        console.print(f"[red]{exc}; seed-demo fills an empty database[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"龙湖区 Longhu: {summary.elders} elders, {summary.contacts} emergency contacts, "
        f"{summary.terminals} terminals, {summary.volunteers} volunteers"
    )


@app.command("catalog")
def catalog(
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """The service catalogue: 18 categories, 170 items. 服务目录。"""
    from volunteers.catalog import get_catalog

    cat = get_catalog()
    if as_json:
        print(json.dumps(cat.as_json(), ensure_ascii=False, indent=2))
        return
    for category in cat.categories:
        console.print(f"[bold]{category.name_zh}[/bold] {category.name_en} ({category.code})")
        for item in category.items:
            console.print(f"  {item.code:40} {item.name_zh} · {item.name_en}", highlight=False)
    console.print(f"{len(cat.categories)} categories, {cat.item_count} items")


@app.command("demo")
def demo(
    elders: Annotated[int, typer.Option(min=10)] = 2_000,
    database: Annotated[Path, typer.Option(help="SQLite file, made anew")] = Path("hyt-demo.db"),
    once: Annotated[
        bool, typer.Option("--once", help="run the script and exit (0 = all OK)")
    ] = False,
    screenshots: Annotated[
        Path | None,
        typer.Option(help="after the loop, save console screenshots here (needs Chromium)"),
    ] = None,
) -> None:
    """Run the whole centre on the embedded default (SQLite), with a narrated demo. 演示。"""
    from callcenter.demo import run_demo

    code = run_demo(console, database=database, elders=elders, once=once, screenshots=screenshots)
    raise typer.Exit(code)


# -- terminal simulator ------------------------------------------------------------------------

terminal_app = typer.Typer(
    help="Terminal simulator: press a terminal's button with a real SIP call. 终端模拟器。",
    no_args_is_help=True,
)
app.add_typer(terminal_app, name="terminal")


class Button(StrEnum):
    sos = "sos"
    service = "service"
    consult = "consult"
    cancel = "cancel"


@dataclass(frozen=True)
class _SimTerminal:
    serial: str
    model: str
    protocol: TerminalProtocol
    sip_user: str
    account: str | None
    buttons: dict[str, str]
    retired: bool


def _sim_terminal(serial: str) -> _SimTerminal:
    """The terminal by serial, with what the simulator needs; exit 1 if there is none."""
    from sqlalchemy import select

    from devices.models import Terminal, TerminalStatus
    from devices.terminal_models import known_models

    _session_ready()
    with db.session_factory()() as session:
        terminal = session.scalars(select(Terminal).where(Terminal.serial == serial)).first()
        if terminal is None:
            _say_failed(f"找不到终端 no terminal with serial {serial!r}")
        sip_user = terminal.sip_user or terminal.caller_id
        if not sip_user:
            _say_failed(f"终端 {serial} 没有 SIP 用户或来电号码 has no SIP user or caller id")
        model = known_models().get(terminal.model)
        # The centre reads the terminal's own map first, then its model's (devices/registry.py).
        buttons = dict(terminal.button_map or (model.buttons if model else {}))
        return _SimTerminal(
            serial=terminal.serial,
            model=terminal.model,
            protocol=terminal.protocol,
            sip_user=sip_user,
            account=terminal.account,
            buttons=buttons,
            retired=terminal.status is TerminalStatus.RETIRED,
        )


def _say_failed(message: str) -> NoReturn:
    console.print(f"[red]✗[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _centre_address(centre: str | None) -> tuple[str, int]:
    """``host:port``, or the call handler's HYT_SIP_HOST:HYT_SIP_PORT."""
    from callcenter.settings import get_settings

    if centre is None:
        settings = get_settings()
        host = settings.sip_advertised_host or settings.sip_host
        # A handler bound to every interface is reached on loopback from this machine.
        return ("127.0.0.1" if host in ("0.0.0.0", "") else host), settings.sip_port
    host, sep, port = centre.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"{centre!r} is not host:port", param_hint="--centre")
    return host, int(port)


def _quiet_sip_libraries() -> None:
    # The stacks narrate every request at INFO; the simulator prints one line of its own.
    for name in ("aiosipua", "aiortp"):
        logging.getLogger(name).setLevel(logging.WARNING)


CentreOption = Annotated[
    str | None, typer.Option("--centre", help="host:port (default HYT_SIP_HOST:HYT_SIP_PORT)")
]
TerminalOption = Annotated[str, typer.Option("--terminal", help="terminal serial number")]


@terminal_app.command("press")
def terminal_press(
    terminal: TerminalOption,
    button: Annotated[Button | None, typer.Option(help="the button pressed")] = None,
    contact_id: Annotated[
        list[str] | None,
        typer.Option("--contact-id", help="a 16-digit Contact ID message (repeatable)"),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(help="Contact ID event code, e.g. 101; built with the terminal's account"),
    ] = None,
    qualifier: Annotated[int, typer.Option(help="for --event: 1 new, 3 restore, 6 still")] = 1,
    digits: Annotated[str | None, typer.Option(help="raw DTMF digits to send after answer")] = None,
    centre: CentreOption = None,
    hold: Annotated[float, typer.Option("--hold", min=0, help="stay on the line (s)")] = 0.0,
    timeout: Annotated[float, typer.Option(min=1, help="give up after (s)")] = 30.0,
) -> None:
    """Press a button (or send Contact ID) from a terminal: a real call to the centre. 模拟按键。"""
    import asyncio

    from devices import contact_id as cid_codec
    from devices import simulator
    from devices.models import TerminalProtocol

    _quiet_sip_libraries()
    if button is not None and (contact_id or event or digits):
        raise typer.BadParameter("--button goes alone, not with --contact-id/--event/--digits")
    if button is None and not (contact_id or event or digits):
        raise typer.BadParameter("say what to send: --button, --contact-id, --event or --digits")
    address = _centre_address(centre)
    target = _sim_terminal(terminal)
    if target.retired:
        console.print(f"[yellow]终端 {target.serial} 已停用 retired: the centre will not know it")
    label = button.value if button is not None else "contact-id" if contact_id or event else "dtmf"
    if button is not None and target.protocol is TerminalProtocol.SCAIP:
        try:
            mty, stc = simulator.scaip_for_button(button.value)
        except ValueError as exc:
            _say_failed(str(exc))
        _run_scaip(target, address, mty=mty, stc=stc, ref=simulator.new_ref(), timeout=timeout)
        return
    dialled, send, messages = "centre", digits or "", list(contact_id or [])
    try:
        if button is not None:
            plan = simulator.plan_press(
                target.protocol, target.buttons, button.value, account=target.account
            )
            dialled, send, messages = plan.dialled, plan.digits, list(plan.contact_id)
        for code in event or []:
            if not target.account:
                raise ValueError(f"终端 {target.serial} 没有 Contact ID 账号 has no account")
            messages.append(cid_codec.encode(target.account, code, qualifier=qualifier))
    except ValueError as exc:
        _say_failed(str(exc))
    result = asyncio.run(
        simulator.press(
            address,
            sip_user=target.sip_user,
            digits=send or None,
            dialled=dialled,
            contact_id=messages or None,
            hold_s=hold,
            timeout=timeout,
        )
    )
    # Contact ID succeeds only when every message was kissed off: the panel's own test.
    ok = result.answered and result.kiss_offs >= len(messages)
    facts = [f"SIP {result.status}"]
    if result.dialled != "centre":
        facts.append(f"拨 dialled {result.dialled}")
    if result.digits_sent:
        facts.append(f"按键 sent {result.digits_sent}")
    if messages:
        facts.append(f"确认音 kiss-off {result.kiss_offs}/{len(messages)}")
    if result.answered:
        facts.append("中心挂机 centre hung up" if result.centre_hung_up else "本机挂机 we hung up")
    facts.append(f"{result.duration_s:.1f} s")
    verdict = "已接通 answered" if result.answered else "未接通 not answered"
    mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
    console.print(
        f"{mark} {verdict} — {target.serial} ({target.model}) {label}: {', '.join(facts)}",
        highlight=False,
        soft_wrap=True,  # one line, however narrow the terminal
    )
    raise typer.Exit(0 if ok else 1)


@terminal_app.command("scaip")
def terminal_scaip(
    terminal: TerminalOption,
    mty: Annotated[str, typer.Option(help="message type: ME alarm, RE reset, IN, PI")] = "ME",
    stc: Annotated[str | None, typer.Option(help="status code, e.g. 0010 manual alarm")] = None,
    dty: Annotated[str, typer.Option(help="device type, e.g. 0003 pendant")] = "0003",
    ref: Annotated[str | None, typer.Option(help="message reference (default: fresh)")] = None,
    centre: CentreOption = None,
    timeout: Annotated[float, typer.Option(min=1, help="give up after (s)")] = 10.0,
) -> None:
    """Send a SCAIP alarm message (SIP MESSAGE, SS 91100) from a terminal. 模拟 SCAIP 报警。"""
    from devices import simulator

    _quiet_sip_libraries()
    address = _centre_address(centre)
    target = _sim_terminal(terminal)
    # A heartbeat carries no status; an alarm without one is a manual alarm (SS 91100 0010).
    status = stc if stc is not None else (None if mty.upper() == "PI" else "0010")
    _run_scaip(target, address, mty=mty, stc=status, dty=dty, ref=ref or simulator.new_ref(),
               timeout=timeout)  # fmt: skip


def _run_scaip(
    target: _SimTerminal,
    address: tuple[str, int],
    *,
    mty: str,
    stc: str | None,
    ref: str,
    timeout: float,
    dty: str = "0003",
) -> None:
    import asyncio

    from devices import simulator

    result = asyncio.run(
        simulator.send_scaip(
            address,
            cid=target.account or target.sip_user,
            ref=ref,
            mty=mty,
            stc=stc,
            dty=dty,
            sip_user=target.sip_user,
            timeout=timeout,
        )
    )
    verdict = "已受理 accepted" if result.ok else "未受理 not accepted"
    mark = "[green]✓[/green]" if result.ok else "[red]✗[/red]"
    snu = "no <mrs>" if result.snu is None else f"snu {result.snu}"
    mre = "" if result.mre is None else f", mre {result.mre}"
    console.print(
        f"{mark} {verdict} — {target.serial} SCAIP {mty} {stc or '-'} ref {ref}: "
        f"SIP {result.status}, {snu}{mre}, {result.duration_s:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(0 if result.ok else 1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
