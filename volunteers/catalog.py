"""The service catalogue: 18 categories and their items, read from an editable TOML file.

The catalogue is data, not code (the real service grew from 110 to 170 items): a site edits
``volunteers/catalog.toml``, or points ``HYT_CATALOG_PATH`` at its own copy, and restarts.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Priority = Literal["life_safety", "urgent", "normal", "routine"]
PRIORITIES: tuple[Priority, ...] = ("life_safety", "urgent", "normal", "routine")
# Numeric queue priority of a case opened for an item (lower is more urgent).
PRIORITY_RANK: dict[str, int] = {"life_safety": 1, "urgent": 2, "normal": 3, "routine": 4}

DEFAULT_PATH = Path(__file__).with_name("catalog.toml")


class CatalogError(ValueError):
    """The catalogue file is unreadable or inconsistent."""


@dataclass(frozen=True, slots=True)
class ServiceItem:
    code: str
    category_code: str
    name_zh: str
    name_en: str
    priority: Priority
    response_minutes: int
    skill: str
    min_level: int


@dataclass(frozen=True, slots=True)
class ServiceCategory:
    code: str
    name_zh: str
    name_en: str
    operator_first: bool
    offer_window_seconds: int
    max_waves: int
    items: tuple[ServiceItem, ...]


@dataclass(frozen=True)
class Catalog:
    categories: tuple[ServiceCategory, ...]

    @functools.cached_property
    def _items(self) -> dict[str, ServiceItem]:
        return {item.code: item for cat in self.categories for item in cat.items}

    @functools.cached_property
    def _categories(self) -> dict[str, ServiceCategory]:
        return {cat.code: cat for cat in self.categories}

    def category(self, code: str) -> ServiceCategory:
        try:
            return self._categories[code]
        except KeyError:
            raise KeyError(f"unknown service category {code!r}") from None

    def item(self, code: str) -> ServiceItem:
        try:
            return self._items[code]
        except KeyError:
            raise KeyError(f"unknown service item {code!r}") from None

    def has_category(self, code: str) -> bool:
        return code in self._categories

    def category_by_name(self, name: str) -> ServiceCategory | None:
        """Find a category by its code, Chinese name or English name (import files use any)."""
        wanted = name.strip().lower()
        for cat in self.categories:
            if wanted in (cat.code, cat.name_zh, cat.name_en.lower()):
                return cat
        return None

    @property
    def item_count(self) -> int:
        return len(self._items)

    def as_json(self) -> dict[str, Any]:
        return {
            "categories": [
                {
                    "code": cat.code,
                    "name_zh": cat.name_zh,
                    "name_en": cat.name_en,
                    "operator_first": cat.operator_first,
                    "offer_window_seconds": cat.offer_window_seconds,
                    "max_waves": cat.max_waves,
                    "items": [
                        {
                            "code": it.code,
                            "name_zh": it.name_zh,
                            "name_en": it.name_en,
                            "priority": it.priority,
                            "response_minutes": it.response_minutes,
                            "skill": it.skill,
                            "min_level": it.min_level,
                        }
                        for it in cat.items
                    ],
                }
                for cat in self.categories
            ]
        }


def _require(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = table.get(key)
    # bool is an int in Python; a count written as `true` is still a mistake.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CatalogError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}")
    return value


def parse_catalog(data: dict[str, Any]) -> Catalog:
    """Build and check a catalogue from parsed TOML; every problem names its place."""
    raw_categories = data.get("categories")
    if not isinstance(raw_categories, list) or not raw_categories:
        raise CatalogError("the catalogue has no [[categories]]")
    category_codes = {c.get("code") for c in raw_categories if isinstance(c, dict)}
    categories: list[ServiceCategory] = []
    seen_items: set[str] = set()
    for index, raw in enumerate(raw_categories, start=1):
        where = f"category #{index}"
        code = _require(raw, "code", str, where)
        where = f"category {code!r}"
        items: list[ServiceItem] = []
        for raw_item in raw.get("items", []):
            item_code = _require(raw_item, "code", str, where)
            iwhere = f"item {item_code!r}"
            if item_code in seen_items:
                raise CatalogError(f"{iwhere}: duplicate item code")
            seen_items.add(item_code)
            priority = _require(raw_item, "priority", str, iwhere)
            if priority not in PRIORITIES:
                raise CatalogError(f"{iwhere}: priority must be one of {PRIORITIES}")
            skill = _require(raw_item, "skill", str, iwhere)
            if skill not in category_codes:
                raise CatalogError(f"{iwhere}: skill {skill!r} is not a category code")
            minutes = _require(raw_item, "response_minutes", int, iwhere)
            level = _require(raw_item, "min_level", int, iwhere)
            if minutes <= 0 or level not in (1, 2, 3):
                raise CatalogError(f"{iwhere}: response_minutes > 0 and min_level 1–3 required")
            items.append(
                ServiceItem(
                    code=item_code,
                    category_code=code,
                    name_zh=_require(raw_item, "name_zh", str, iwhere),
                    name_en=_require(raw_item, "name_en", str, iwhere),
                    priority=priority,
                    response_minutes=minutes,
                    skill=skill,
                    min_level=level,
                )
            )
        if not items:
            raise CatalogError(f"{where}: no items")
        categories.append(
            ServiceCategory(
                code=code,
                name_zh=_require(raw, "name_zh", str, where),
                name_en=_require(raw, "name_en", str, where),
                operator_first=bool(raw.get("operator_first", False)),
                offer_window_seconds=int(raw.get("offer_window_seconds", 180)),
                max_waves=int(raw.get("max_waves", 3)),
                items=tuple(items),
            )
        )
    if len(category_codes) != len(categories):
        raise CatalogError("duplicate category codes")
    return Catalog(categories=tuple(categories))


def load_catalog(path: Path | str | None = None) -> Catalog:
    path = Path(path) if path else DEFAULT_PATH
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read catalogue {path}: {exc}") from exc
    return parse_catalog(data)


@functools.lru_cache(maxsize=1)
def get_catalog() -> Catalog:
    """The process-wide catalogue (``HYT_CATALOG_PATH`` or the bundled file)."""
    from callcenter.settings import get_settings

    return load_catalog(get_settings().catalog_path)
