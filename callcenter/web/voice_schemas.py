"""API shapes of the console's voice calls."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from callcenter.voice_models import VoiceCall


class VoiceCallOut(BaseModel):
    id: int
    alarm_id: int
    case_id: int | None
    state: str  # requested, connecting, connected, ended, failed
    mode: str | None  # bridge (the elder's own call) or call_back
    reason: str
    requested_at: dt.datetime
    connected_at: dt.datetime | None
    ended_at: dt.datetime | None
    ended_by: str | None
    recording_url: str | None
    recording_s: float | None

    @classmethod
    def of(cls, row: VoiceCall) -> VoiceCallOut:
        return cls(
            id=row.id,
            alarm_id=row.alarm_id,
            case_id=row.case_id,
            state=row.state.value,
            mode=row.mode.value if row.mode else None,
            reason=row.reason,
            requested_at=row.requested_at,
            connected_at=row.connected_at,
            ended_at=row.ended_at,
            ended_by=row.ended_by,
            recording_url=f"/api/recordings/{row.id}" if row.recording_file else None,
            recording_s=row.recording_s,
        )
