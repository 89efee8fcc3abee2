"""SIP messages for the pyVoIP backend: a tolerant parser, response/request builders, SDP.

pyVoIP 1.6.8's ``SIPMessage`` drops a whole INVITE for one header line it cannot split, knows only
four methods, reads Via/From/To with fragile splits, trusts Content-Length and raises on SDP it
does not expect (shared/docs/PYVOIP.md). :class:`HardenedSIPMessage` keeps pyVoIP's ``headers``
shapes (so pyVoIP code paths still work on it) but parses what real terminals and proxies send.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# pyVoIP.SIP imported before pyVoIP.VoIP fails (a circular import inside pyVoIP 1.6.8).
import pyVoIP.VoIP  # noqa: F401
from pyVoIP import SIP

from callcenter.sip.pyvoip_fixes import enabled

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
MULTI_VALUE = ("Via", "Record-Route", "Route")  # order matters, every occurrence is kept
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length", "Content-Type",
        "Content-Encoding", "Max-Forwards", "Record-Route", "Route", "Allow", "Supported",
        "Require", "User-Agent", "Server", "Expires", "P-Asserted-Identity", "Accept", "Event",
        "Subject", "WWW-Authenticate", "Authorization",
    )
}  # fmt: skip
# RFC 3261 §7.3.3 compact forms.
_COMPACT = {
    "v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "l": "Content-Length",
    "c": "Content-Type", "e": "Content-Encoding", "k": "Supported", "s": "Subject", "o": "Event",
}  # fmt: skip
_VIA_RE = re.compile(r"^\s*(SIP\s*/\s*2\.0\s*/\s*[A-Za-z]+)\s+([^;\s]+)\s*(.*)$", re.IGNORECASE)
_STOCK_PARSE_RAW_HEADER = SIP.SIPMessage.parse_raw_header  # captured before harden() patches it


def split_commas(value: str) -> list[str]:
    """Split a header value on the commas that separate values (not those inside <> or "")."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and ch == ",":
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def parse_raw_header_tolerant(headers_raw: list[bytes], handle: Callable[[str, Any], None]) -> None:
    """Replacement for ``SIPMessage.parse_raw_header`` (SIP.py:725), installed by harden().

    Stock code does ``line.split(": ")[1]``: an empty ``Supported:`` raises IndexError and
    SIPClient.recv drops the whole INVITE (defect "header-tolerant"). Here a line splits on its
    first ':' (RFC 3261 §7.3.1 allows no space), names are case-insensitive and compact forms are
    expanded (§7.3.3), folded lines are joined, and Via/Record-Route/Route keep every value.
    """
    if not enabled("header-tolerant"):
        _STOCK_PARSE_RAW_HEADER(headers_raw, handle)
        return
    lines: list[str] = []
    for raw in headers_raw:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if text[:1] in (" ", "\t") and lines:
            lines[-1] += " " + text.strip()  # RFC 3261 §7.3.1 line folding
        elif text.strip():
            lines.append(text)
    fields: dict[str, Any] = {"Via": []}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            continue  # not a header line at all: ignore it rather than lose the message
        name = name.strip()
        name = _COMPACT.get(name.lower()) or _CANONICAL.get(name.lower(), name)
        value = value.strip()
        if name in MULTI_VALUE:
            fields.setdefault(name, []).extend(split_commas(value))
        elif name not in fields:
            fields[name] = value
    for name, value in fields.items():
        handle(name, value)


@dataclass
class Via:
    proto: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Via:
        m = _VIA_RE.match(value)
        if m is None:
            raise SIP.SIPParseError(f"unreadable Via: {value[:80]!r}")
        host, port = split_hostport(m.group(2))
        params: dict[str, str | None] = {}
        for item in m.group(3).split(";"):
            key, eq, val = item.strip().partition("=")
            if key:
                params[key.lower()] = val.strip() if eq else None
        return cls(re.sub(r"\s+", "", m.group(1)).upper(), host, port, params)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        sent_by = f"{host}:{self.port}" if self.port else host
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{self.proto} {sent_by}{params}"

    def as_pyvoip(self) -> dict[str, Any]:
        """The dict pyVoIP's own code reads (SIP.py:404 parse_header)."""
        return {"type": self.proto, "address": (self.host, str(self.port or 5060)), **self.params}


