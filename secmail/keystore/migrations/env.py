"""Alembic environment: runs on the connection secmail hands over.

:func:`secmail.keystore.migrate.upgrade_database` opens the connection,
starts the transaction and takes the migration lock before calling Alembic,
so this file only runs the scripts on that connection, inside that one
transaction (PostgreSQL and SQLite both have transactional DDL: an upgrade
that fails half-way leaves the previous revision intact).
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `secmail db upgrade` runs this
    raise RuntimeError("secmail migrations run through `secmail db upgrade`, not the alembic command")

context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
