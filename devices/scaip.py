"""Parse SCAIP alarm requests (``<mrq>``) and build replies (``<mrs>``).

SCAIP (Swedish SS 91100, European CLC/TS 50134-9) carries social-alarm data as a SIP MESSAGE with
``Content-Type: application/scaip+xml``. The terminal sends ``<mrq>``; the receiver answers with
``<mrs>`` echoing ``ref`` with a status number ``snu`` (0 = accepted).

Policy: liberal in what we accept, strict in what we store (DOMAIN.md). Vendors pad codes
differently (``10``, ``010``, ``0010``) and put spaces in ``cid``; we normalise those. Fields that
decide routing (``ref``, ``mty``, ``stc``, ``dty``, ``pri``) are validated; descriptive fields are
kept as trimmed text so that a quirky location text never causes an alarm to be refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal
from xml.etree.ElementTree import Element, ParseError, SubElement, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

ScaipKind = Literal["life_safety", "technical", "test", "cancel", "info"]
ScaipErrorReason = Literal[
    "too_large",
    "malformed_xml",
    "forbidden_xml",
    "not_mrq",
    "missing_field",
    "bad_value",
    "duplicate_field",
]

# A real <mrq> is a few hundred bytes; the cap bounds parser work for hostile or broken senders.
MAX_BODY_BYTES = 16 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"
_DECLARED_ENCODING = re.compile(
    rb"<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]{0,39})[\"']"
)
# A reference is echoed back to the terminal and used to match replies; keep it bounded.
_MAX_REF_CHARS = 64


class Snu(IntEnum):
    """``<snu>`` status numbers, as tabled in SS 91100 (see caruhome/scaip-gateway, spec.py)."""

    OK = 0
    MESSAGE_TOO_LONG = 1
    INVALID_FORMAT = 2
    WRONG_DATA_CONTENT = 3
    HOLD = 4
    NOT_TREATED = 5
    BUSY = 6
    MANDATORY_TAG_MISSING = 7


class MediaReply(IntEnum):
    """``<mre>``: what voice call the receiver wants to follow the message (SS 91100)."""

    NO_VOICE = 0
    DUPLEX = 1
    MICROPHONE_ONLY = 2
    SPEAKER_ONLY = 3


_SNU_FOR_REASON: dict[ScaipErrorReason, Snu] = {
    "too_large": Snu.MESSAGE_TOO_LONG,
    "malformed_xml": Snu.INVALID_FORMAT,
    "forbidden_xml": Snu.INVALID_FORMAT,
    "not_mrq": Snu.INVALID_FORMAT,
    "missing_field": Snu.MANDATORY_TAG_MISSING,
    "bad_value": Snu.WRONG_DATA_CONTENT,
    "duplicate_field": Snu.WRONG_DATA_CONTENT,
}

# SS 91100 status codes (stc) that matter to triage, in their 4-digit stored form.
STC_AUTOMATIC_ALARM = "0009"
STC_MANUAL_ALARM = "0010"
STC_CANCEL = "0019"
STC_TEST_PRIMARY = "0102"
STC_TEST_REDUNDANT = "0103"
_LIFE_SAFETY_STC = frozenset({STC_AUTOMATIC_ALARM, STC_MANUAL_ALARM})
_TEST_STC = frozenset({STC_TEST_PRIMARY, STC_TEST_REDUNDANT})
# Faults and their restorals: both belong to the technical queue (a restoral closes the fault).
_TECHNICAL_STC = frozenset(
    {
        "0014",  # battery failure
        "0015",  # battery OK
        "0016",  # battery low
        "0023",  # IP connection failure
        "0024",  # mobile network connection failure
        "0025",  # POTS connection failure
        "0026",  # primary communication link failure
        "0027",  # redundant communication link failure
        "0042",  # failure
        "0067",  # malfunction
        "0085",  # power failure
        "0086",  # power restored
        "0105",  # trouble
        "0112",  # IP connection re-established
        "0113",  # mobile network connection re-established
        "0114",  # POTS connection re-established
        "0115",  # primary communication link re-established
        "0116",  # redundant communication link re-established
        "0123",  # radio test transmission missing
        "0124",  # radio test transmission re-established
        "0125",  # tamper alarm
    }
)
# Device types (dty) whose plain alarm message means a person may be in danger.
_LIFE_SAFETY_DTY = frozenset(
    {
        "0003",  # personal trigger (pendant)
        "0004",  # fixed trigger (pull cord, wall button)
        "0005",  # fall detector
        "0006",  # personal attack trigger
        "0007",  # panic button
        "0017",  # epilepsy detector
        "0021",  # gas detector
        "0023",  # smoke detector
        "0025",  # heat detector
        "0026",  # carbon monoxide detector
        "0030",  # automatic man-down detector
    }
)

# Tags stored as trimmed text, without further checks (see the module docstring).
_TEXT_TAGS = ("did", "stt", "lva", "lte", "crd", "ver")
_KNOWN_TAGS = frozenset({"ref", "cid", "dty", "mty", "stc", "pri", "lco", "lge", *_TEXT_TAGS})
_WHITESPACE = re.compile(r"\s+")
_ASCII_DIGITS = re.compile(r"[0-9]+")
_MESSAGE_TYPE = re.compile(r"[A-Z]{2,4}")
# XML 1.0 Char production: anything else cannot be written into <mrs>.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class ScaipError(ValueError):
    """An ``<mrq>`` we refuse; answer it with ``<mrs>`` carrying ``snu`` (and ``ref`` if known)."""

    def __init__(self, reason: ScaipErrorReason, detail: str, *, ref: str | None = None) -> None:
        super().__init__(f"invalid SCAIP request ({reason}): {detail}")
        self.reason: ScaipErrorReason = reason
        self.snu: int = _SNU_FOR_REASON[reason]
        self.detail = detail
        self.ref = ref


@dataclass(frozen=True)
class ScaipRequest:
    """A parsed ``<mrq>``; codes are in their normalised stored form."""

    ref: str
    cid: str | None = None
    dty: str | None = None
    did: str | None = None
    mty: str | None = None
    stc: str | None = None
    stt: str | None = None
    pri: int | None = None
    lco: str | None = None
    lva: str | None = None
    lte: str | None = None
    lge: str | None = None
    crd: str | None = None
    ver: str | None = None
    extra: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_heartbeat(self) -> bool:
        """Heartbeat (``mty`` PI) or test transmission (``stc`` 0102/0103): the terminal lives."""
        return self.mty == "PI" or self.stc in _TEST_STC

    @property
    def is_cancel(self) -> bool:
        """Reset message (``mty`` RE) or the status "cancel" (``stc`` 0019)."""
        return self.mty == "RE" or self.stc == STC_CANCEL

    @property
    def kind(self) -> ScaipKind:
        """Triage class. Life-safety is checked before heartbeat so that a contradictory message
        (an alarm status inside a heartbeat) is never filed as a mere test."""
        if self.is_cancel:
            return "cancel"
        if self.stc in _LIFE_SAFETY_STC:
            return "life_safety"
        alarm_message = self.mty in (None, "ME")
        neutral_status = self.stc is None or not (
            self.stc in _TECHNICAL_STC or self.stc in _TEST_STC
        )
        if alarm_message and self.dty in _LIFE_SAFETY_DTY and neutral_status:
            return "life_safety"
        if self.is_heartbeat:
            return "test"
        if self.stc in _TECHNICAL_STC:
            return "technical"
        return "info"


def _local_name(tag: object) -> str:
    """Lower-case tag without any ``{namespace}`` prefix; comments and PIs yield ''."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def _decode_xml(body: bytes) -> Element:
    if len(body) > MAX_BODY_BYTES:
        raise ScaipError("too_large", f"{len(body)} bytes exceeds the {MAX_BODY_BYTES} byte limit")
    # An XML declaration must be the very first thing, so trim whitespace around the BOM first.
    text = body.strip().removeprefix(_UTF8_BOM).strip()
    if not text:
        raise ScaipError("malformed_xml", "empty body")
    try:
        # SCAIP uses no DTD, so refuse any: that stops entity bombs and external entities.
        root: Element = fromstring(_decode_declared(text), forbid_dtd=True)
    except DefusedXmlException as exc:
        detail = f"{type(exc).__name__}: DTDs and entities are refused"
        raise ScaipError("forbidden_xml", detail) from None
    except (ParseError, ValueError) as exc:
        # ValueError also covers text that cannot be re-encoded for expat (lone surrogates).
        raise ScaipError("malformed_xml", f"{type(exc).__name__}: {exc}") from None
    return root


