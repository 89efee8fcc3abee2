"""Tests for the SCAIP (SS 91100 / CLC/TS 50134-9) <mrq> parser and <mrs> builder."""

from __future__ import annotations

from collections.abc import Callable
from xml.etree.ElementTree import Element, tostring

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given
from hypothesis import strategies as st

from devices.scaip import (
    MAX_BODY_BYTES,
    MediaReply,
    ScaipError,
    ScaipRequest,
    Snu,
    build_mrs,
    parse_mrq,
)

FULL_MRQ = b"""<?xml version="1.0" encoding="UTF-8"?>
<mrq>
  <ref>a1B2</ref>
  <ver>01.00</ver>
  <cid>0046 70 123 45 67</cid>
  <dty>0003</dty>
  <did>PEND-01</did>
  <mty>ME</mty>
  <stc>0010</stc>
  <stt>Manual alarm</stt>
  <pri>1</pri>
  <lco>12</lco>
  <lva>2</lva>
  <lte>bedroom, 2nd floor</lte>
  <lge><geo>23.354,116.682</geo><tim>2024-05-01T08:00:00+08:00</tim></lge>
  <crd>sip:terminal-77@example.org</crd>
  <sco>0</sco>
</mrq>
"""


def mrq(*elements: str, prefix: bytes = b"") -> bytes:
    return prefix + ("<mrq>" + "".join(elements) + "</mrq>").encode()


def refused(body: bytes) -> ScaipError:
    with pytest.raises(ScaipError) as info:
        parse_mrq(body)
    return info.value


def test_minimal_mrq() -> None:
    request = parse_mrq(b"<mrq><ref>1</ref></mrq>")
    assert request == ScaipRequest(ref="1")
    assert request.kind == "info"
    assert not request.is_heartbeat
    assert not request.is_cancel


def test_full_mrq() -> None:
    request = parse_mrq(FULL_MRQ)
    assert request == ScaipRequest(
        ref="a1B2",
        cid="0046701234567",
        dty="0003",
        did="PEND-01",
        mty="ME",
        stc="0010",
        stt="Manual alarm",
        pri=1,
        lco="012",
        lva="2",
        lte="bedroom, 2nd floor",
        lge="23.354,116.682",
        crd="sip:terminal-77@example.org",
        ver="01.00",
        extra={"sco": "0", "lge.tim": "2024-05-01T08:00:00+08:00"},
    )
    assert request.kind == "life_safety"
    hash(request)  # usable as a key even though extra is a dict


@pytest.mark.parametrize("stc", ["10", "010", "0010", " 10 ", "00010"])
def test_status_code_padding_variants(stc: str) -> None:
    assert parse_mrq(mrq("<ref>r</ref>", f"<stc>{stc}</stc>")).stc == "0010"


@pytest.mark.parametrize("dty", ["5", "05", "005", "0005"])
def test_device_type_padding_variants(dty: str) -> None:
    assert parse_mrq(mrq("<ref>r</ref>", f"<dty>{dty}</dty>")).dty == "0005"


def test_spaces_in_cid_are_removed() -> None:
    request = parse_mrq(mrq("<ref>r</ref>", "<cid> 12 34\t56\n78 </cid>"))
    assert request.cid == "12345678"


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?><mrq><ref>r</ref></mrq>',
        b"\xef\xbb\xbf<mrq><ref>r</ref></mrq>",
        b'\r\n  <?xml version="1.0"?>\n<mrq><ref>r</ref></mrq>\n\n',
        b"  \xef\xbb\xbf  <mrq><ref>r</ref></mrq>  ",
        b"<mrq>\n\t<ref>\n   r\n </ref>\n</mrq>",
        b"<MRQ><REF>r</REF></MRQ>",
        b'<mrq xmlns="urn:example:scaip"><ref>r</ref></mrq>',
        b"<mrq><!-- comment --><ref>r</ref></mrq>",
    ],
)
def test_tolerated_envelopes(body: bytes) -> None:
    assert parse_mrq(body).ref == "r"


def test_latin1_declared_encoding_is_honoured() -> None:
    body = '<?xml version="1.0" encoding="ISO-8859-1"?><mrq><ref>r</ref><lte>K\xfcche</lte></mrq>'
    assert parse_mrq(body.encode("latin-1")).lte == "Küche"


