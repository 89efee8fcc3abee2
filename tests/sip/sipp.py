"""SIPp as a real terminal: scenarios written from templates, runs bounded in time and count."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PCAP_DIR = Path("/usr/share/sip-tester")
PCAP_NAME = {"*": "star", "#": "pound"} | {str(d): str(d) for d in range(10)}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_pair() -> int:
    """An even port whose odd neighbour is free too (RTP + RTCP)."""
    return free_port_run(2)


def free_port_run(count: int) -> int:
    """An even port with the ``count - 1`` ports above it free too."""
    for _ in range(50):
        port = free_udp_port() & ~1
        try:
            with contextlib.ExitStack() as stack:
                for offset in range(count):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no {count} free ports in a row")


INVITE = """
      INVITE sip:{dialled}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={invite_branch}
      From: "{display}" <sip:{user}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:{dialled}@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: SIPp terminal
{extra_headers}      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=terminal 53655765 2353687637 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio {media_port} RTP/AVP {payloads}
{rtpmaps}      a=ptime:20
      a=sendrecv
"""
RTPMAPS = {
    0: "a=rtpmap:0 PCMU/8000",
    8: "a=rtpmap:8 PCMA/8000",
    101: "a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-15",
}
IN_DIALOG = """
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "{display}" <sip:{user}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:{dialled}@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
"""
OK_TO_REQUEST = """
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Content-Length: 0
"""


def _cdata(text: str) -> str:
    return f"<![CDATA[\n{text}\n    ]]>"


def call_scenario(
    *,
    user: str,
    dialled: str = "centre",
    digits: str = "",
    digit_gap_ms: int = 150,
    hangup: str = "centre",
    hold_ms: int = 0,
    payloads: tuple[int, ...] = (0, 101),
    extra_headers: str = "",
    resend_invite_after_ms: int | None = None,
    cancel_after_ms: int | None = None,
    expect_final: int = 200,
    media_port: int = 0,
    dtmf_pcap: Path | None = None,
) -> str:
    """A terminal's call: INVITE, digits (RFC 2833 pcaps), then BYE from ``hangup``'s side.

    ``cancel_after_ms``: send CANCEL while ringing and expect 487. ``resend_invite_after_ms``:
    re-send the same INVITE (same branch) before the answer, as a terminal does on a lost 100.
    """
    fmt = {"user": user, "dialled": dialled, "display": user, "cseq": 2}
    # One fixed branch for the INVITE, its re-sends, its CANCEL and the ACK of a non-2xx
    # final (RFC 3261 §9.1, §17.1.1.3): SIPp's [branch] changes with every message.
    invite_branch = "z9hG4bK-[pid]-[call_number]-inv"
    invite = INVITE.format(
        **fmt,
        invite_branch=invite_branch,
        extra_headers="".join(f"      {h}\n" for h in extra_headers.splitlines() if h),
        media_port=media_port or "[media_port]",
        payloads=" ".join(map(str, payloads)),
        rtpmaps="".join(f"      {RTPMAPS[p]}\n" for p in payloads),
    )
    steps = [f'<send retrans="500">{_cdata(invite)}</send>']
    # The centre rings at once; SIPp needs a mandatory message before any pause.
    pause_follows = resend_invite_after_ms is not None or cancel_after_ms is not None
    steps.append('<recv response="100" optional="true"/>')
    steps.append(
        '<recv response="180"/>' if pause_follows else '<recv response="180" optional="true"/>'
    )
    if resend_invite_after_ms is not None:
        steps.append(f'<pause milliseconds="{resend_invite_after_ms}"/>')
        steps.append(f"<send>{_cdata(invite)}</send>")
        steps.append('<recv response="100" optional="true"/>')
        steps.append('<recv response="180" optional="true"/>')
    out_of_dialog = {**fmt, "cseq": 1}
    ruri = f"sip:{dialled}@[remote_ip]:[remote_port]"

    def same_branch(method: str) -> str:
        text = IN_DIALOG.format(**out_of_dialog, method=method)
        text = text.replace("[next_url]", ruri).replace("      [routes]\n", "")
        return text.replace("branch=[branch]", f"branch={invite_branch}")

    if cancel_after_ms is not None:
        steps.append(f'<pause milliseconds="{cancel_after_ms}"/>')
        steps.append(
            f"<send>{_cdata(same_branch('CANCEL').replace('[peer_tag_param]', ''))}</send>"
        )
        steps.append('<recv response="200"/>')
        steps.append('<recv response="487"/>')
        steps.append(f"<send>{_cdata(same_branch('ACK'))}</send>")
        return _scenario(steps)
    if expect_final != 200:
        steps.append(f'<recv response="{expect_final}"/>')
        steps.append(f"<send>{_cdata(same_branch('ACK'))}</send>")
        return _scenario(steps)
    steps.append('<recv response="200" rtd="true" rrs="true"/>')
    steps.append(f"<send>{_cdata(IN_DIALOG.format(**out_of_dialog, method='ACK'))}</send>")
    steps.append('<pause milliseconds="300"/>')
    if dtmf_pcap is not None:
        steps.append(f'<nop><action><exec play_pcap_audio="{dtmf_pcap}"/></action></nop>')
    for digit in digits:
        pcap = PCAP_DIR / f"dtmf_2833_{PCAP_NAME[digit]}.pcap"
        steps.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
        steps.append(f'<pause milliseconds="{200 + digit_gap_ms}"/>')
    if hangup == "centre":
        steps.append('<recv request="BYE"/>')
        steps.append(f"<send>{_cdata(OK_TO_REQUEST.format(**fmt))}</send>")
    else:
        steps.append(f'<pause milliseconds="{hold_ms}"/>')
        bye = IN_DIALOG.format(**fmt, method="BYE")
        steps.append(f'<send retrans="500">{_cdata(bye)}</send>')
        steps.append('<recv response="200" crlf="true"/>')
    return _scenario(steps)


def _scenario(steps: list[str]) -> str:
    body = "\n  ".join(steps)
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        f'<scenario name="hyt-terminal">\n  {body}\n</scenario>\n'
    )


@dataclass
class SippResult:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_sipp(
    scenario: str,
    target: tuple[str, int],
    *,
    calls: int = 1,
    rate: float = 1,
    timeout_s: float = 60,
    extra_args: list[str] | None = None,
    local_port: int | None = None,
) -> SippResult:
    """Run ``scenario`` against ``target``; exit code 0 means every call succeeded.
    ``local_port``: SIPp's own SIP port (a terminal answering a call-back where it called from)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.xml"
        path.write_text(scenario, encoding="ascii")
        cmd = [
            "sipp", "-sf", str(path), "-i", "127.0.0.1", "-mi", "127.0.0.1",
            # SIPp binds audio RTP/RTCP at -mp and video at -mp + 2 and + 3 (a taken video
            # port failed a SCAIP scenario in CI: "Unable to bind video RTP socket").
            "-p", str(local_port or free_udp_port()), "-mp", str(free_port_run(4)),
            "-m", str(calls), "-r", str(rate), "-l", str(max(calls, 1)),
            "-timeout", f"{int(timeout_s)}s", "-timeout_error", "-nostdin",
            "-trace_err", "-error_file", str(Path(tmp) / "errors.log"),
            "-recv_timeout", "20000", *(extra_args or []),
            f"{target[0]}:{target[1]}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 30,
                              cwd=tmp, stdin=subprocess.DEVNULL)  # fmt: skip
        errors = Path(tmp) / "errors.log"
        detail = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
        return SippResult(proc.returncode, proc.stdout[-2000:] + proc.stderr[-2000:] + detail)