def split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):  # IPv6 reference
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    try:
        return host, int(port) if port else None
    except ValueError:
        raise SIP.SIPParseError(f"bad port in {text!r}") from None


@dataclass(frozen=True)
class NameAddr:
    display: str
    uri: str
    params: dict[str, str]

    @property
    def user(self) -> str:
        return uri_user(self.uri)


def parse_name_addr(value: str) -> NameAddr:
    """From/To/Contact/P-Asserted-Identity (RFC 3261 §20.10, §25.1 name-addr / addr-spec)."""
    value = value.strip()
    display = ""
    if value.startswith('"'):
        end = value.find('"', 1)
        while end > 0 and value[end - 1] == "\\":
            end = value.find('"', end + 1)
        display, value = value[1:end], value[end + 1 :].strip() if end > 0 else ""
    if "<" in value:
        lt = value.index("<")
        gt = value.find(">", lt)
        display = display or value[:lt].strip()
        uri = value[lt + 1 : gt if gt > 0 else len(value)]
        rest = value[gt + 1 :] if gt > 0 else ""
    else:  # addr-spec: ;params belong to the header, not to the URI (§20.10)
        uri, _, rest = value.partition(";")
        rest = ";" + rest
    params: dict[str, str] = {}
    for item in rest.split(";"):
        key, _, val = item.strip().partition("=")
        if key:
            params[key.lower()] = val.strip()
    return NameAddr(display.strip(), uri.strip(), params)


def uri_user(uri: str) -> str:
    """``sip:alarm42@host;x=y`` → ``alarm42``; ``tel:+8610…`` → ``+8610…``; else ""."""
    _, colon, rest = uri.strip().partition(":")
    if not colon:
        return ""
    if "@" not in rest:
        return rest.split(";")[0] if uri.lower().startswith("tel:") else ""
    return rest.split("@", 1)[0].split(":")[0].split(";")[0]


def is_loose_route(route: str) -> bool:
    """RFC 3261 §19.1.1: a Route URI with the ``lr`` parameter is a loose router."""
    uri = parse_name_addr(route).uri
    return any(p.split("=")[0].strip().lower() == "lr" for p in uri.split(";")[1:])


def uri_hostport(uri: str) -> tuple[str, int]:
    """Where a SIP URI points (no DNS SRV: RFC 3263 is out of scope for this backend)."""
    _, _, rest = uri.strip().strip("<>").partition(":")
    rest = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    host, port = split_hostport(rest)
    return host, port or 5060


