"""The in-memory terminal directory answers as the database would."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from devices.directory import TerminalDirectory
from devices.models import TerminalProtocol, TerminalStatus
from tests.factories import make_elder, make_terminal


def test_lookup_by_sip_user_caller_id_and_account(fresh_engine: Engine) -> None:
    with Session(fresh_engine, expire_on_commit=False) as s:
        elder = make_elder(s)
        dtmf = make_terminal(s, elder, TerminalProtocol.DTMF, caller_id="+8675488000001")
        cid = make_terminal(s, elder, TerminalProtocol.CONTACT_ID, account="4321", sip_user=None)
        make_terminal(
            s, elder, TerminalProtocol.DTMF, sip_user="gone", status=TerminalStatus.RETIRED
        )
        s.commit()
    directory = TerminalDirectory(sessionmaker(fresh_engine))
    directory.reload()
    assert directory.lookup(sip_user=dtmf.sip_user or "").id == dtmf.id  # type: ignore[union-attr]
    found = directory.lookup(sip_user="075488000001")  # the line number as the From user
    assert found is not None and found.id == dtmf.id
    found = directory.lookup(account="43 21")  # SCAIP devices put spaces in ids
    assert found is not None and found.id == cid.id and found.elder_id == elder.id
    assert directory.lookup(sip_user="gone") is None  # retired: never matched
    assert directory.lookup(sip_user="nobody") is None


def test_a_terminal_added_after_loading_is_still_found(fresh_engine: Engine) -> None:
    directory = TerminalDirectory(sessionmaker(fresh_engine))
    directory.reload()
    with Session(fresh_engine, expire_on_commit=False) as s:
        terminal = make_terminal(s, make_elder(s), TerminalProtocol.DTMF)
        s.commit()
    user = terminal.sip_user or ""
    assert directory.lookup(sip_user=user) is None
    with Session(fresh_engine) as s:
        found = directory.identify(s, sip_user=user)
    assert found is not None and found.id == terminal.id
    assert directory.lookup(sip_user=user) is not None  # remembered
