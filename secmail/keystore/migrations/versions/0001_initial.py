"""The key store schema as secmail 0.1 created it (keys, sealed secrets,
address index, trust entries, CRLs).

A database made before migrations existed (``metadata.create_all`` plus a
``schema_version`` table holding 1) already has exactly this schema: it is
adopted as is, and only its ``schema_version`` table goes.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_USER = 320  # RFC 5321 §4.5.3.1: 64 + "@" + 255
_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    bind = op.get_bind()
    if sa.inspect(bind).has_table("schema_version"):
        versions = [row[0] for row in bind.execute(sa.text("SELECT version FROM schema_version"))]
        if versions != [1]:
            raise RuntimeError(f"unexpected pre-migration schema_version {versions}; expected [1]")
        op.drop_table("schema_version")
        return

    op.create_table(
        "keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("owner", sa.String(_USER), nullable=False),
        sa.Column("scheme", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("public_data", sa.LargeBinary(), nullable=False),
        sa.Column("chain", sa.LargeBinary(), nullable=False),
        sa.Column("addresses", sa.JSON(), nullable=False),
        sa.Column("not_before", _TZ, nullable=True),
        sa.Column("not_after", _TZ, nullable=True),
        sa.Column("algorithm", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("usable_for_encryption", sa.Boolean(), nullable=False),
        sa.Column("usable_for_signing", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
        sa.UniqueConstraint("owner", "key_id", name="uq_keys_owner_key_id"),
    )
    op.create_index("ix_keys_owner_scheme", "keys", ["owner", "scheme"])

    op.create_table(
        "key_addresses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key_ref", sa.Integer(), sa.ForeignKey("keys.id", ondelete="CASCADE"), nullable=False),
        sa.Column("address", sa.String(_USER), nullable=False),
        sa.Column("scheme", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(_USER), nullable=False),
        sa.UniqueConstraint("key_ref", "address", name="uq_key_addresses_key_address"),
    )
    op.create_index("ix_key_addresses_lookup", "key_addresses", ["address", "scheme", "owner"])

    op.create_table(
        "sealed_secrets",
        sa.Column(
            "key_ref",
            sa.Integer(),
            sa.ForeignKey("keys.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("master_key_id", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_index("ix_sealed_secrets_master_key_id", "sealed_secrets", ["master_key_id"])

    op.create_table(
        "trust_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("anchor_id", sa.String(128), nullable=False, unique=True),
        sa.Column("bundle", sa.String(255), nullable=False),
        sa.Column("scheme", sa.String(16), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("is_anchor", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("not_before", _TZ, nullable=True),
        sa.Column("not_after", _TZ, nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
    )
    op.create_index("ix_trust_entries_bundle", "trust_entries", ["bundle"])

    op.create_table(
        "crls",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("issuer", sa.Text(), nullable=False, unique=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("this_update", _TZ, nullable=False),
        sa.Column("next_update", _TZ, nullable=True),
        sa.Column("updated_at", _TZ, nullable=False),
    )


def downgrade() -> None:
    for table in ("crls", "trust_entries", "sealed_secrets", "key_addresses", "keys"):
        op.drop_table(table)
