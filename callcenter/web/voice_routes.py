"""The console's voice calls: "接通通话 Connect call" on a claimed alarm, its progress, and the
recording.

``POST /api/alarms/{id}/voice`` stores the request and waits (a few seconds at most) until a
call handler has taken it: then the operator's phone is ringing (202), or it could not be
(409 with the reason, 503 if no handler runs). How the request reaches the handler is
explained in :mod:`callcenter.voice_calls`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from callcenter import db
from callcenter.models import Operator, Role
from callcenter.recordings import recording_path
from callcenter.settings import get_settings
from callcenter.voice_calls import (
    VoiceError,
    fail_voice_call,
    request_voice_call,
    voice_calls_of_alarm,
    wake_local_handlers,
)
from callcenter.voice_models import VoiceCall, VoiceCallState
from callcenter.web.auth import require
from callcenter.web.deps import SessionDep
from callcenter.web.ids import RowId
from callcenter.web.voice_schemas import VoiceCallOut

log = structlog.get_logger(__name__)
router = APIRouter(tags=["voice"])
OperatorDep = Annotated[Operator, require(Role.OPERATOR)]

# A handler polls every 0.25 s and calls back after 1.5 s: this is plenty, and short enough for
# an operator waiting on the button.
TAKEN_WAIT_S = 5.0
TAKEN_POLL_S = 0.1
NO_HANDLER = "没有呼叫处理进程响应 / no call handler took the request (is `hyt sip` running?)"


@router.post(
    "/api/alarms/{alarm_id}/voice",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VoiceCallOut,
)
def connect_voice(alarm_id: RowId, session: SessionDep, user: OperatorDep) -> VoiceCallOut:
    """Ring the operator's SIP phone and join it to the elder's call (or call the elder back).
    Only the operator who claimed the alarm may."""
    try:
        row = request_voice_call(session, alarm_id=alarm_id, operator=user, settings=get_settings())
    except VoiceError as exc:
        log.info("voice.refused", alarm_id=alarm_id, operator_id=user.id, reason=str(exc))
        raise HTTPException(exc.status, str(exc)) from None
    session.commit()
    wake_local_handlers()
    taken = _wait_taken(row.id)
    if taken.state is VoiceCallState.FAILED:
        code = status.HTTP_503_SERVICE_UNAVAILABLE if taken.reason == NO_HANDLER else 409
        raise HTTPException(code, taken.reason)
    return VoiceCallOut.of(taken)


def _wait_taken(voice_call_id: int) -> VoiceCall:
    """Poll in short transactions (SQLite: a long one would block the handler's UPDATE)."""
    deadline = time.monotonic() + TAKEN_WAIT_S
    while True:
        with db.session_scope() as session:
            row = session.get(VoiceCall, voice_call_id)
            assert row is not None
            if row.state is not VoiceCallState.REQUESTED:
                return row
            if time.monotonic() >= deadline:
                fail_voice_call(session, voice_call_id=voice_call_id, reason=NO_HANDLER,
                                only_if=(VoiceCallState.REQUESTED,))  # fmt: skip
                continue  # read it again: failed by us, or taken just now
        time.sleep(TAKEN_POLL_S)


@router.get("/api/alarms/{alarm_id}/voice", response_model=list[VoiceCallOut])
def alarm_voice_calls(
    alarm_id: RowId, session: SessionDep, _user: OperatorDep
) -> list[VoiceCallOut]:
    """Every voice call of the alarm, oldest first, with its state and recording."""
    return [VoiceCallOut.of(row) for row in voice_calls_of_alarm(session, alarm_id)]


@router.get("/api/recordings/{voice_call_id}", response_class=FileResponse)
def recording(voice_call_id: RowId, session: SessionDep, _user: OperatorDep) -> FileResponse:
    """The call's recording: WAV, stereo (elder left, operator right), 8 kHz."""
    row = session.get(VoiceCall, voice_call_id)
    path = (
        recording_path(Path(get_settings().recordings_dir), row.recording_file)
        if row is not None and row.recording_file
        else None
    )
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such recording / 无此录音")
    return FileResponse(path, media_type="audio/wav", filename=path.name)
