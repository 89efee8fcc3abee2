"""inbound_sms: each SMS reply's Twilio MessageSid, so a re-delivered webhook acts once

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import callcenter.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_sms",
        sa.Column("message_sid", sa.String(length=64), nullable=False),
        sa.Column("received_at", callcenter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("message_sid", name=op.f("pk_inbound_sms")),
    )


def downgrade() -> None:
    op.drop_table("inbound_sms")
