"""Imports: every bad row reported with its number and reason; all rows or none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from callcenter import db, migrate
from callcenter.elder_import import ElderImporter
from callcenter.importing import ImportReport, run_import
from callcenter.models import Elder, EmergencyContact
from devices.models import Terminal
from devices.terminal_import import TerminalImporter
from volunteers.models import AvailabilityWindow, Volunteer, VolunteerSkill
from volunteers.volunteer_import import VolunteerImporter

EXAMPLES = Path(__file__).parents[1] / "examples"
ELDER_HEADER = (
    "编号,姓名,性别,出生日期,电话,街道,社区,地址,纬度,经度,联系人1姓名,联系人1关系,联系人1电话"
)
GOOD_ELDER = (
    "G1,王秀英,女,1944-03-05,13800138000,金霞街道,金湖社区,金砂东路18号,23.3651,116.7049,"
    "李梅,女儿,13912345678"
)


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def import_examples(session: Session) -> list[ImportReport]:
    return [
        run_import(importer, EXAMPLES / f"{importer.kind}.csv", session, commit=True)
        for importer in (ElderImporter(), VolunteerImporter(), TerminalImporter())
    ]


def test_example_files_import_fully(session: Session) -> None:
    reports = import_examples(session)
    assert [r.errors for r in reports] == [[], [], []]
    assert all(r.committed for r in reports)
    assert (count(session, Elder), count(session, Volunteer), count(session, Terminal)) == (3, 3, 3)
    assert count(session, EmergencyContact) == 4
    wang = session.scalars(select(Elder).where(Elder.code == "EX0001")).one()
    assert (wang.name_initials, wang.phone, wang.medications) == (
        "wxy",
        "+8613800138000",
        ["氨氯地平", "二甲双胍"],
    )
    assert [c.call_order for c in wang.contacts] == [1, 2]
    assert wang.contacts[1].phone == "+8675488881234"  # a Shantou landline, normalised
    lin = session.scalars(select(Volunteer).where(Volunteer.code == "EXV001")).one()
    assert {(s.category_code, s.level) for s in lin.skills} == {
        ("appliances", 2),
        ("repairs", 1),
        ("visits", 1),
    }
    assert len(lin.availability) == 6  # Monday–Friday plus Saturday morning
    terminal = session.scalars(select(Terminal).where(Terminal.serial == "EXT0002")).one()
    assert terminal.elder_id is not None and terminal.account == "1234"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_bad_elder_rows_are_each_reported_and_nothing_is_imported(
    session: Session, tmp_path: Path
) -> None:
    rows = [
        ELDER_HEADER,
        GOOD_ELDER,
        "G2,陈来顺,男,1939-11-20,12345,珠池街道,东厦社区,黄山路7号,23.35,116.72,,,",
        "G3,曾亚妹,女,1947-06-01,,龙祥街道,嘉泰社区,泰山路9号,,116.73,,,",
        "G1,林惜娥,女,1940-01-01,,龙祥街道,嘉泰社区,泰山路9号,23.37,116.73,,,",
        "G4,黄木松,X,1940-02-30,,龙祥街道,嘉泰社区,泰山路9号,116.73,23.37,,,",
        "G5,许美玉,女,1941-01-01,,龙祥街道,嘉泰社区,泰山路9号,23.37,116.73,许某,儿子,999",
    ]
    path = write(tmp_path, "elders.csv", "\n".join(rows) + "\n")
    report = run_import(ElderImporter(), path, session, commit=True)
    assert not report.committed
    assert count(session, Elder) == 0
    problems = {(e.row, e.field) for e in report.errors}
    assert problems == {
        (3, "phone"),
        (4, "latitude"),
        (5, "code"),
        (6, "sex"),
        (6, "birth_date"),
        (6, "latitude"),
        (7, "contact1_phone"),
    }
    reasons = " | ".join(str(e) for e in report.errors)
    expected = (
        "not a valid phone number",
        "missing coordinates",
        "duplicate code G1 (also row 2)",
        "is not one of",
        "is not a date",
        "outside China",
    )
    for reason in expected:
        assert reason in reasons
    assert report.rows == 6 and report.valid_rows == 1


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_utf8_with_or_without_bom_and_gb18030(
    session: Session, tmp_path: Path, encoding: str
) -> None:
    path = write(tmp_path, "elders.csv", f"{ELDER_HEADER}\r\n{GOOD_ELDER}\r\n", encoding)
    report = run_import(ElderImporter(), path, session, commit=True)
    assert report.committed, report.errors
    assert session.scalars(select(Elder.name)).one() == "王秀英"


def test_xlsx_as_street_offices_send_it(session: Session, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(ELDER_HEADER.split(","))
    values: list[object] = list(GOOD_ELDER.split(","))
    values[4] = 13800138000  # typed as a number in Excel
    values[8], values[9] = 23.3651, 116.7049
    sheet.append(values)
    path = tmp_path / "elders.xlsx"
    book.save(path)
    report = run_import(ElderImporter(), path, session, commit=True)
    assert report.committed, report.errors
    assert session.scalars(select(Elder.phone)).one() == "+8613800138000"


def test_dry_run_reports_but_writes_nothing(session: Session) -> None:
    report = run_import(ElderImporter(), EXAMPLES / "elders.csv", session, commit=False)
    assert report.ok and not report.committed
    assert count(session, Elder) == 0


def test_bad_volunteer_rows(session: Session, tmp_path: Path) -> None:
    text = (
        "编号,姓名,电话,技能,纬度,经度,可服务时间\n"
        "V1,林晓燕,13711112222,家电更换:2;木工,23.36,116.70,mon-fri 08:00-18:00\n"
        "V2,黄志伟,13711112222,repairs:4,23.36,116.70,someday 08:00-18:00\n"
        "V3,蔡思敏,13733334444,visits,23.36,116.70,mon 18:00-08:00\n"
    )
    report = run_import(VolunteerImporter(), write(tmp_path, "v.csv", text), session, commit=True)
    assert not report.committed
    assert {(e.row, e.field) for e in report.errors} == {
        (2, "skills"),
        (3, "phone"),
        (3, "skills"),
        (3, "availability"),
        (4, "availability"),
    }
    assert "unknown service category '木工'" in str(report.errors[0])
    assert count(session, Volunteer) + count(session, VolunteerSkill) == 0
    assert count(session, AvailabilityWindow) == 0


def test_bad_terminal_rows(session: Session, tmp_path: Path) -> None:
    run_import(ElderImporter(), EXAMPLES / "elders.csv", session, commit=True)
    text = (
        "序列号,型号,SIP账号,来电号码,老人编号,账号\n"
        "T1,HYT-T200,t1,,EX0001,\n"
        "T1,HYT-T200,t2,,EX0002,\n"
        "T3,HYT-T200,t3,,NOBODY,\n"
        "T4,PHONE-9000,t4,,EX0003,\n"
        "T5,CID-P300,,,EX0003,\n"
    )
    report = run_import(TerminalImporter(), write(tmp_path, "t.csv", text), session, commit=True)
    assert not report.committed
    assert {(e.row, e.field) for e in report.errors} == {
        (3, "serial"),
        (4, "elder_code"),
        (5, "model"),
        (6, "sip_user"),
        (6, "account"),
    }
    assert "terminal bound to a missing elder 'NOBODY'" in " ".join(map(str, report.errors))
    assert count(session, Terminal) == 0


def test_unreadable_file_is_one_clear_error(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\x30\xff" * 10)
    report = run_import(ElderImporter(), path, session, commit=True)
    assert len(report.errors) == 1 and report.errors[0].row == 0


def test_cli_import_with_bad_rows_exits_1_and_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = db.make_engine(url)
    migrate.upgrade(engine)
    bad = write(tmp_path, "elders.csv", f"{ELDER_HEADER}\n{GOOD_ELDER}\n{GOOD_ELDER}\n")
    env = {**os.environ, "HYT_DATABASE_URL": url}
    cmd = [sys.executable, "-m", "callcenter", "import", "elders"]
    result = subprocess.run([*cmd, str(bad), "--commit"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "row 3: code: duplicate code G1 (also row 2)" in result.stdout
    good = subprocess.run(
        [*cmd, str(EXAMPLES / "elders.csv"), "--commit"], env=env, capture_output=True, text=True
    )
    assert good.returncode == 0, good.stdout + good.stderr
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Elder)) == 3
    engine.dispose()
