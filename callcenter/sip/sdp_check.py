"""A first look at an INVITE's SDP offer, before the call is taken (and so before an unknown
caller's alarm is stored): is it SDP at all?

RFC 4566 §5: a session description is lines of ``<type>=<value>`` with a one-letter type, and
starts with ``v=0``; an ``m=`` line is ``<media> <port>[/<count>] <proto> <fmt> ...``. A body
that breaks this is not an offer we could answer (RFC 3261 §21.4.1: 400 Bad Request), and must
not become a call: a stream of junk INVITEs would otherwise page an operator for each. Text
fields may be in another charset (a terminal's GBK session name), so bytes are not judged.
"""

from __future__ import annotations

import re

_LINE = re.compile(r"[a-z]=.*")
SDP_TYPES = ("application/sdp", "")


def sdp_problem(body: bytes) -> str | None:
    """Why ``body`` is not a session description, or None."""
    text = body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        return "SDP does not start with v=0"
    for line in lines:
        if not _LINE.fullmatch(line):
            return f"not an SDP line: {line[:40]!r}"
        if line.startswith("m="):
            fields = line[2:].split()
            port = fields[1].split("/", 1)[0] if len(fields) > 1 else ""
            if len(fields) < 4 or not (port.isascii() and port.isdigit()) or int(port) > 65535:
                return f"unreadable m= line: {line[:60]!r}"
    return None


def offer_problem(content_type: str | None, body: bytes) -> str | None:
    """Why an INVITE's body is not a readable offer; None if it is one or there is no body
    (an INVITE without an offer is legal, RFC 3261 §13.2.1, and is refused later with 488)."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if not body.strip() or kind not in SDP_TYPES:
        return None
    return sdp_problem(body)
