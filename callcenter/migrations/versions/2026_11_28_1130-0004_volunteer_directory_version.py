"""volunteer directory version: a token that triggers change with every write matching caches;
the open-offers index covers matching's load query

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 11:30:00.000000

Matching keeps the volunteers' slow-changing details in memory (``volunteers/roster_cache.py``)
and reloads them when this token differs from the one it loaded with. Triggers, not application
code, change the token, so that bulk inserts, raw SQL and every process are seen. A token
written by a transaction that rolls back is never seen again: SQLite sets a fresh random one per
row written (cheap there: the row is rewritten in place), PostgreSQL the transaction's id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The volunteers' columns matching reads; hours_served, phone and the like change without a
# reload (the volunteer's feedback adds hours after every task).
VOLUNTEER_COLUMNS = (
    "id, name, community, home_latitude, home_longitude, service_radius_m, active, on_duty, "
    "max_concurrent_tasks, rating"
)
TABLES = ("volunteers", "volunteer_skills", "availability_windows")


def _sqlite_triggers() -> list[tuple[str, str]]:
    """(name, event) pairs; SQLite has row-level triggers only."""
    pairs = []
    for table in TABLES:
        update = f"UPDATE OF {VOLUNTEER_COLUMNS}" if table == "volunteers" else "UPDATE"
        for suffix, event in (("ins", "INSERT"), ("upd", update), ("del", "DELETE")):
            pairs.append((f"trg_{table}_directory_{suffix}", f"{event} ON {table}"))
    return pairs


OPEN_OFFERS = ["status", "expires_at"]
# Matching's load query counts open and recent offers per volunteer: with the volunteer and the
# answer times in the index it reads the index alone (3x faster on SQLite, bench/matching.py).
OPEN_OFFERS_COVERING = [*OPEN_OFFERS, "volunteer_id", "responded_at", "sent_at"]


def upgrade() -> None:
    op.drop_index("ix_offers_open", table_name="offers")
    op.create_index("ix_offers_open", "offers", OPEN_OFFERS_COVERING)
    op.create_table(
        "volunteer_directory_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volunteer_directory_version")),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("INSERT INTO volunteer_directory_version (id, token) VALUES (1, random())")
        for name, event in _sqlite_triggers():
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} BEGIN "
                "UPDATE volunteer_directory_version SET token = random() WHERE id = 1; END"
            )
        return
    # PostgreSQL: statement-level triggers (a bulk insert of 10,000 volunteers fires once), and
    # TRUNCATE too. The token is the writing transaction's id, set by its first such statement
    # only: rewriting one row for every statement of a long import would leave a chain of row
    # versions that each later statement walks. Ids are never reused, and a transaction that
    # wrote sees its own id there, so matching knows not to cache what it reads (roster_cache).
    op.execute(
        "INSERT INTO volunteer_directory_version (id, token) "
        "VALUES (1, pg_current_xact_id()::text::bigint)"
    )
    op.execute(
        "CREATE FUNCTION volunteer_directory_touch() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN UPDATE volunteer_directory_version "
        "SET token = pg_current_xact_id()::text::bigint "
        "WHERE id = 1 AND token IS DISTINCT FROM pg_current_xact_id()::text::bigint; "
        "RETURN NULL; END $$"
    )
    for table in TABLES:
        update = f"UPDATE OF {VOLUNTEER_COLUMNS}" if table == "volunteers" else "UPDATE"
        for suffix, event in (("write", "INSERT OR DELETE OR TRUNCATE"), ("upd", update)):
            op.execute(
                f"CREATE TRIGGER trg_{table}_directory_{suffix} AFTER {event} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION volunteer_directory_touch()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name, _ in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for table in TABLES:
            for suffix in ("write", "upd"):
                op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_directory_{suffix} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS volunteer_directory_touch()")
    op.drop_table("volunteer_directory_version")
    op.drop_index("ix_offers_open", table_name="offers")
    op.create_index("ix_offers_open", "offers", OPEN_OFFERS)