MESSAGE = """
      MESSAGE sip:centre@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-msg
      From: <sip:{user}@[local_ip]:[local_port]>;tag=[pid]S[call_number]
      To: <sip:centre@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Max-Forwards: 70
      Content-Type: application/scaip+xml
      Content-Length: [len]

{body}"""


def scaip_scenario(*, user: str, mrq: str, expect_snu: int = 0, resend: bool = False) -> str:
    """A SCAIP terminal: MESSAGE with <mrq>, 200 back, then the centre's <mrs> MESSAGE."""
    message = _cdata(MESSAGE.format(user=user, body=f"      {mrq}"))
    steps = [f'<send retrans="500">{message}</send>', '<recv response="200" rtd="true"/>']
    check = (
        f'<action><ereg regexp="<snu>{expect_snu}</snu>" search_in="body" check_it="true" '
        'assign_to="snu"/></action>'
    )
    steps.append(f'<recv request="MESSAGE">{check}</recv>')
    steps.append(f"<send>{_cdata(OK_TO_REQUEST.format(user=user))}</send>")
    if resend:
        # The same transaction again (same branch), as when our 200 was lost on the way: it
        # gets the same answer and must not become a second alarm.
        steps.append(f"<send>{message}</send>")
        steps.append('<recv response="200"/>')
    steps.append('<Reference variables="snu"/>')
    return _scenario(steps)


ANSWER = """
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]A[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{user}@[local_ip]:[local_port]>
{sdp_headers}"""
ANSWER_SDP = """      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=terminal 53655765 2353687637 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=sendrecv
"""


def answer_scenario(*, user: str, audio_pcap: Path | None = None) -> str:
    """A terminal called by the centre (a call-back): ring, answer with PCMU, play
    ``audio_pcap``, and wait for the centre's BYE."""
    ringing = ANSWER.format(status="180 Ringing", user=user,
                            sdp_headers="      Content-Length: 0\n")  # fmt: skip
    ok = ANSWER.format(status="200 OK", user=user, sdp_headers=ANSWER_SDP)
    steps = [
        '<recv request="INVITE" crlf="true"/>',
        f"<send>{_cdata(ringing)}</send>",
        f'<send retrans="500">{_cdata(ok)}</send>',
        '<recv request="ACK" rtd="true" crlf="true"/>',
    ]
    if audio_pcap is not None:
        steps.append(f'<nop><action><exec play_pcap_audio="{audio_pcap}"/></action></nop>')
    steps.append('<recv request="BYE"/>')
    steps.append(f"<send>{_cdata(OK_TO_REQUEST.format(user=user))}</send>")
    return _scenario(steps)
