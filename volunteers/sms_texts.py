"""Every SMS the centre sends volunteers, Chinese (zh-CN) first, English second.

An SMS travels in clear through carriers and sits on a phone's lock screen, so a text carries only
what a volunteer needs to decide: the short case code, the service item, the community at most,
and the signed link. Never medical details, names of elders, or the full address: the signed link
shows those to the volunteer who holds it. The functions take only those fields, so nothing else
can slip in.

Each text stays under :data:`volunteers.sms.MAX_SMS_CHARS` with a typical signed link (about 85
characters); item and community names are shortened when long.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from volunteers.sms import MAX_SMS_CHARS

Lang = Literal["zh", "en"]

SIGNATURE = {"zh": "【呼援通】", "en": "[HYT] "}
_MAX_ITEM = 12
_MAX_COMMUNITY = 8
# Not strftime("%b"): that follows the process's locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

TEXTS: dict[str, dict[Lang, str]] = {
    "offer": {
        "zh": "任务{code}：{community}老人需要{item}，请回复1接受、2拒绝，或打开链接 {link}",
        "en": "{code}: {item}, {community}. 1=accept 2=decline: {link}",
    },
    "assigned": {
        "zh": "任务{code}已确认由您负责，地址和注意事项见链接 {link}",
        "en": "Task {code} is yours. Address and notes: {link}",
    },
    "stood_down": {
        "zh": "任务{code}已有志愿者接单，无需前往，谢谢！",
        "en": "Task {code} is taken by another volunteer. No need to go, thank you!",
    },
    "too_late": {
        "zh": "任务{code}已由其他志愿者接单，谢谢您的热心！",
        "en": "Task {code} was already taken by another volunteer. Thank you all the same!",
    },
    "expired": {
        "zh": "任务{code}的回复时间已过，已转派其他志愿者，谢谢！",
        "en": "The reply time for task {code} has passed; it went to someone else. Thank you!",
    },
    "cancelled": {
        "zh": "任务{code}已取消，无需前往，谢谢！",
        "en": "Task {code} has been cancelled. No need to go, thank you!",
    },
    "reminder": {
        "zh": "提醒：任务{code}尚未完成，完成后请回复3或打开链接 {link}",
        "en": "{code} not done yet? Reply 3 when done, or {link}",
    },
    "visit_reminder": {
        "zh": "提醒：您{when}有上门探访{code}（{community}），确认、交回或记录请点 {link}",
        "en": "Visit {code} {when} ({community}): confirm/hand back/record {link}",
    },
    "visit_assigned": {
        "zh": "新的上门探访{code}交给您：{when}，{community}，确认或交回请点 {link}",
        "en": "New visit {code} for you: {when}, {community}. Confirm/hand back: {link}",
    },
    "declined": {
        "zh": "已收到：您不接任务{code}，谢谢告知！",
        "en": "Noted: you declined task {code}. Thank you for telling us!",
    },
    "no_pending": {
        "zh": "没有找到您待回复的任务{code}，可能已过期或已由他人接单。",
        "en": "No open offer {code} found for you; it may have expired or been taken.",
    },
    "unknown_sender": {
        "zh": "本号码未登记为志愿者，如有疑问请致电服务中心。",
        "en": "This number is not registered as a volunteer. Please call the centre.",
    },
    "reply_unknown": {
        "zh": "未能识别您的回复。接受请回复1，拒绝请回复2，完成请回复3。",
        "en": "Sorry, we could not read your reply. Reply 1 to accept, 2 to decline, 3 when done.",
    },
}


def _short(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(key: str, lang: Lang = "zh", **fields: str) -> str:
    """The text ``key`` in ``lang`` with its signature, fields filled in."""
    return SIGNATURE[lang] + TEXTS[key][lang].format(**fields)


def offer_text(code: str, *, item: str, community: str, link: str, lang: Lang = "zh") -> str:
    """Asks a volunteer to take a task; ``community`` is the most precise place allowed.

    The link must survive whole, so with a long public base URL the item name, then the
    community name, are cut further until the text fits one :data:`MAX_SMS_CHARS` message.
    """
    item_len, community_len = _MAX_ITEM, _MAX_COMMUNITY
    while True:
        text = render(
            "offer",
            lang,
            code=code,
            item=_short(item, item_len),
            community=_short(community, community_len),
            link=link,
        )
        if len(text) <= MAX_SMS_CHARS or (item_len <= 4 and community_len <= 2):
            return text  # still too long: queue_sms refuses it loudly (base URL far too long)
        if item_len > 4:
            item_len -= 1
        else:
            community_len -= 1


def assigned_text(code: str, *, link: str, lang: Lang = "zh") -> str:
    return render("assigned", lang, code=code, link=link)


def stood_down_text(code: str, *, lang: Lang = "zh") -> str:
    """ "Not needed": the rest of a wave, once someone has accepted (no double booking)."""
    return render("stood_down", lang, code=code)


def too_late_text(code: str, *, lang: Lang = "zh") -> str:
    """Answer to an accept that lost the race."""
    return render("too_late", lang, code=code)


def expired_text(code: str, *, lang: Lang = "zh") -> str:
    return render("expired", lang, code=code)


def cancelled_text(code: str, *, lang: Lang = "zh") -> str:
    return render("cancelled", lang, code=code)


def reminder_text(code: str, *, link: str, lang: Lang = "zh") -> str:
    return render("reminder", lang, code=code, link=link)


def visit_reminder_text(
    *, when: str, community: str, link: str, code: str = "", lang: Lang = "zh"
) -> str:
    """``when`` is a short local phrase: 明天 / tomorrow; ``code`` the visit's short code."""
    return _visit_text("visit_reminder", when=when, community=community, link=link, code=code,
                       lang=lang)  # fmt: skip


def visit_assigned_text(
    *, when: str, community: str, link: str, code: str, lang: Lang = "zh"
) -> str:
    """A visit handed back by another volunteer is now this one's; ``when`` is its date."""
    return _visit_text("visit_assigned", when=when, community=community, link=link, code=code,
                       lang=lang)  # fmt: skip


def day_text(day: dt.date, lang: Lang = "zh") -> str:
    """A date as a volunteer says it: 12月3日 / 3 Dec (the year is always the coming one)."""
    return f"{day.month}月{day.day}日" if lang == "zh" else f"{day.day} {_MONTHS[day.month - 1]}"


def _visit_text(key: str, *, when: str, community: str, link: str, code: str, lang: Lang) -> str:
    # As for offers: the link survives whole, the community name gives way first.
    community_len = _MAX_COMMUNITY
    while True:
        text = render(key, lang, when=_short(when, 10), code=code, link=link,
                      community=_short(community, community_len))  # fmt: skip
        if len(text) <= MAX_SMS_CHARS or community_len <= 2:
            return text  # still too long: queue_sms refuses it loudly
        community_len -= 1


def reply_unknown_text(*, lang: Lang = "zh") -> str:
    return render("reply_unknown", lang)
