"""scheduler job runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import callcenter.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduler_job_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_name", sa.String(length=64), nullable=False),
        sa.Column("scheduled_for", callcenter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", callcenter.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", callcenter.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "outcome",
            sa.Enum(
                "running",
                "ok",
                "error",
                "interrupted",
                name="joboutcome",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("missed", sa.Integer(), nullable=False),
        sa.Column("runner", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_job_runs")),
        sa.UniqueConstraint(
            "job_name", "scheduled_for", name=op.f("uq_scheduler_job_runs_job_name_scheduled_for")
        ),
    )


def downgrade() -> None:
    op.drop_table("scheduler_job_runs")
