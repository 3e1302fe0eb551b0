"""Schema migrations of the key store (Alembic, configured in code).

The schema a database has is the Alembic revision in its
``alembic_version`` table. :func:`upgrade_database` brings it to the head
revision shipped with this package; :func:`check_schema` refuses a database
whose revision this code does not know (written by a newer secmail), and
one that is behind, unless the caller allows an upgrade (the embedded
SQLite default upgrades itself at start; PostgreSQL, shared by replicas,
is upgraded by an operator with ``secmail db upgrade`` before the new
version serves).

An upgrade is one transaction: PostgreSQL and SQLite both roll DDL back,
so a failed upgrade leaves the database at its previous revision. Two
upgrades at once are serialised: on PostgreSQL by a transaction-scoped
advisory lock taken before Alembic reads the current revision, on SQLite
by ``BEGIN IMMEDIATE``. The second one then finds the database at head and
does nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from secmail.errors import SecmailError

__all__ = [
    "WRITE_OPTION",
    "SchemaError",
    "SchemaStatus",
    "StoreError",
    "check_schema",
    "head_revision",
    "schema_status",
    "upgrade_database",
]

log = logging.getLogger(__name__)

_MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"

#: Execution option that makes a SQLite transaction ``BEGIN IMMEDIATE``
#: (see ``secmail.keystore.sql``).
WRITE_OPTION: Final = "secmail_write"

#: pg_advisory_xact_lock key: a fixed 64-bit number derived from a name,
#: so it cannot collide by accident with another application's lock.
_LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"secmail schema migration").digest()[:8], "big", signed=True
)


class StoreError(SecmailError):
    """The database failed or holds something this version cannot use."""


class SchemaError(StoreError):
    """The database schema is missing, behind, or newer than this secmail."""


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    #: The revision in alembic_version, or None.
    current: str | None
    #: The newest revision this secmail ships.
    head: str
    #: Whether ``current`` is a revision this secmail ships.
    known: bool
    #: A secmail 0.1 database (create_all + schema_version), not yet migrated.
    pre_migrations: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    # Config values go through ConfigParser interpolation: escape "%".
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:  # pragma: no cover - the package ships revisions
        raise SchemaError("no schema migrations are installed")
    return head


def schema_status(conn: Connection) -> SchemaStatus:
    heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) > 1:
        raise SchemaError(f"the database has several schema revisions ({', '.join(heads)})")
    current = heads[0] if heads else None
    known = current is None
    if current is not None:
        try:
            known = _scripts().get_revision(current) is not None
        except CommandError:
            known = False
    pre = current is None and inspect(conn).has_table("schema_version")
    return SchemaStatus(current=current, head=head_revision(), known=known, pre_migrations=pre)


def upgrade_database(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Apply the migrations up to ``target``; returns (before, after).

    Refuses a database at a revision this secmail does not know.
    """
    postgres = engine.dialect.name == "postgresql"
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        if postgres:
            # Held until this transaction ends; a concurrent upgrade waits
            # here, then reads the revision this one committed.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        before = schema_status(conn)
        if not before.known:
            raise _newer(before)
        if before.current != before.head or target != "head":
            command.upgrade(_config(conn), target)
        after = MigrationContext.configure(conn).get_current_revision()
    if after is None:  # pragma: no cover - command.upgrade always stamps
        raise SchemaError("the schema upgrade did not record a revision")
    if before.current != after:
        log.warning("key store schema upgraded from %s to %s", before.current or "empty", after)
    return before.current, after


def check_schema(engine: Engine, *, auto_upgrade: bool) -> SchemaStatus:
    """Make sure the database is at this secmail's head revision.

    A database that is behind (or empty) is upgraded when ``auto_upgrade``,
    and refused otherwise with the command that fixes it. A database at an
    unknown revision is always refused: a newer secmail wrote it.
    """
    with engine.connect() as conn:
        status = schema_status(conn)
        conn.rollback()
    if status.up_to_date:
        return status
    if not status.known:
        raise _newer(status)
    if auto_upgrade:
        upgrade_database(engine)
        with engine.connect() as conn:
            return schema_status(conn)
    fix = "run `secmail db upgrade` with the same --database-url first"
    if status.current is None and not status.pre_migrations:
        raise SchemaError(f"the key store database has no secmail schema: {fix}")
    raise SchemaError(
        f"the key store database schema is at revision {status.current or 'pre-0001'}, this secmail "
        f"needs {status.head}: {fix}"
    )


def _newer(status: SchemaStatus) -> SchemaError:
    return SchemaError(
        f"the key store database schema is at revision {status.current}, which this secmail does not "
        f"know (it knows up to {status.head}): a newer secmail upgraded it; run that version"
    )
