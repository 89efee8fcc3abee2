"""voice calls: the console's "connect call" requests, their progress and recordings (issue 5,
voice)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import callcenter.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "voice_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("operator_uri", sa.String(length=128), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "requested",
                "connecting",
                "connected",
                "ended",
                "failed",
                name="voicecallstate",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column(
            "mode",
            sa.Enum("bridge", "call_back", name="voicecallmode", native_enum=False, length=24),
            nullable=True,
        ),
        sa.Column("active_alarm_id", sa.Integer(), nullable=True),
        sa.Column("handler", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ended_by", sa.String(length=16), nullable=True),
        sa.Column("requested_at", callcenter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", callcenter.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("connected_at", callcenter.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", callcenter.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("recording_file", sa.String(length=200), nullable=True),
        sa.Column("recording_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alarm_id"], ["alarms.id"], name=op.f("fk_voice_calls_alarm_id_alarms")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_voice_calls_case_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_voice_calls_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voice_calls")),
        sa.UniqueConstraint("active_alarm_id", name=op.f("uq_voice_calls_active_alarm_id")),
    )
    with op.batch_alter_table("voice_calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_voice_calls_alarm_id"), ["alarm_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_voice_calls_case_id"), ["case_id"], unique=False)
        batch_op.create_index("ix_voice_calls_state", ["state", "requested_at"], unique=False)


def downgrade() -> None:
    op.drop_table("voice_calls")
