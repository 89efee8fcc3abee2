"""All-or-nothing imports: every bad row reported with its number, nothing half-done.

An importer turns rows into unsaved ORM objects and a list of row errors. The runner writes
only when there is not a single error and ``commit`` was asked for, in one transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from callcenter.phones import PhoneError, normalise_phone
from callcenter.tabular import Row, TabularError, read_rows

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # spreadsheet row number; 0 for the file as a whole
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row else "file"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


@dataclass
class ImportReport:
    kind: str
    path: str
    rows: int = 0
    valid_rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    committed: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "committed": self.committed,
            "errors": [{"row": e.row, "field": e.field, "reason": e.reason} for e in self.errors],
        }


class RowProblem(ValueError):
    """A reason a field of a row is unusable; the importer records it against the row."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class Importer(Protocol):
    kind: str
    aliases: dict[str, str]

    def build(self, rows: Sequence[Row], session: Session) -> tuple[list[Any], list[RowError]]:
        """Unsaved objects for the valid rows, and an error for each bad one."""
        ...


def run_import(importer: Importer, path: Path, session: Session, *, commit: bool) -> ImportReport:
    """Validate every row; write all of them in one transaction only if none is bad."""
    report = ImportReport(kind=importer.kind, path=str(path))
    try:
        rows = read_rows(path, importer.aliases)
    except TabularError as exc:
        report.errors.append(RowError(0, None, str(exc)))
        return report
    report.rows = len(rows)
    objects, errors = importer.build(rows, session)
    report.errors.extend(sorted(errors, key=lambda e: (e.row, e.field or "")))
    report.valid_rows = report.rows - len({e.row for e in errors})
    if report.errors or not commit:
        session.rollback()
        return report
    try:
        session.add_all(objects)
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        report.errors.append(
            RowError(0, None, f"database refused the import: {getattr(exc, 'orig', exc)}")
        )
        return report
    report.committed = True
    log.info("import.committed", kind=importer.kind, rows=report.rows, path=str(path))
    return report


# ---- field readers shared by the importers -------------------------------------------------

_TRUE = {"1", "y", "yes", "true", "t", "是", "有", "√", "✓", "x"}
_FALSE = {"", "0", "n", "no", "false", "f", "否", "无", "没有", "×"}


def read_bool(row: Row, key: str, *, default: bool = False) -> bool:
    text = row.get(key).lower()
    if not text:
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RowProblem(key, f"{text!r} is not yes/no (是/否)")


_DATE_PATTERNS = (
    re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日?$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)


def read_date(row: Row, key: str) -> dt.date:
    text = row.get(key)
    if not text:
        raise RowProblem(key, "missing date")
    text = text.split("T")[0].split(" ")[0]
    for pattern in _DATE_PATTERNS:
        match = pattern.match(text)
        if match:
            try:
                return dt.date(*(int(g) for g in match.groups()))
            except ValueError:
                break
    raise RowProblem(key, f"{text!r} is not a date (YYYY-MM-DD)")


def read_int(
    row: Row, key: str, *, default: int | None = None, lo: int = 0, hi: int = 10**9
) -> int:
    text = row.get(key)
    if not text:
        if default is None:
            raise RowProblem(key, "missing number")
        return default
    try:
        value = int(float(text))
    except ValueError:
        raise RowProblem(key, f"{text!r} is not a number") from None
    if not lo <= value <= hi:
        raise RowProblem(key, f"{value} is outside {lo}–{hi}")
    return value


def read_required(row: Row, key: str) -> str:
    text = row.get(key)
    if not text:
        raise RowProblem(key, "missing")
    return text


def read_phone(row: Row, key: str, region: str, *, required: bool = True) -> str | None:
    text = row.get(key)
    if not text and not required:
        return None
    try:
        return normalise_phone(text, region)
    except PhoneError as exc:
        raise RowProblem(key, f"bad phone: {exc}") from None


# Longhu and the rest of Shantou sit well inside these; the box only catches swapped or
# garbled coordinates (mainland China's extent).
LAT_RANGE = (18.0, 54.0)
LON_RANGE = (73.0, 135.5)


def read_coordinates(row: Row, lat_key: str, lon_key: str) -> tuple[float, float]:
    lat_text, lon_text = row.get(lat_key), row.get(lon_key)
    if not lat_text or not lon_text:
        raise RowProblem(lat_key if not lat_text else lon_key, "missing coordinates")
    try:
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise RowProblem(
            lat_key, f"coordinates {lat_text!r}, {lon_text!r} are not numbers"
        ) from None
    if not (LAT_RANGE[0] <= lat <= LAT_RANGE[1] and LON_RANGE[0] <= lon <= LON_RANGE[1]):
        raise RowProblem(lat_key, f"coordinates {lat}, {lon} are outside China (swapped?)")
    return lat, lon


class UniqueValues:
    """A column that must be unique: refused if already in the database or twice in the file."""

    def __init__(self, field: str, known: Iterable[str | None], *, label: str,
                 in_database: str) -> None:  # fmt: skip
        self.field = field
        self.label = label
        self.in_database = in_database  # message, with {value}
        self.known = {k for k in known if k}
        self.seen: dict[str, int] = {}

    def check(self, collector: RowCollector, value: str | None) -> None:
        if not value:
            return
        if value in self.known:
            collector.problem(self.field, self.in_database.format(value=value))
        elif value in self.seen:
            collector.problem(
                self.field, f"duplicate {self.label} {value} (also row {self.seen[value]})"
            )
        else:
            self.seen[value] = collector.row.number


class RowCollector:
    """Gathers every problem of one row instead of stopping at the first."""

    def __init__(self, row: Row) -> None:
        self.row = row
        self.errors: list[RowError] = []

    def read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self.row, *args, **kwargs)
        except RowProblem as problem:
            self.errors.append(RowError(self.row.number, problem.field, problem.reason))
            return None

    def problem(self, field: str, reason: str) -> None:
        self.errors.append(RowError(self.row.number, field, reason))