def _decode_declared(text: bytes) -> bytes | str:
    """Decode in Python a body whose XML declaration names an encoding.

    expat itself reads only UTF-8, UTF-16 and single-byte encodings; terminals made for the
    Chinese market may declare GBK, GB2312 or GB18030. Handing the parser decoded text makes it
    ignore the declared name. Bodies without a declaration stay bytes (UTF-8 or a UTF-16 BOM).
    """
    declared = _DECLARED_ENCODING.match(text)
    if declared is None:
        return text
    name = declared.group(1).decode("ascii")
    try:
        return text.decode(name)
    except (LookupError, UnicodeError) as exc:
        detail = f"cannot decode as declared encoding {name!r}: {exc}"
        raise ScaipError("malformed_xml", detail) from None


def _element_text(element: Element, tag: str, ref: str | None) -> str:
    if len(element):
        raise ScaipError("bad_value", f"<{tag}> must hold text, not elements", ref=ref)
    return (element.text or "").strip()


def _collect(root: Element) -> tuple[dict[str, list[Element]], dict[str, str]]:
    """Known tags by name (every occurrence) and unknown tags as text (first occurrence)."""
    known: dict[str, list[Element]] = {}
    extra: dict[str, str] = {}
    for child in root:
        tag = _local_name(child.tag)
        if tag in _KNOWN_TAGS:
            known.setdefault(tag, []).append(child)
        elif tag:
            extra.setdefault(tag, "".join(child.itertext()).strip())
    return known, extra


