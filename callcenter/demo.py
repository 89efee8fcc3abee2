"""``hyt demo``: the newcomer's first minutes, on the embedded default (SQLite)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from callcenter import db, migrate
from callcenter.demo_district import seed_district
from callcenter.models import Elder
from devices.models import Terminal
from volunteers.catalog import get_catalog
from volunteers.models import Volunteer


def run_demo(console: Console, *, database: Path, elders: int) -> int:
    """Create the demo database, seed the district and show what is there. Returns an exit code."""
    started = time.perf_counter()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    engine = db.make_engine(f"sqlite:///{database}")
    db.use_engine(engine)
    console.rule("呼援通 HuYuanTong 演示 demo")
    with console.status("建库 creating the database …"):
        migrate.upgrade(engine)
    console.print(f"✓ 数据库已创建 database created: {database}")
    seeding = console.status(f"生成龙湖区 seeding the Longhu district ({elders} elders) …")
    with seeding, db.session_scope() as session:
        seed_district(session, elders=elders)
    catalog = get_catalog()
    with db.session_factory()() as session:
        table = Table(title="龙湖区 Longhu district (synthetic)")
        table.add_column("what 项目")
        table.add_column("count 数量", justify="right")
        table.add_row("老人 elders 75+", str(session.scalar(select(func.count(Elder.id)))))
        table.add_row("终端 terminals", str(session.scalar(select(func.count(Terminal.id)))))
        table.add_row("志愿者 volunteers", str(session.scalar(select(func.count(Volunteer.id)))))
        table.add_row("服务类别 service categories", str(len(catalog.categories)))
        table.add_row("服务项目 service items", str(catalog.item_count))
    console.print(table)
    console.print(f"✓ 完成 done in {time.perf_counter() - started:.1f} s")
    return 0
