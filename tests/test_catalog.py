import json
import subprocess
import sys

import pytest

from volunteers.catalog import CatalogError, load_catalog, parse_catalog

SEED_CATEGORIES = {
    "健康监测",
    "家政便民",
    "物业维修",
    "生活照料",
    "精神慰藉",
    "法律咨询",
    "信息指导",
}


def test_cli_prints_18_categories_and_170_items_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "callcenter", "catalog", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    categories = data["categories"]
    assert len(categories) == 18
    assert sum(len(c["items"]) for c in categories) == 170
    assert {c["name_zh"] for c in categories} >= SEED_CATEGORIES
    first_item = categories[0]["items"][0]
    assert {"code", "name_zh", "name_en", "priority", "response_minutes", "skill"} <= set(
        first_item
    )


def test_items_the_seed_names_are_in_the_catalogue() -> None:
    catalog = load_catalog()
    assert catalog.item("appliances.replace_bulb").name_zh == "更换灯泡"
    assert catalog.item("personal_care.nail_trimming").category_code == "personal_care"
    assert catalog.category("emergency").operator_first
    assert not catalog.category("repairs").operator_first


def test_category_found_by_code_or_either_name() -> None:
    catalog = load_catalog()
    assert catalog.category_by_name("物业维修") is catalog.category("repairs")
    assert catalog.category_by_name("Property Repairs") is catalog.category("repairs")
    assert catalog.category_by_name("nonsense") is None


def _one_item(**overrides: object) -> dict[str, object]:
    item = {
        "code": "a.x",
        "name_zh": "某",
        "name_en": "x",
        "priority": "normal",
        "response_minutes": 60,
        "skill": "a",
        "min_level": 1,
    }
    item.update(overrides)
    return {"categories": [{"code": "a", "name_zh": "甲", "name_en": "a", "items": [item]}]}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"priority": "whenever"}, "priority"),
        ({"skill": "nope"}, "not a category code"),
        ({"response_minutes": 0}, "response_minutes"),
        ({"min_level": True}, "min_level"),
        ({"name_zh": None}, "name_zh"),
    ],
)
def test_bad_catalogue_entries_name_their_place(override: dict[str, object], message: str) -> None:
    with pytest.raises(CatalogError, match=message) as info:
        parse_catalog(_one_item(**override))
    assert "a.x" in str(info.value) or "category" in str(info.value)


def test_unreadable_file_is_a_catalog_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "broken.toml"
    path.write_text("[[categories]\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(path)