def _single(known: dict[str, list[Element]], ref: str | None) -> dict[str, Element]:
    """One element per tag. Repeats with the same text are harmless; differing ones are refused
    because we could not tell which value the terminal meant."""
    single: dict[str, Element] = {}
    for tag, elements in known.items():
        if len({_fingerprint(element) for element in elements}) > 1:
            raise ScaipError("duplicate_field", f"<{tag}> appears with different values", ref=ref)
        single[tag] = elements[0]
    return single


def _fingerprint(element: Element) -> str:
    return _WHITESPACE.sub(" ", "".join(element.itertext())).strip()


def _code(value: str, tag: str, width: int, ref: str) -> str:
    """Zero-pad a numeric code to ``width`` digits: '10', '010' and '0010' all mean 0010."""
    significant = value.lstrip("0")
    if not _ASCII_DIGITS.fullmatch(value) or len(significant) > width:
        raise ScaipError("bad_value", f"<{tag}> {value!r} is not a {width}-digit code", ref=ref)
    return significant.zfill(width)


def parse_mrq(body: bytes) -> ScaipRequest:
    """Parse an ``application/scaip+xml`` request body or raise ``ScaipError``."""
    root = _decode_xml(body)
    if _local_name(root.tag) != "mrq":
        raise ScaipError("not_mrq", f"root element is <{_local_name(root.tag)}>, expected <mrq>")
    occurrences, extra = _collect(root)
    refs = occurrences.get("ref", [])
    # Read first, so that later refusals can still be answered with the terminal's own ref.
    ref_hint = (refs[0].text or "").strip() or None if len(refs) == 1 else None
    known = _single(occurrences, ref_hint)
    ref = _element_text(known["ref"], "ref", None) if "ref" in known else ""
    if not ref:
        raise ScaipError("missing_field", "<ref> is mandatory")
    if len(ref) > _MAX_REF_CHARS:
        raise ScaipError("bad_value", f"<ref> is longer than {_MAX_REF_CHARS} characters")

    values: dict[str, str] = {}
    for tag, element in known.items():
        if tag != "lge":
            text = _element_text(element, tag, ref)
            if text:  # an empty element means the same as an absent one
                values[tag] = text

    cid = values.get("cid")
    mty = values.get("mty")
    if mty is not None:
        mty = mty.upper()
        if not _MESSAGE_TYPE.fullmatch(mty):
            raise ScaipError("bad_value", f"<mty> {mty!r} is not a message type", ref=ref)
    pri = values.get("pri")
    lco = values.get("lco")
    if lco is not None and _ASCII_DIGITS.fullmatch(lco) and len(lco) <= 3:
        lco = lco.zfill(3)  # SS 91100 location codes are 3 digits; other text is kept as sent

    return ScaipRequest(
        ref=ref,
        cid=_WHITESPACE.sub("", cid) if cid is not None else None,
        dty=_code(values["dty"], "dty", 4, ref) if "dty" in values else None,
        did=values.get("did"),
        mty=mty,
        stc=_code(values["stc"], "stc", 4, ref) if "stc" in values else None,
        stt=values.get("stt"),
        # SS 91100 gives pri one digit; accept a few so an odd vendor value is not refused.
        pri=int(_code(pri, "pri", 3, ref)) if pri is not None else None,
        lco=lco,
        lva=values.get("lva"),
        lte=values.get("lte"),
        lge=_geo_text(known["lge"], extra) if "lge" in known else None,
        crd=values.get("crd"),
        ver=values.get("ver"),
        extra=extra,
    )


