"""Pinyin of Chinese names, so that operators can find 王秀英 by typing ``wxy`` or ``wang``."""

from __future__ import annotations

from pypinyin import Style, lazy_pinyin

# Surnames read differently from the character's common reading (曾 is zēng as a surname,
# not céng). pypinyin reads characters, not names, so the first character is fixed here.
SURNAME_READINGS = {
    "曾": "zeng",
    "单": "shan",
    "解": "xie",
    "仇": "qiu",
    "朴": "piao",
    "区": "ou",
    "查": "zha",
    "乐": "yue",
    "覃": "qin",
    "翟": "zhai",
    "盖": "ge",
    "繁": "po",
    "缪": "miao",
    "尉": "yu",
}


def name_pinyin(name: str) -> tuple[str, str]:
    """Return (full pinyin separated by spaces, initials): 王秀英 → ("wang xiu ying", "wxy")."""
    name = name.strip()
    syllables = [s.strip().lower() for s in lazy_pinyin(name, style=Style.NORMAL)]
    syllables = [s for s in syllables if s]
    if name and name[0] in SURNAME_READINGS and syllables:
        syllables[0] = SURNAME_READINGS[name[0]]
    full = " ".join(syllables)
    initials = "".join(s[0] for s in syllables)
    return full, initials
