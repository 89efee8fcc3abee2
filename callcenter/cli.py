"""The ``hyt`` command: one CLI for every process and chore of the centre."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from callcenter import db, migrate
from callcenter.logging_setup import configure_logging
from callcenter.settings import Settings

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
) -> None:
    """Run the demo on the embedded default (SQLite). 演示。"""
    from callcenter.demo import run_demo

    raise typer.Exit(run_demo(console, database=database, elders=elders))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