def _geo_text(element: Element, extra: dict[str, str]) -> str | None:
    """``<lge>`` holds ``<geo>`` (and ``<tim>``, ``<gga>``) or, from some vendors, bare text.

    The position goes into ``lge``; the other parts are kept in ``extra`` as ``lge.<tag>``.
    """
    geo: str | None = None
    for child in element:
        tag = _local_name(child.tag)
        if not tag:
            continue
        text = "".join(child.itertext()).strip()
        if tag == "geo":
            geo = geo or text or None
        else:
            extra.setdefault(f"lge.{tag}", text)
    if geo is None:
        geo = (element.text or "").strip() or None
    return geo


def build_mrs(*, ref: str, snu: int = 0, mre: int | None = None, hbi: int | None = None) -> bytes:
    """Build the ``<mrs>`` reply body (UTF-8, with XML declaration)."""
    if _NOT_XML_CHAR.search(ref):
        raise ValueError("ref holds characters that XML 1.0 cannot carry")
    for name, value, upper in (("snu", snu, 99999), ("mre", mre, 99), ("hbi", hbi, 9)):
        # SS 91100 schema widths: snu up to 5 digits, mre 2, hbi 1.
        if value is not None and not 0 <= value <= upper:
            raise ValueError(f"{name} must be between 0 and {upper}, got {value}")
    root = Element("mrs")
    SubElement(root, "ref").text = ref
    SubElement(root, "snu").text = str(int(snu))
    if mre is not None:
        SubElement(root, "mre").text = str(int(mre))
    if hbi is not None:
        SubElement(root, "hbi").text = str(int(hbi))
    # ElementTree escapes &, < and > in text; the declaration is written by hand so that it
    # carries the conventional double quotes and upper-case UTF-8.
    return b'<?xml version="1.0" encoding="UTF-8"?>' + tostring(
        root, encoding="utf-8", xml_declaration=False
    )


def build_mrq(
    *,
    ref: str,
    cid: str | None = None,
    dty: str | None = None,
    did: str | None = None,
    mty: str | None = None,
    stc: str | None = None,
    pri: int | None = None,
    lco: str | None = None,
    lge: str | None = None,
    crd: str | None = None,
    ver: str | None = None,
) -> bytes:
    """Build an ``<mrq>`` request body as a SCAIP terminal sends it (for the terminal simulator).

    Tags are written in SS 91100's order, only when given; ``lge`` goes into ``<lge><geo>``.
    Codes are sent as given, so that a test can imitate a vendor's padding (``10`` for 0010).
    """
    if not ref.strip():
        raise ValueError("ref is mandatory")
    tags = {"ref": ref, "cid": cid, "dty": dty, "did": did, "mty": mty, "stc": stc,
            "pri": None if pri is None else str(pri), "lco": lco, "lge": lge, "crd": crd,
            "ver": ver}  # fmt: skip
    root = Element("mrq")
    for name, value in tags.items():
        if value is None:
            continue
        if _NOT_XML_CHAR.search(value):
            raise ValueError(f"{name} holds characters that XML 1.0 cannot carry")
        element = SubElement(root, name)
        (SubElement(element, "geo") if name == "lge" else element).text = value
    return b'<?xml version="1.0" encoding="UTF-8"?>' + tostring(
        root, encoding="utf-8", xml_declaration=False
    )
