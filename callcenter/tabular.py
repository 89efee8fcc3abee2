"""Reading the spreadsheets street offices send.

CSV in UTF-8 (with or without BOM) or GB18030, and XLSX.

Every row keeps its spreadsheet row number (the header is row 1), so that an error can point at it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

UTF8_BOM = b"\xef\xbb\xbf"


class TabularError(ValueError):
    """The file as a whole cannot be read (not a single bad row: those are reported per row)."""


@dataclass(frozen=True, slots=True)
class Row:
    number: int  # as the spreadsheet shows it: the header is row 1
    values: dict[str, str]

    def get(self, key: str) -> str:
        return self.values.get(key, "").strip()


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM) first; then GB18030, which Chinese Excel writes by default."""
    if data.startswith(UTF8_BOM):
        return data[len(UTF8_BOM) :].decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise TabularError(
            f"the file is neither UTF-8 nor GB18030 (byte {exc.start}); save it as CSV UTF-8"
        ) from exc


def _normalise_header(name: str, aliases: dict[str, str]) -> str:
    key = name.strip().lstrip("\ufeff").strip()
    return aliases.get(key, aliases.get(key.lower(), key.lower()))


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        # Excel stores phone numbers typed as numbers as floats: 13800138000.0
        return str(int(value))
    return str(value)


def _rows_from_table(table: list[list[str]], aliases: dict[str, str]) -> list[Row]:
    if not table:
        raise TabularError("the file is empty")
    header = [_normalise_header(h, aliases) for h in table[0]]
    if not any(header):
        raise TabularError("the first row must be a header row")
    rows = []
    for offset, cells in enumerate(table[1:], start=2):
        if not any(c.strip() for c in cells):
            continue  # blank lines between blocks are common in hand-made sheets
        values = {h: (cells[i] if i < len(cells) else "") for i, h in enumerate(header) if h}
        rows.append(Row(number=offset, values=values))
    return rows


def read_csv(data: bytes, aliases: dict[str, str]) -> list[Row]:
    text = decode_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    table = list(csv.reader(io.StringIO(text), dialect))
    return _rows_from_table(table, aliases)


def read_xlsx(data: bytes, aliases: dict[str, str]) -> list[Row]:
    import openpyxl  # only needed for spreadsheets

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a broken file
        raise TabularError(f"not a readable XLSX workbook: {exc}") from exc
    sheet = book.worksheets[0]
    table = [[_cell_text(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    book.close()
    return _rows_from_table(table, aliases)


def read_rows(path: Path, aliases: dict[str, str]) -> list[Row]:
    """Rows of ``path`` (.csv, .txt, .tsv or .xlsx), headers mapped through ``aliases``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TabularError(f"cannot read {path}: {exc.strerror}") from exc
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return read_xlsx(data, aliases)
    return read_csv(data, aliases)
