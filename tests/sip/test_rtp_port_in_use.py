"""RTP ports held by another program are skipped, not a refused call (default backend).

The media range is shared with the rest of the machine: in CI the demo's centre and a SIP test
running beside it took the same port, and the demo's SOS call was refused with 500
("Address already in use"). A call now takes the next free port of the range.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack

import pytest

from callcenter.models import AlarmKind
from devices.models import TerminalProtocol
from tests.sip.conftest import Centre, rtp_block
from tests.sip.sipp import call_scenario, run_sipp
from tests.sip.test_conformance import stored


@pytest.mark.parametrize("centre", ["aiosipua"], indirect=True)
def test_a_call_skips_rtp_ports_someone_else_holds(centre: Centre) -> None:
    user, elder_id, _, _ = centre.terminals[TerminalProtocol.DTMF]
    with ExitStack() as stack:
        low = rtp_block()
        for port in range(low, low + 6):  # the first three RTP/RTCP pairs of the centre's range
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind(("127.0.0.1", port))
        result = run_sipp(call_scenario(user=user, digits="2"), centre.address)
    assert result.ok, result.output
    (alarm,) = stored(centre)
    assert (alarm.kind, alarm.elder_id) == (AlarmKind.SERVICE, elder_id)
