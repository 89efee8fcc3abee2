"""Malformed SIP datagrams, RTP packets and SCAIP bodies, generated deterministically.

Each input belongs to a *class* (what is wrong with it) and is made from a valid message by a
seeded ``random.Random``, so that a failing run can be replayed exactly. The junk is chosen so
that a correct handler must refuse it: every junk INVITE breaks a MUST of RFC 3261 (or RFC 4566
for its SDP), so none of them may become an alarm. Quirks that a liberal receiver accepts (a huge
but well-formed header, a display name that is not UTF-8) are sent as OPTIONS, BYE or a MESSAGE
of a type we do not take, which never make an alarm either way.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

JUNK_USER = "fuzzer"  # the From user of every junk request: an alarm from it is a failure
MAX_UDP = 65507  # the largest IPv4 UDP payload


@dataclass(frozen=True)
class Junk:
    kind: str  # the class of malformation
    method: str  # the method of the valid message it was made from ("" if none)
    branch: str  # the Via branch its answer (if any) carries
    data: bytes


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    local_port: int  # where answers go (the Via of the junk)


def sdp(rtp_port: int = 40000) -> str:
    return (
        "v=0\r\no=fuzz 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    )


def request(
    target: Target, method: str, branch: str, *, body: bytes = b"", content_type: str = "",
    headers: list[str] | None = None, length: str | None = None,
) -> list[bytes]:  # fmt: skip
    """A valid request as lines (without the blank line), plus the body as the last element."""
    lines = [
        f"{method} sip:centre@{target.host}:{target.port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{target.local_port};branch={branch};rport",
        f"From: <sip:{JUNK_USER}@127.0.0.1:{target.local_port}>;tag=f{branch[-6:]}",
        f"To: <sip:centre@{target.host}:{target.port}>",
        f"Call-ID: {branch}@fuzz",
        f"CSeq: 1 {method}",
        f"Contact: <sip:{JUNK_USER}@127.0.0.1:{target.local_port}>",
        "Max-Forwards: 70",
        *(headers or []),
    ]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    return [line.encode() for line in lines] + [body]


def join(parts: list[bytes]) -> bytes:
    *lines, body = parts
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def invite(target: Target, branch: str, **kwargs: object) -> list[bytes]:
    return request(target, "INVITE", branch, body=sdp().encode(), content_type="application/sdp",
                   **kwargs)  # type: ignore[arg-type]  # fmt: skip


# -- the classes of junk ---------------------------------------------------------------------
# Each maker gets the generator, the target and a fresh branch, and returns (method, bytes).

Maker = Callable[[random.Random, Target, str], tuple[str, bytes]]


def binary_junk(rng: random.Random, _target: Target, _branch: str) -> tuple[str, bytes]:
    # Not text at all; a leading byte above 0x7f keeps it from spelling a start line by chance.
    size = rng.choice((1, 7, 64, 512, 1400))
    return "", bytes([0x80 | rng.randrange(128)]) + rng.randbytes(size)


def truncated_head(rng: random.Random, target: Target, branch: str) -> tuple[str, bytes]:
    # Cut inside the start line or the first headers: Call-ID and CSeq are never reached.
    method = rng.choice(("INVITE", "MESSAGE", "OPTIONS", "BYE"))
    data = join(request(target, method, branch))
    cut = data.index(b"\r\nCall-ID")
    return method, data[: rng.randrange(1, cut)]


def truncated_body(rng: random.Random, target: Target, branch: str) -> tuple[str, bytes]:
    # The datagram ends before the body its Content-Length announces (RFC 3261 §18.3).
    body = sdp().encode()
    data = join(invite(target, branch))
    return "INVITE", data[: len(data) - rng.randrange(1, len(body) - 1)]


def bad_content_length(rng: random.Random, target: Target, branch: str) -> tuple[str, bytes]:
    # Not 1*DIGIT (RFC 3261 §20.14), or more than the datagram holds.
    value = rng.choice(("-1", "abc", "0x20", "99999999999999999999", "1 2", "２０", ""))
    return "INVITE", join(invite(target, branch, length=value or "  "))


def missing_header(rng: random.Random, target: Target, branch: str) -> tuple[str, bytes]:
    method = rng.choice(("INVITE", "MESSAGE", "OPTIONS", "BYE"))
    gone = rng.choice((b"Via:", b"Call-ID:", b"CSeq:", b"From:", b"To:"))
    parts = invite(target, branch) if method == "INVITE" else request(target, method, branch)
    return method, join([p for p in parts if not p.startswith(gone)])


def invalid_utf8(rng: random.Random, target: Target, branch: str) -> tuple[str, bytes]:
    bad = rng.choice((b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"))
    choice = rng.randrange(3)
    if choice == 0:  # in the method: no such method
        parts = invite(target, branch)
        parts[0] = b"INV" + bad + parts[0][3:]
        return "INVITE", join(parts)
    method = rng.choice(("OPTIONS", "BYE", "MESSAGE"))
    parts = request(target, method, branch, body=b"hello " + bad, content_type="text/plain")
    if choice == 1:  # in the From display name (GBK terminals do this): accepted, no alarm
        parts[2] = b'From: "' + bad + b'" ' + parts[2][6:]
    else:
        parts[4] = parts[4] + bad  # in the Call-ID
    return method, join(parts)


def huge_header(rng: random.Random, target: Target, branch: str) -> tuple[str, bytes]:
    method = rng.choice(("OPTIONS", "BYE", "MESSAGE"))
    if rng.random() < 0.5:  # one long header
        extra = [b"X-Filler: " + b"A" * rng.choice((8_000, 30_000, 60_000))]
    else:  # more headers than any parser should keep
        extra = [f"X-H{i}: {i}".encode() for i in range(rng.choice((300, 1000, 4000)))]
    parts = request(
        target, method, branch, content_type="text/plain" if method == "MESSAGE" else ""
    )
    return method, join(parts[:-1] + extra + parts[-1:])[:MAX_UDP]


def oversize_datagram(rng: random.Random, target: Target, branch: str) -> tuple[str, bytes]:
    # As big as UDP carries: a body of junk text (a MESSAGE of a type we do not take) or bytes.
    if rng.random() < 0.5:
        head = join(request(target, "MESSAGE", branch, content_type="text/plain", length="0"))
        body = b"x" * (MAX_UDP - len(head) - 10)
        parts = request(target, "MESSAGE", branch, body=body, content_type="text/plain")
        return "MESSAGE", join(parts)[:MAX_UDP]
    return "", b"\xfe" + rng.randbytes(MAX_UDP - 1)


def bad_sdp(rng: random.Random, target: Target, branch: str) -> tuple[str, bytes]:
    broken = rng.choice(
        (
            sdp().replace("m=audio 40000", "m=audio notaport"),
            sdp().replace("m=audio 40000 RTP/AVP 0 101", "m=audio"),
            sdp().replace("v=0", "v=zero"),
            "\x00\x01\x02 not sdp at all \xff",
            "<html><body>not sdp</body></html>",
            sdp().replace("v=0\r\n", ""),
        )
    )
    body = broken.encode("utf-8", "surrogateescape")
    return "INVITE", join(
        request(target, "INVITE", branch, body=body, content_type="application/sdp")
    )


def bad_start_line(rng: random.Random, target: Target, branch: str) -> tuple[str, bytes]:
    parts = invite(target, branch)
    parts[0] = rng.choice(
        (
            b"INVITE",
            b"INVITE sip:centre@127.0.0.1",
            b"SIP/2.0 abc Broken",
            b"   ",
            b"\tINVITE\t\t",
        )
    )
    return "INVITE", join(parts)


CLASSES: dict[str, Maker] = {
    "binary": binary_junk,
    "truncated_head": truncated_head,
    "truncated_body": truncated_body,
    "bad_content_length": bad_content_length,
    "missing_header": missing_header,
    "invalid_utf8": invalid_utf8,
    "huge_header": huge_header,
    "oversize_datagram": oversize_datagram,
    "bad_sdp": bad_sdp,
    "bad_start_line": bad_start_line,
}


def sip_junk(seed: int, target: Target, count: int) -> Iterator[Junk]:
    """``count`` malformed datagrams, the classes in turn, each made with ``seed``."""
    rng = random.Random(seed)
    names = list(CLASSES)
    for i in range(count):
        kind = names[i % len(names)]
        branch = f"z9hG4bK-junk-{seed}-{i:04d}"
        method, data = CLASSES[kind](rng, target, branch)
        yield Junk(kind, method, branch, data)


# -- RTP -------------------------------------------------------------------------------------


def rtp_header(
    rng: random.Random, *, version: int = 2, pt: int = 0, cc: int = 0, x: bool = False,
    p: bool = False, ssrc: int = 0x1234,
) -> bytes:  # fmt: skip
    first = (version << 6) | (0x20 if p else 0) | (0x10 if x else 0) | cc
    return struct.pack("!BBHII", first, pt, rng.randrange(65536), rng.randrange(1 << 32), ssrc)


def rtp_junk(seed: int, count: int, *, dtmf_pt: int = 101) -> Iterator[tuple[str, bytes]]:
    """Malformed RTP, none of which is a telephone-event a receiver may take as a digit."""
    rng = random.Random(seed)
    makers: dict[str, Callable[[], bytes]] = {
        "short": lambda: rng.randbytes(rng.randrange(0, 12)),
        "bad_version": lambda: (
            rtp_header(rng, version=rng.choice((0, 1, 3)), pt=dtmf_pt)
            + bytes([1, 0x80, 0, 160])  # digit 1 with the end bit: a version-2 parser would hear it
        ),
        "truncated_csrc": lambda: rtp_header(rng, cc=15, pt=dtmf_pt) + rng.randbytes(8),
        "truncated_extension": lambda: (
            rtp_header(rng, x=True, pt=dtmf_pt) + struct.pack("!HH", 0xBEDE, 500) + b"\x00" * 4
        ),
        "bad_padding": lambda: rtp_header(rng, p=True, pt=dtmf_pt) + bytes([2, 0x80, 0, 200]),
        "short_event": lambda: rtp_header(rng, pt=dtmf_pt) + rng.randbytes(rng.randrange(0, 4)),
        "event_out_of_range": lambda: (
            rtp_header(rng, pt=dtmf_pt)
            + struct.pack("!BBH", rng.randrange(16, 256), 0x80 | 10, 800)
        ),
        "unknown_payload_type": lambda: (
            rtp_header(rng, pt=rng.choice((34, 77, 96, 127))) + rng.randbytes(160)
        ),
        "rtcp_garbage": lambda: bytes([0x80, rng.randrange(200, 205)]) + rng.randbytes(30),
        "oversize": lambda: rtp_header(rng, pt=0) + rng.randbytes(MAX_UDP - 12),
        "binary": lambda: bytes([rng.randrange(0, 64)]) + rng.randbytes(rng.randrange(12, 400)),
    }
    names = list(makers)
    for i in range(count):
        kind = names[i % len(names)]
        yield kind, makers[kind]()


# -- SCAIP bodies ----------------------------------------------------------------------------


def billion_laughs(ref: str | None = "b1") -> str:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol%s;" % ("" if i == 1 else i - 1)) * 10}">' for i in range(1, 10)
    )
    ref_tag = f"<ref>{ref}</ref>" if ref else ""
    return (
        f'<?xml version="1.0"?><!DOCTYPE mrq [{entities}]>'
        f"<mrq>{ref_tag}<cid>x</cid><stt>&lol9;</stt></mrq>"
    )


def quadratic_blowup() -> str:
    big = "A" * 5000
    return (
        f'<?xml version="1.0"?><!DOCTYPE mrq [<!ENTITY a "{big}">]>'
        f"<mrq><ref>q1</ref><stt>{'&a;' * 1500}</stt></mrq>"
    )


def external_entity(system_id: str) -> str:
    return (
        f'<?xml version="1.0"?><!DOCTYPE mrq [<!ENTITY xxe SYSTEM "{system_id}">]>'
        "<mrq><ref>x1</ref><cid>x</cid><mty>ME</mty><stc>0010</stc><stt>&xxe;</stt></mrq>"
    )


def parameter_entity(url: str) -> str:
    return (
        f'<?xml version="1.0"?><!DOCTYPE mrq [<!ENTITY % remote SYSTEM "{url}"> %remote;]>'
        "<mrq><ref>p1</ref></mrq>"
    )


def external_dtd(url: str) -> str:
    return f'<?xml version="1.0"?><!DOCTYPE mrq SYSTEM "{url}"><mrq><ref>d1</ref></mrq>'


def deeply_nested(depth: int) -> str:
    return "<mrq><ref>n1</ref><stt>" + "<a>" * depth + "x" + "</a>" * depth + "</stt></mrq>"


def hostile_scaip_bodies(http_url: str) -> dict[str, tuple[bytes, str]]:
    """name → (body, the ``scaip.rejected`` reason expected)."""
    return {
        "billion_laughs": (billion_laughs().encode(), "forbidden_xml"),
        "billion_laughs_no_ref": (billion_laughs(None).encode(), "forbidden_xml"),
        "quadratic_blowup": (quadratic_blowup().encode(), "forbidden_xml"),
        "xxe_file": (external_entity("file:///etc/passwd").encode(), "forbidden_xml"),
        "xxe_http": (external_entity(http_url + "/xxe").encode(), "forbidden_xml"),
        "parameter_entity": (parameter_entity(http_url + "/pe").encode(), "forbidden_xml"),
        "external_dtd": (external_dtd(http_url + "/dtd").encode(), "forbidden_xml"),
        "internal_dtd": (
            b'<?xml version="1.0"?><!DOCTYPE mrq [<!ELEMENT mrq ANY>]><mrq><ref>i1</ref></mrq>',
            "forbidden_xml",
        ),
        "deeply_nested": (deeply_nested(1500).encode(), "bad_value"),
        "deeply_nested_unclosed": (("<mrq><ref>u1</ref>" + "<a>" * 4000).encode(), "malformed_xml"),
        "not_utf8": (b"<mrq><ref>g1</ref><stt>\xd5\xc5\xc8\xfd\xff</stt></mrq>", "malformed_xml"),
        "lying_encoding": (
            b'<?xml version="1.0" encoding="UTF-8"?><mrq><ref>e1</ref><stt>\xc3\x28</stt></mrq>',
            "malformed_xml",
        ),
        "unknown_encoding": (
            b'<?xml version="1.0" encoding="x-nonsense-9"?><mrq><ref>e2</ref></mrq>',
            "malformed_xml",
        ),
        "utf16_declared_utf8": (
            '<?xml version="1.0" encoding="UTF-8"?><mrq><ref>e3</ref></mrq>'.encode("utf-16-le"),
            "malformed_xml",
        ),
        "oversized": (
            ("<mrq><ref>o1</ref><stt>" + "A" * 20_000 + "</stt></mrq>").encode(),
            "too_large",
        ),
        "near_datagram_limit": (
            ("<mrq><ref>o2</ref><stt>" + "B" * 60_000 + "</stt></mrq>").encode(),
            "too_large",
        ),
        "not_mrq": (b"<mrs><ref>r1</ref><snu>0</snu></mrs>", "not_mrq"),
        "no_ref": (b"<mrq><cid>x</cid><stc>0010</stc></mrq>", "missing_field"),
        "bad_stc": (b"<mrq><ref>s1</ref><stc>DROP TABLE</stc></mrq>", "bad_value"),
        "binary": (bytes(range(256)) * 4, "malformed_xml"),
        "empty": (b"", "malformed_xml"),
    }