@pytest.mark.parametrize("encoding", ["GBK", "gb2312", "GB18030", "utf-8", "UTF-8"])
def test_chinese_declared_encodings_are_decoded(encoding: str) -> None:
    # expat alone refuses multi-byte encodings; terminals for the Chinese market may use them.
    body = f'<?xml version="1.0" encoding="{encoding}"?><mrq><ref>r</ref><lte>卧室</lte></mrq>'
    assert parse_mrq(body.encode(encoding)).lte == "卧室"


def test_whitespace_and_case_inside_values() -> None:
    request = parse_mrq(mrq("<ref>r</ref>", "<mty> pi </mty>", "<stc>\n 0102 \n</stc>"))
    assert request.mty == "PI"
    assert request.stc == "0102"


def test_empty_elements_count_as_absent() -> None:
    request = parse_mrq(mrq("<ref>r</ref>", "<stc/>", "<stt>  </stt>", "<cid></cid>"))
    assert (request.stc, request.stt, request.cid) == (None, None, None)


@pytest.mark.parametrize(
    "elements",
    [("<mty>PI</mty>",), ("<stc>0102</stc>",), ("<stc>102</stc>",), ("<stc>0103</stc>",)],
)
def test_heartbeat(elements: tuple[str, ...]) -> None:
    request = parse_mrq(mrq("<ref>r</ref>", "<cid>77</cid>", *elements))
    assert request.is_heartbeat
    assert request.kind == "test"


@pytest.mark.parametrize(
    "elements",
    [("<mty>RE</mty>",), ("<stc>0019</stc>",), ("<mty>re</mty>", "<stc>10</stc>")],
)
def test_cancel(elements: tuple[str, ...]) -> None:
    request = parse_mrq(mrq("<ref>r</ref>", *elements))
    assert request.is_cancel
    assert request.kind == "cancel"


@pytest.mark.parametrize(
    ("elements", "kind"),
    [
        (("<mty>ME</mty>", "<stc>0010</stc>"), "life_safety"),
        (("<mty>ME</mty>", "<stc>9</stc>"), "life_safety"),
        (("<mty>ME</mty>", "<dty>0005</dty>"), "life_safety"),  # fall detector alarm
        (("<dty>0003</dty>",), "life_safety"),  # pendant, no mty: treat as an alarm
        (("<mty>PI</mty>", "<stc>0010</stc>"), "life_safety"),  # never file an alarm as a test
        (("<mty>ME</mty>", "<dty>0005</dty>", "<stc>0016</stc>"), "technical"),
        (("<mty>ME</mty>", "<dty>0005</dty>", "<stc>0102</stc>"), "test"),
        (("<mty>IN</mty>", "<dty>0005</dty>"), "info"),
        (("<mty>ME</mty>", "<stc>0016</stc>"), "technical"),
        (("<mty>ME</mty>", "<stc>85</stc>"), "technical"),
        (("<mty>IN</mty>", "<stc>0086</stc>"), "technical"),
        (("<mty>IN</mty>", "<stc>0062</stc>"), "info"),
        (("<mty>ME</mty>", "<dty>0031</dty>"), "info"),
    ],
)
def test_kinds(elements: tuple[str, ...], kind: str) -> None:
    assert parse_mrq(mrq("<ref>r</ref>", *elements)).kind == kind


def test_unknown_tags_go_to_extra() -> None:
    request = parse_mrq(mrq("<ref>r</ref>", "<ame>1</ame>", "<ite> info <b>text</b> </ite>"))
    assert request.extra == {"ame": "1", "ite": "info text"}


def test_lge_with_bare_text() -> None:
    assert parse_mrq(mrq("<ref>r</ref>", "<lge> 23.35,116.68 </lge>")).lge == "23.35,116.68"


def test_identical_duplicates_are_accepted() -> None:
    assert parse_mrq(mrq("<ref>r</ref>", "<stc>10</stc>", "<stc>10</stc>")).stc == "0010"