class HardenedSIPMessage(SIP.SIPMessage):
    """A request or response, parsed tolerantly; ``headers`` keeps pyVoIP's shapes."""

    def __init__(self, data: bytes) -> None:
        self.method = ""
        self.uri = ""
        self.version = ""
        self.status_code = 0
        self.reason = ""
        self.fields: dict[str, Any] = {}  # header values as received (first occurrence)
        self.vias: list[Via] = []
        self.record_route: list[str] = []
        self.content = b""
        self.bad_request: str | None = None  # why we answer 400 (RFC 3261 §21.4.1)
        self.source: tuple[str, int] = ("", 0)
        self.received_at = 0.0  # time.time() when our socket read it (set by the transport)
        super().__init__(data)  # calls self.parse

    def parse(self, data: bytes) -> None:
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.heading = lines[0]
        parts = lines[0].decode("utf-8", "replace").split(None, 2)
        if len(parts) < 3:
            raise SIP.SIPParseError(f"bad start line {lines[0][:80]!r}")
        if parts[0].upper().startswith("SIP/"):
            self.type = SIP.SIPMessageType.RESPONSE
            self.version, self.reason = parts[0], parts[2]
            try:
                self.status_code = int(parts[1])
            except ValueError:
                raise SIP.SIPParseError(f"bad status {parts[1]!r}") from None
            with contextlib.suppress(ValueError):  # a code pyVoIP has no name for
                self.status = SIP.SIPStatus(self.status_code)
        else:
            self.type = SIP.SIPMessageType.MESSAGE
            # Method names are case-sensitive (RFC 3261 §7.1): "invite" is an unknown method.
            self.method, self.uri, self.version = parts[0], parts[1], parts[2].strip()
        SIP.SIPMessage.parse_raw_header(lines[1:], self.parse_header)
        length = self.headers.get("Content-Length")
        if length is None or not sep:
            self.content = body
        elif length > len(body) and enabled("content-length"):
            # RFC 3261 §18.3: a datagram shorter than its Content-Length is rejected with 400.
            self.bad_request = "Content-Length exceeds the datagram"
        else:
            self.content = body[:length]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            if self.type == SIP.SIPMessageType.MESSAGE and name not in self.fields:
                self.bad_request = self.bad_request or f"Missing {name}"

    def parse_header(self, header: str, data: Any) -> None:
        self.fields[header] = data
        try:
            if header == "Via":
                self.vias = [Via.parse(v) for v in data]
                self.headers["Via"] = [v.as_pyvoip() for v in self.vias]
            elif header in ("From", "To"):
                na = parse_name_addr(data)
                raw = data.split(";tag=")[0] if "tag" in na.params else data
                host = na.uri.split("@")[-1]
                self.headers[header] = {
                    "raw": raw,
                    "tag": na.params.get("tag", ""),
                    "address": na.uri.split(":", 1)[-1],
                    "number": na.user or None,
                    "caller": na.display,
                    "host": host,
                }
            elif header == "CSeq":
                number, method = data.split()
                self.headers[header] = {"check": str(int(number)), "method": method}
            elif header == "Content-Length":
                if not (data.isascii() and data.isdigit()):  # 1*DIGIT (RFC 3261 §20.14)
                    raise ValueError(f"Content-Length {data[:20]!r}")
                self.headers[header] = int(data)
            elif header == "Content-Type":
                self.headers[header] = data.split(";")[0].strip().lower()
            elif header == "Record-Route":
                self.record_route = data if isinstance(data, list) else split_commas(data)
                self.headers[header] = self.record_route
            else:
                super().parse_header(header, data)
        except (ValueError, IndexError, SIP.SIPParseError) as exc:
            self.bad_request = self.bad_request or f"Bad {header} header"
            if header == "Via" and not self.vias:
                raise SIP.SIPParseError(f"unreadable Via: {exc}") from exc

    # -- what the transport layer needs -----------------------------------------------------

    @property
    def call_id(self) -> str:
        return str(self.fields.get("Call-ID", ""))

    @property
    def branch(self) -> str:
        return (self.vias[0].params.get("branch") or "") if self.vias else ""

    @property
    def cseq(self) -> int:
        return int(self.headers["CSeq"]["check"]) if "CSeq" in self.headers else 0

    @property
    def from_tag(self) -> str:
        value = self.headers.get("From")
        return str(value["tag"]) if isinstance(value, dict) else ""

    @property
    def to_tag(self) -> str:
        to = self.headers.get("To")
        return str(to["tag"]) if isinstance(to, dict) else ""

    def stamp_via(self, source: tuple[str, int]) -> None:
        """RFC 3261 §18.2.1 ``received`` and RFC 3581 §4 ``rport`` on the top Via."""
        top = self.vias[0]
        if top.host != source[0] or "rport" in top.params:
            top.params["received"] = source[0]
        if "rport" in top.params and not top.params["rport"]:
            top.params["rport"] = str(source[1])
        self.headers["Via"][0] = top.as_pyvoip()

    def reply_address(self) -> tuple[str, int]:
        """RFC 3261 §18.2.2 (unreliable unicast) with RFC 3581: where responses go."""
        top = self.vias[0]
        host = top.params.get("received") or top.host
        rport = top.params.get("rport")
        return host, int(rport) if rport and rport.isdigit() else (top.port or 5060)


