"""Audit events, and trust bundles with a mail-domain scope and a
revocation policy.

Every bundle already named by a trust entry gets a row with no domains
(trusted for every reader) and no policy of its own, which is how those
entries behaved before.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    bundles = op.create_table(
        "trust_bundles",
        sa.Column("name", sa.String(255), primary_key=True),
        # Lower-cased mail domains whose readers use this bundle; empty
        # means every reader.
        sa.Column("domains", sa.JSON(), nullable=False),
        # "", "soft-fail" or "hard-fail".
        sa.Column("revocation_policy", sa.String(16), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
    )
    bind = op.get_bind()
    existing = sorted({row[0] for row in bind.execute(sa.text("SELECT DISTINCT bundle FROM trust_entries"))})
    if existing:
        now = datetime.now(UTC)
        op.bulk_insert(
            bundles,
            [
                {"name": n, "domains": [], "revocation_policy": "", "created_at": now, "updated_at": now}
                for n in existing
            ],
        )

    op.create_table(
        "audit_events",
        # BIGINT on PostgreSQL; SQLite only auto-increments INTEGER PRIMARY KEY.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("at", _TZ, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("caller", sa.String(512), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_mailbox_at", "audit_events", ["mailbox", "at"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("trust_bundles")
