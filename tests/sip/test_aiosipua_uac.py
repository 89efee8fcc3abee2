"""Outgoing calls on the default backend against a hand-written SIP phone: the gaps of
aiosipua 0.7.1's UAC that callcenter/sip/aiosipua_uac.py closes, each checked on the wire."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator

import pytest

from callcenter.sip.aiosipua_backend import AiosipuaBackend
from callcenter.sip.interface import CallHandle, DialFailed
from tests.sip.conftest import rtp_block
from tests.sip.sip_phone import FakePhone, tone_share
from tests.sip.sipp import free_udp_port


async def _refuse(call: CallHandle) -> None:
    await call.reject(403, "not here")


def with_backend(test: Callable[[AiosipuaBackend], Awaitable[None]]) -> None:
    async def main() -> None:
        low = rtp_block() + 900
        backend = AiosipuaBackend("127.0.0.1", free_udp_port(), rtp_port_low=low,
                                  rtp_port_high=low + 98)  # fmt: skip
        await backend.start(_refuse)
        try:
            await test(backend)
        finally:
            await backend.stop()

    asyncio.run(main())


@pytest.fixture
def phone_factory() -> Iterator[Callable[..., FakePhone]]:
    phones: list[FakePhone] = []

    def make(**options: object) -> FakePhone:
        phones.append(FakePhone(**options))  # type: ignore[arg-type]
        return phones[-1]

    yield make
    for phone in phones:
        phone.close()


def address(phone: FakePhone) -> tuple[str, int]:
    return ("127.0.0.1", phone.sip.getsockname()[1])


def branch(message: str) -> str:
    found = re.search(r"^Via:.*;branch=([^;\r\n]+)", message, re.M)
    assert found, message
    return found.group(1)


async def eventually(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_busy_phones_486_is_acked(phone_factory: Callable[..., FakePhone]) -> None:
    phone = phone_factory(busy_first=1)

    async def test(backend: AiosipuaBackend) -> None:
        with pytest.raises(DialFailed) as failed:
            await backend.dial(phone.uri, address(phone), caller="centre", ring_s=5)
        assert failed.value.status == 486
        await eventually(lambda: phone.acks)
        # RFC 3261 §17.1.1.3: same branch as the INVITE, the To tag of the 486.
        (ack,) = phone.acks
        assert branch(ack) == branch(phone.invites[0]) and f"tag={phone.tag}" in ack

    with_backend(test)


def test_an_unanswered_call_is_cancelled_and_its_487_acked(
    phone_factory: Callable[..., FakePhone],
) -> None:
    phone = phone_factory(ring_only=True)

    async def test(backend: AiosipuaBackend) -> None:
        with pytest.raises(DialFailed) as failed:
            await backend.dial(phone.uri, address(phone), caller="centre", ring_s=1)
        assert failed.value.status == 480
        await eventually(lambda: phone.cancels and phone.acks)
        assert branch(phone.cancels[0]) == branch(phone.invites[0])
        assert "487" not in phone.acks[0] and "CSeq: 1 ACK" in phone.acks[0]

    with_backend(test)


def test_an_answer_crossing_our_cancel_is_acked_then_ended(
    phone_factory: Callable[..., FakePhone],
) -> None:
    phone = phone_factory(answer_on_cancel=True)

    async def test(backend: AiosipuaBackend) -> None:
        with pytest.raises(DialFailed):
            await backend.dial(phone.uri, address(phone), caller="centre", ring_s=1)
        # RFC 3261 §9.1/§15: the 200 that crossed the CANCEL gets its ACK, then a BYE.
        await eventually(lambda: phone.acks and phone.byes)
        # In the dialog the 200 made: to its Contact (RFC 3261 §12.1.2), not the To URI.
        assert phone.acks[0].startswith(f"ACK {phone.contact} ")
        assert phone.byes[0].startswith(f"BYE {phone.contact} ")

    with_backend(test)


def test_a_lost_invite_is_sent_again_and_a_bye_from_the_phone_ends_the_leg(
    phone_factory: Callable[..., FakePhone],
) -> None:
    phone = phone_factory(ignore_first=1, tone_hz=1000)

    async def test(backend: AiosipuaBackend) -> None:
        leg = await backend.dial(phone.uri, address(phone), caller="centre", ring_s=5)
        heard = bytearray()
        leg.listen(heard.extend)
        await eventually(lambda: len(heard) > 16000)  # a second of the phone's voice
        assert tone_share(bytes(heard), 1000) > 0.8
        assert not leg.ended
        phone.hang_up()
        assert await leg.wait_ended(3)
        await eventually(phone.bye_answered.is_set)
        assert backend.uac.get_call(leg.call_id) is None

    with_backend(test)
    assert len(phone.invites) == 1  # the first copy was "lost"; the second was answered