def build_response(
    req: HardenedSIPMessage,
    code: int,
    reason: str,
    *,
    to_tag: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    server: str = "HuYuanTong",
) -> bytes:
    """RFC 3261 §8.2.6.2: Via (all, in order), From, Call-ID, CSeq copied; To gets our tag."""
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in req.vias]
    to = str(req.fields.get("To", ""))
    if to_tag and not req.to_tag and code != 100:
        to += f";tag={to_tag}"
    for name, value in (("From", req.fields.get("From")), ("To", to)):
        if value:
            lines.append(f"{name}: {value}")
    for name in ("Call-ID", "CSeq"):
        if name in req.fields:
            lines.append(f"{name}: {req.fields[name]}")
    lines += [f"{name}: {value}" for name, value in extra]
    lines.append(f"Server: {server}")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def build_request(
    method: str, uri: str, headers: Sequence[tuple[str, str]], body: bytes = b""
) -> bytes:
    lines = [f"{method} {uri} SIP/2.0", *(f"{n}: {v}" for n, v in headers)]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- SDP (RFC 4566 / RFC 3264), read by us: pyVoIP's reader raises on much of what it meets --


class OfferError(ValueError):
    """An offer we cannot accept: the INVITE gets 488 (RFC 3261 §21.4.26)."""


@dataclass(frozen=True)
class AudioOffer:
    address: str
    port: int
    payload_types: tuple[int, ...]
    names: dict[int, str]  # pt -> "pcmu/8000" etc., lower case (static types filled in)
    direction: str

    def pt_of(self, name: str) -> int | None:
        return next((pt for pt in self.payload_types if self.names.get(pt) == name), None)


_STATIC_NAMES = {0: "pcmu/8000", 8: "pcma/8000"}
_ANSWER_DIRECTION = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def parse_audio_offer(body: bytes) -> AudioOffer:
    session: dict[str, Any] = {"c": None, "a": []}
    media: list[dict[str, Any]] = []
    for raw in body.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue  # RFC 4566 §5: "type=value"; anything else is ignored, not fatal
        kind, value = line[0], line[2:].strip()
        target = media[-1] if media else session
        if kind == "m":
            media.append({"m": value, "c": None, "a": []})
        elif kind == "c":
            target["c"] = value
        elif kind == "a":
            target["a"].append(value)
    audio = next((m for m in media if m["m"].split()[:1] == ["audio"]), None)
    if audio is None:
        raise OfferError("no audio stream offered")
    parts = audio["m"].split()
    try:
        port = int(parts[1].split("/")[0])
    except (IndexError, ValueError):
        raise OfferError(f"unreadable m= line {audio['m'][:60]!r}") from None
    if port <= 0 or port > 65535:
        raise OfferError("audio stream rejected or bad port")
    if len(parts) < 4 or parts[2].upper() != "RTP/AVP":
        raise OfferError(f"unsupported media transport {parts[2] if len(parts) > 2 else ''!r}")
    conn = (audio["c"] or session["c"] or "").split()
    if len(conn) < 3 or conn[0].upper() != "IN" or conn[1].upper() != "IP4":
        raise OfferError("no IPv4 connection address")
    pts = tuple(int(p) for p in parts[3:] if p.isdigit() and int(p) < 128)
    names = {pt: _STATIC_NAMES[pt] for pt in pts if pt in _STATIC_NAMES}
    direction = "sendrecv"
    for attr in session["a"] + audio["a"]:
        key, _, value = attr.partition(":")
        if key == "rtpmap":
            pt_text, _, encoding = value.partition(" ")
            if pt_text.isdigit() and encoding:
                names[int(pt_text)] = "/".join(encoding.strip().lower().split("/")[:2])
        elif key in ("sendrecv", "sendonly", "recvonly", "inactive"):
            direction = key
    return AudioOffer(conn[2].split("/")[0], port, pts, names, direction)


def answer_sdp(
    *, host: str, port: int, session_id: int, codecs: dict[int, str], direction: str
) -> bytes:
    """Our answer (RFC 3264 §6.1): the codecs we accept, in the offer's numbering."""
    lines = [
        "v=0",
        f"o=HuYuanTong {session_id} {session_id} IN IP4 {host}",
        "s=HuYuanTong",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt in codecs)}",
    ]
    for pt, name in codecs.items():
        lines.append(f"a=rtpmap:{pt} {name.upper() if name != 'telephone-event/8000' else name}")
        if name.startswith("telephone-event"):
            lines.append(f"a=fmtp:{pt} 0-15")
    lines += ["a=ptime:20", f"a={_ANSWER_DIRECTION.get(direction, 'sendrecv')}"]
    return ("\r\n".join(lines) + "\r\n").encode()
