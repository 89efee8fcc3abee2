"""visits: who handed a visit back (schedules issue: reminders and the visit page)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A server default, so that visits planned before this migration read as "nobody".
    op.add_column(
        "visits",
        sa.Column("handed_back_by", sa.JSON(), server_default="[]", nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("visits") as batch:
        batch.drop_column("handed_back_by")