@pytest.mark.parametrize(
    ("body", "reason", "snu"),
    [
        (b"<mrq><cid>1</cid></mrq>", "missing_field", Snu.MANDATORY_TAG_MISSING),
        (b"<mrq><ref>  </ref></mrq>", "missing_field", Snu.MANDATORY_TAG_MISSING),
        (b"<mrs><ref>r</ref><snu>0</snu></mrs>", "not_mrq", Snu.INVALID_FORMAT),
        (b"<alarm><ref>r</ref></alarm>", "not_mrq", Snu.INVALID_FORMAT),
        (b"", "malformed_xml", Snu.INVALID_FORMAT),
        (b" \xef\xbb\xbf \n", "malformed_xml", Snu.INVALID_FORMAT),
        (b"<mrq><ref>r</ref>", "malformed_xml", Snu.INVALID_FORMAT),
        (b"not xml at all", "malformed_xml", Snu.INVALID_FORMAT),
        (b"<mrq><ref>r\xff</ref></mrq>", "malformed_xml", Snu.INVALID_FORMAT),
        (b'<?xml version="1.0" encoding="no-such"?><mrq/>', "malformed_xml", Snu.INVALID_FORMAT),
        (
            b'<?xml version="1.0" encoding="gbk"?><mrq>\x80</mrq>',
            "malformed_xml",
            Snu.INVALID_FORMAT,
        ),
        (b'<?xml version="1.0" encoding="base64"?><mrq/>', "malformed_xml", Snu.INVALID_FORMAT),
        (
            b'<?xml version="1.0" encoding="utf-8"?><mrq>\xff</mrq>',
            "malformed_xml",
            Snu.INVALID_FORMAT,
        ),
        (b"<mrq><ref>" + b"x" * 65 + b"</ref></mrq>", "bad_value", Snu.WRONG_DATA_CONTENT),
        (b"<mrq><ref><x>r</x></ref></mrq>", "bad_value", Snu.WRONG_DATA_CONTENT),
        (
            b"<mrq><ref>a</ref><ref>b</ref></mrq>",
            "duplicate_field",
            Snu.WRONG_DATA_CONTENT,
        ),
    ],
)
def test_refusals(body: bytes, reason: str, snu: Snu) -> None:
    error = refused(body)
    assert error.reason == reason
    assert error.snu == snu
    assert isinstance(error, ValueError)
    assert error.ref is None


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ("<stc>abc</stc>", "bad_value"),
        ("<stc>12345</stc>", "bad_value"),
        ("<stc>-10</stc>", "bad_value"),
        ("<stc>\u0661\u0660</stc>", "bad_value"),  # Arabic-Indic digits are not SCAIP digits
        ("<dty>0x05</dty>", "bad_value"),
        ("<pri>high</pri>", "bad_value"),
        ("<mty>M!</mty>", "bad_value"),
        ("<stc><b>10</b></stc>", "bad_value"),
        ("<stc>10</stc><stc>9</stc>", "duplicate_field"),
    ],
)
def test_bad_values_keep_the_ref_for_the_reply(element: str, reason: str) -> None:
    error = refused(mrq("<ref>R7</ref>", element))
    assert error.reason == reason
    assert error.snu == Snu.WRONG_DATA_CONTENT
    assert error.ref == "R7"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE mrq [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<mrq><ref>r</ref><stt>&lol9;</stt></mrq>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE mrq [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<mrq><ref>r</ref><stt>&secret;</stt></mrq>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE mrq SYSTEM "http://127.0.0.1:9/scaip.dtd">
<mrq><ref>r</ref></mrq>
"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE mrq [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x.dtd"> %remote;]>
<mrq><ref>r</ref></mrq>
"""


@pytest.mark.parametrize(
    "body",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY, b"<!DOCTYPE mrq><mrq/>"],
)
def test_dtds_and_entities_are_refused(body: bytes) -> None:
    error = refused(body)
    assert error.reason == "forbidden_xml"
    assert error.snu == Snu.INVALID_FORMAT


def test_oversized_body_is_refused_before_parsing() -> None:
    body = mrq("<ref>r</ref>", "<stt>", "x" * MAX_BODY_BYTES, "</stt>")
    error = refused(body)
    assert error.reason == "too_large"
    assert error.snu == Snu.MESSAGE_TOO_LONG


def test_body_at_the_limit_is_accepted() -> None:
    head = mrq("<ref>r</ref>")
    body = head + b" " * (MAX_BODY_BYTES - len(head))
    assert len(body) == MAX_BODY_BYTES
    assert parse_mrq(body).ref == "r"


def _texts(body: bytes) -> dict[str, str]:
    root: Element = fromstring(body)
    assert root.tag == "mrs"
    return {child.tag: child.text or "" for child in root}


def test_build_mrs_minimal_exact_bytes() -> None:
    assert build_mrs(ref="a1B2") == (
        b'<?xml version="1.0" encoding="UTF-8"?><mrs><ref>a1B2</ref><snu>0</snu></mrs>'
    )


def test_build_mrs_with_media_and_heartbeat() -> None:
    body = build_mrs(ref="r", snu=Snu.OK, mre=MediaReply.DUPLEX, hbi=2)
    assert body.endswith(b"<mrs><ref>r</ref><snu>0</snu><mre>1</mre><hbi>2</hbi></mrs>")
    assert _texts(body) == {"ref": "r", "snu": "0", "mre": "1", "hbi": "2"}


def test_build_mrs_escapes_ref() -> None:
    body = build_mrs(ref="</ref><snu>0</snu>&amp;\"'", snu=3)
    assert b"<snu>0</snu>&amp;" not in body
    assert _texts(body) == {"ref": "</ref><snu>0</snu>&amp;\"'", "snu": "3"}


def test_build_mrs_non_ascii_ref_is_utf8() -> None:
    body = build_mrs(ref="呼援通")
    assert "呼援通".encode() in body
    assert _texts(body)["ref"] == "呼援通"


@pytest.mark.parametrize(
    "build",
    [
        lambda: build_mrs(ref="r", snu=-1),
        lambda: build_mrs(ref="r", snu=100000),
        lambda: build_mrs(ref="r", mre=100),
        lambda: build_mrs(ref="r", hbi=10),
        lambda: build_mrs(ref="bad\x00ref"),
    ],
)
def test_build_mrs_rejects_unrepresentable_values(build: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):
        build()


def test_error_reply_round_trip() -> None:
    error = refused(mrq("<ref>R9</ref>", "<stc>x</stc>"))
    reply = build_mrs(ref=error.ref or "", snu=error.snu)
    assert _texts(reply) == {"ref": "R9", "snu": "3"}


# Characters XML 1.0 can carry and that survive a parse unchanged (a bare CR becomes LF).
XML_TEXT = st.text(
    alphabet=st.characters(
        exclude_categories=["Cs"],
        exclude_characters="\r\ufffe\uffff",
        min_codepoint=0x20,
    )
    | st.sampled_from("\t\n"),
    max_size=40,
)


@given(ref=XML_TEXT, snu=st.integers(0, 99999), mre=st.none() | st.integers(0, 3))
def test_build_mrs_parses_back(ref: str, snu: int, mre: int | None) -> None:
    assert _texts(build_mrs(ref=ref, snu=snu, mre=mre)) == {
        "ref": ref,
        "snu": str(snu),
        **({} if mre is None else {"mre": str(mre)}),
    }


@given(st.integers(0, 9999), st.integers(1, 4))
def test_any_padding_of_a_status_code_normalises(code: int, width: int) -> None:
    text = str(code).zfill(width)
    assert parse_mrq(mrq("<ref>r</ref>", f"<stc>{text}</stc>")).stc == f"{code:04d}"


@given(st.binary(max_size=512))
def test_fuzz_random_bytes_raise_only_scaip_error(body: bytes) -> None:
    try:
        parse_mrq(body)
    except ScaipError as error:
        assert error.snu in set(Snu)


@given(st.binary(max_size=256))
def test_fuzz_bytes_inside_an_mrq_raise_only_scaip_error(payload: bytes) -> None:
    try:
        request = parse_mrq(b"<mrq><ref>r</ref><stc>" + payload + b"</stc></mrq>")
    except ScaipError as error:
        assert error.snu in set(Snu)
        return
    assert request.ref == "r"


TAGS = st.sampled_from(
    ["ref", "cid", "dty", "did", "mty", "stc", "stt", "pri", "lco", "lge", "crd", "x"]
)


@given(st.lists(st.tuples(TAGS, XML_TEXT), max_size=8))
def test_fuzz_structured_mrq_raise_only_scaip_error(fields: list[tuple[str, str]]) -> None:
    root = Element("mrq")
    for tag, text in fields:
        child = Element(tag)
        child.text = text
        root.append(child)
    try:
        request = parse_mrq(tostring(root))
    except ScaipError as error:
        assert error.snu in set(Snu)
        return
    assert request.ref
    assert request.stc is None or len(request.stc) == 4
    assert request.cid is None or not any(ch.isspace() for ch in request.cid)
