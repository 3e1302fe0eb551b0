"""The key and trust store on SQLAlchemy: SQLite by default, PostgreSQL too.

Only portable column types are used (String, Text, LargeBinary, Boolean,
JSON, timezone-aware DateTime) and no dialect-specific SQL, so the same
schema runs on both. The schema is owned by the Alembic migrations in
``secmail/keystore/migrations`` (see :mod:`secmail.keystore.migrate`); the
models below mirror the head revision, and a test checks they agree.

Private keys are stored sealed (:mod:`secmail.keystore.seal`), with the
owner and key id bound into the sealing's associated data: a sealed blob
moved to another row does not open.

Several replicas may share one PostgreSQL database. Every write is one
transaction; rows about to be changed are locked (``SELECT ... FOR
UPDATE``) in key-id order, so concurrent imports, deletes and trust
changes serialise per key instead of interleaving, and a writer that lost
a race (a unique-key conflict on a row another replica just inserted, a
deadlock, a serialisation failure) retries from the start. A replica that
dies mid-import leaves nothing: its open transaction is rolled back by the
server when the connection drops.

Test hook: when the environment variable ``SECMAIL_TEST_IMPORT_DELAY``
holds a number of seconds, :meth:`SQLKeyStore.add_keys` sleeps that long
inside its transaction, after every row is written and before the commit,
so a test can kill the process mid-import (``tests/replicas``). It is inert
when the variable is unset; never set it in production.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    union_all,
)
from sqlalchemy import cast as cast_
from sqlalchemy.engine import URL, Connection, Row, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
    sessionmaker,
)
from sqlalchemy.orm.exc import StaleDataError

from secmail.audit import AuditAction, AuditEvent, AuditOutcome
from secmail.errors import ErrorReason, InputError, KeyNotFoundError, NotFoundError, SecmailError
from secmail.keystore.api import (
    EVERYONE,
    ParsedKey,
    StoredCRL,
    StoredKey,
    TrustBundle,
    TrustEntry,
    normalise_trust_scope,
)
from secmail.keystore.importer import PROBLEM_CANNOT_SIGN, PROBLEM_KU_NO_SIGNING
from secmail.keystore.migrate import WRITE_OPTION, SchemaError, StoreError, check_schema, head_revision
from secmail.keystore.seal import SealedBlob, Sealer
from secmail.mime.addresses import normalise_addr_spec
from secmail.verdict import Scheme

__all__ = [
    "IMPORT_DELAY_ENV",
    "RewrapResult",
    "SQLAuditSink",
    "SQLKeyStore",
    "SchemaError",
    "StoreError",
    "database_url",
    "default_database_url",
    "open_engine",
]

log = logging.getLogger(__name__)

#: Test-only: seconds add_keys holds its transaction open (module doc).
IMPORT_DELAY_ENV: Final = "SECMAIL_TEST_IMPORT_DELAY"

_DB_FILENAME: Final = "secmail.db"
_MAX_USER_LEN: Final = 320  # RFC 5321 §4.5.3.1: 64 + "@" + 255
_KEY_ID_RE: Final = re.compile(r"[0-9A-Za-z]{1,128}")
#: Tries of a write transaction that lost a race to another writer.
_WRITE_ATTEMPTS: Final = 4
#: PostgreSQL serialization_failure and deadlock_detected (Appendix A).
_RETRY_SQLSTATES: Final = frozenset({"40001", "40P01"})

T = TypeVar("T")
#: A Core result row (any columns).
_CoreRow: TypeAlias = Row[*tuple[Any, ...]]


def default_database_url(data_dir: Path) -> str:
    """The embedded SQLite database in ``data_dir``."""
    return URL.create("sqlite+pysqlite", database=str(data_dir / _DB_FILENAME)).render_as_string()


def database_url(url: str) -> URL:
    """``url`` parsed, with the driver made explicit: ``postgresql://`` and
    ``postgres://`` mean psycopg 3 (SQLAlchemy's own default would be
    psycopg2, which secmail does not install)."""
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError):
        raise StoreError("the key store database URL is malformed") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def open_engine(
    url: str | None, *, data_dir: Path | None = None, engine_options: Mapping[str, Any] | None = None
) -> Engine:
    """An engine on ``url`` (None: SQLite in ``data_dir``), configured as
    the store needs it (SQLite: WAL, foreign keys, busy timeout)."""
    if url is None:
        if data_dir is None:
            raise SecmailError(
                "the key store needs a database URL or a data directory",
                reason=ErrorReason.INVALID_ARGUMENT,
            )
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        url = default_database_url(data_dir)
    parsed = database_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database not in (None, "", ":memory:"):
        _precreate_private_file(Path(parsed.database))
    options: dict[str, Any] = {"hide_parameters": True, "pool_pre_ping": not sqlite}
    options.update(engine_options or {})
    try:
        engine = create_engine(parsed, **options)
    except ImportError as exc:
        raise StoreError(
            f"the database driver for {parsed.drivername!r} is not installed ({exc.name})"
        ) from None
    except (SQLAlchemyError, TypeError, ValueError) as exc:
        raise StoreError(f"cannot open the key store database ({type(exc).__name__})") from None
    if sqlite:
        _configure_sqlite(engine)
    return engine


# ---------------------------------------------------------------------------
# Schema (mirrors the head migration)
# ---------------------------------------------------------------------------


class _UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out. SQLite keeps no zone, so naive values
    read back are UTC by construction; naive values are refused on write."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the key store")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class _Base(DeclarativeBase):
    pass


class _KeyRow(_Base):
    __tablename__ = "keys"
    __table_args__ = (
        UniqueConstraint("owner", "key_id", name="uq_keys_owner_key_id"),
        Index("ix_keys_owner_scheme", "owner", "scheme"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "owner" rather than "user", a reserved word in PostgreSQL.
    owner: Mapped[str] = mapped_column(String(_MAX_USER_LEN))
    scheme: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(128))
    public_data: Mapped[bytes] = mapped_column(LargeBinary)
    #: DER certificates, each prefixed by its 4-byte big-endian length.
    chain: Mapped[bytes] = mapped_column(LargeBinary)
    #: As imported, for display; the normalised forms are in key_addresses.
    addresses: Mapped[list[str]] = mapped_column(JSON)
    not_before: Mapped[datetime | None] = mapped_column(_UTCDateTime())
    not_after: Mapped[datetime | None] = mapped_column(_UTCDateTime())
    algorithm: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    issuer: Mapped[str] = mapped_column(Text)
    problems: Mapped[list[str]] = mapped_column(JSON)
    usable_for_encryption: Mapped[bool] = mapped_column(Boolean)
    usable_for_signing: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(_UTCDateTime())

    address_rows: Mapped[list[_AddressRow]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    secret: Mapped[_SecretRow | None] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class _AddressRow(_Base):
    """The lookup table of find_public.

    ``owner`` and ``scheme`` repeat the key row's so that the whole lookup
    is one index range on this table: the plan then never depends on
    table statistics (right after a bulk import, PostgreSQL's stale
    estimates otherwise pick the owner index and scan every key imported
    for EVERYONE).
    """

    __tablename__ = "key_addresses"
    __table_args__ = (
        UniqueConstraint("key_ref", "address", name="uq_key_addresses_key_address"),
        Index("ix_key_addresses_lookup", "address", "scheme", "owner"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_ref: Mapped[int] = mapped_column(ForeignKey("keys.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(_MAX_USER_LEN))
    scheme: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(_MAX_USER_LEN))


class _SecretRow(_Base):
    __tablename__ = "sealed_secrets"

    key_ref: Mapped[int] = mapped_column(
        ForeignKey("keys.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    version: Mapped[int] = mapped_column(Integer)
    #: Lets a master key rotation find and re-wrap only the data keys.
    master_key_id: Mapped[str] = mapped_column(String(64), index=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime())


class _TrustRow(_Base):
    __tablename__ = "trust_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    anchor_id: Mapped[str] = mapped_column(String(128), unique=True)
    bundle: Mapped[str] = mapped_column(String(255), index=True)
    scheme: Mapped[str] = mapped_column(String(16))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    is_anchor: Mapped[bool] = mapped_column(Boolean)
    subject: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime | None] = mapped_column(_UTCDateTime())
    not_after: Mapped[datetime | None] = mapped_column(_UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime())


class _TrustBundleRow(_Base):
    """One per bundle that has entries: its scope and revocation policy."""

    __tablename__ = "trust_bundles"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    domains: Mapped[list[str]] = mapped_column(JSON)
    revocation_policy: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(_UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(_UTCDateTime())


class _CRLRow(_Base):
    __tablename__ = "crls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(Text, unique=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    this_update: Mapped[datetime] = mapped_column(_UTCDateTime())
    next_update: Mapped[datetime | None] = mapped_column(_UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(_UTCDateTime())


class _AuditRow(_Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_mailbox_at", "mailbox", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(_UTCDateTime())
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    caller: Mapped[str] = mapped_column(String(512))
    mailbox: Mapped[str] = mapped_column(String(_MAX_USER_LEN))
    key_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(64))


# The tables behind the mapped classes, for Core statements.
_KEYS: Final = cast(Table, _KeyRow.__table__)
_SECRETS: Final = cast(Table, _SecretRow.__table__)

#: A user's keys of one scheme with their sealed secrets, newest first (see
#: :meth:`SQLKeyStore.private_keys`). Plain columns, named as the ORM
#: attributes, so :func:`_stored_key` and :func:`_blob` read the rows as is.
_PRIVATE_KEYS: Final = (
    select(
        *(
            _KEYS.c[name]
            for name in (
                "owner",
                "scheme",
                "key_id",
                "public_data",
                "chain",
                "addresses",
                "not_before",
                "not_after",
                "algorithm",
                "subject",
                "issuer",
                "problems",
                "usable_for_encryption",
                "usable_for_signing",
                "created_at",
            )
        ),
        _SECRETS.c.version,
        _SECRETS.c.master_key_id,
        _SECRETS.c.wrapped_key,
        _SECRETS.c.sealed,
    )
    .join_from(_KEYS, _SECRETS, _SECRETS.c.key_ref == _KEYS.c.id)
    .where(_KEYS.c.owner == bindparam("owner"), _KEYS.c.scheme == bindparam("scheme"))
    .order_by(_KEYS.c.created_at.desc(), _KEYS.c.key_id)
)

#: What SQLKeyStore.private_keys_stamp compares.
_PRIVATE_KEYS_STAMP: Final = (
    select(_KEYS.c.id, _KEYS.c.key_id, _KEYS.c.updated_at)
    .join_from(_KEYS, _SECRETS, _SECRETS.c.key_ref == _KEYS.c.id)
    .where(_KEYS.c.owner == bindparam("owner"), _KEYS.c.scheme == bindparam("scheme"))
    .order_by(_KEYS.c.id)
)

#: Owners per KeyStore.keys_stamps statement (more take several).
_STAMP_OWNERS: Final = 8

#: What SQLKeyStore.keys_stamps compares: the rows of one scheme of up to
#: _STAMP_OWNERS owners (a shorter list repeats one of them).
_KEYS_STAMP: Final = (
    select(_KEYS.c.owner, _KEYS.c.id, _KEYS.c.updated_at)
    .where(
        _KEYS.c.owner.in_([bindparam(f"owner{n}") for n in range(_STAMP_OWNERS)]),
        _KEYS.c.scheme == bindparam("scheme"),
    )
    .order_by(_KEYS.c.owner, _KEYS.c.id)
)

_ADDRESSES: Final = cast(Table, _AddressRow.__table__)

#: What SQLKeyStore.find_public_stamp compares: the (row id, updated_at) of
#: exactly the keys find_public reads, through the same index range.
_FIND_STAMP: Final = (
    select(_KEYS.c.id, _KEYS.c.updated_at)
    .join_from(_ADDRESSES, _KEYS, _ADDRESSES.c.key_ref == _KEYS.c.id)
    .where(
        _ADDRESSES.c.address == bindparam("address"),
        _ADDRESSES.c.scheme == bindparam("scheme"),
        _ADDRESSES.c.owner.in_([bindparam("reader"), bindparam("self"), bindparam("everyone")]),
    )
    .order_by(_KEYS.c.id)
)

_TRUST: Final = cast(Table, _TrustRow.__table__)
_BUNDLES: Final = cast(Table, _TrustBundleRow.__table__)
_CRLS: Final = cast(Table, _CRLRow.__table__)


#: What SQLKeyStore.trust_stamp compares: one row per trust entry, bundle
#: and CRL, with what a write changes in it. Rows, not aggregates: a
#: newest-timestamp aggregate misses an update committed with an older
#: timestamp than another row's (writers that overlap, replicas' clocks).
#: A trust store holds tens to a few hundred rows.
def _stamp_row(kind: str, number: Any, name: Any, a: Any, b: Any) -> Any:
    # Text columns throughout: a UNION needs one type per column on PostgreSQL.
    return select(
        literal_column(f"'{kind}'").label("kind"),
        cast_(number, String).label("number"),
        cast_(name, String).label("name"),
        cast_(a, String).label("a"),
        cast_(b, String).label("b"),
    )


_TRUST_STAMP: Final = union_all(
    _stamp_row("e", _TRUST.c.id, _TRUST.c.anchor_id, _TRUST.c.bundle, _TRUST.c.is_anchor),
    _stamp_row(
        "b", literal_column("0"), _BUNDLES.c.name, _BUNDLES.c.revocation_policy, _BUNDLES.c.updated_at
    ),
    _stamp_row("c", _CRLS.c.id, _CRLS.c.issuer, literal_column("''"), _CRLS.c.updated_at),
).order_by(literal_column("kind"), literal_column("number"), literal_column("name"))

_AUDIT: Final = cast(Table, _AuditRow.__table__)
#: One audit event (SQLAuditSink.record).
_AUDIT_INSERT: Final = insert(_AUDIT)
#: The columns SQLAuditSink.record sets (the id is the database's).
_AUDIT_COLUMNS: Final = ("at", "action", "outcome", "caller", "mailbox", "key_id", "reason")

#: Problems that only the import with the private key can tell (see
#: :meth:`SQLKeyStore._upsert_key`).
_SIGNING_PROBLEMS: Final = frozenset({PROBLEM_CANNOT_SIGN, PROBLEM_KU_NO_SIGNING})


@dataclass(frozen=True, slots=True)
class RewrapResult:
    """What :meth:`SQLKeyStore.rewrap_data_keys` did."""

    #: Data keys re-wrapped under the current master key.
    rewrapped: int
    #: Data keys under the current master key after the run (all of them,
    #: unless a replica sealed with an older key meanwhile).
    under_current: int
    #: Data keys still under another master key after the run.
    remaining: int
    master_key_id: str


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------


class SQLKeyStore:
    """:class:`secmail.keystore.api.KeyStore` on a SQL database.

    ``url`` is a SQLAlchemy URL (``postgresql://...`` means psycopg 3);
    None means the SQLite file ``<data_dir>/secmail.db``. The schema must
    be at this secmail's head revision: ``auto_upgrade`` (default: True for
    SQLite, False otherwise) applies the missing migrations first; without
    it a database that is behind raises :class:`SchemaError`, as does one
    at a revision this secmail does not know.
    """

    def __init__(
        self,
        url: str | None,
        sealer: Sealer,
        *,
        data_dir: Path | None = None,
        engine_options: Mapping[str, Any] | None = None,
        auto_upgrade: bool | None = None,
    ) -> None:
        self._sealer = sealer
        self._engine: Engine = open_engine(url, data_dir=data_dir, engine_options=engine_options)
        self._sqlite = self._engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._stamp = _DirectStatement(self._engine, _PRIVATE_KEYS_STAMP)
        self._keys_stamp = _DirectStatement(self._engine, _KEYS_STAMP)
        self._trust_stamp = _DirectStatement(self._engine, _TRUST_STAMP)
        self._find_stamp = _DirectStatement(self._engine, _FIND_STAMP)
        self._import_delay = _test_import_delay()
        try:
            with self._db_errors():
                check_schema(
                    self._engine, auto_upgrade=self._sqlite if auto_upgrade is None else auto_upgrade
                )
        except BaseException:
            self._engine.dispose()
            raise

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> SQLKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLKeyStore({self._engine.url.render_as_string(hide_password=True)!r})"

    @property
    def sealer(self) -> Sealer:
        return self._sealer

    @property
    def schema_revision(self) -> str:
        return head_revision()

    # -- keys --------------------------------------------------------------

    def add_keys(self, user: str, keys: Sequence[ParsedKey]) -> list[StoredKey]:
        _check_user(user)
        for key in keys:
            if not _KEY_ID_RE.fullmatch(key.key_id):
                raise InputError(
                    "a key id must be 1 to 128 ASCII letters or digits",
                    reason=ErrorReason.INVALID_ARGUMENT,
                )
        now = datetime.now(UTC)
        # Rows are locked in key-id order, whatever the file's order, so two
        # imports of overlapping sets cannot deadlock each other.
        ordered = sorted(keys, key=lambda k: k.key_id)

        def write(session: Session) -> list[StoredKey]:
            rows: dict[str, tuple[_KeyRow, bool]] = {}
            for key in ordered:
                rows[key.key_id] = self._upsert_key(session, user, key, now)
            session.flush()
            stored = {kid: _stored_key(row, has_private) for kid, (row, has_private) in rows.items()}
            if self._import_delay:
                log.warning(
                    "%s: holding the import transaction open for %.1f s (test hook)",
                    IMPORT_DELAY_ENV,
                    self._import_delay,
                )
                time.sleep(self._import_delay)
            return [stored[kid] for kid in dict.fromkeys(k.key_id for k in keys)]

        return self._write_retrying(write)

    def _upsert_key(self, session: Session, user: str, key: ParsedKey, now: datetime) -> tuple[_KeyRow, bool]:
        row = session.scalars(
            select(_KeyRow)
            .where(_KeyRow.owner == user, _KeyRow.key_id == key.key_id)
            .with_for_update()
            .options(selectinload(_KeyRow.secret), selectinload(_KeyRow.address_rows))
        ).one_or_none()
        old_signing: bool = False
        old_problems: tuple[str, ...] = ()
        if row is None:
            row = _KeyRow(owner=user, key_id=key.key_id, created_at=now)
            session.add(row)
        else:
            old_signing, old_problems = row.usable_for_signing, tuple(row.problems)

        problems = list(key.problems)
        usable_for_signing = key.usable_for_signing
        if key.private_data is not None:
            blob = self._sealer.seal(key.private_data, aad=_sealing_aad(user, key.key_id))
            if row.secret is None:
                row.secret = _SecretRow(created_at=now)
            row.secret.version = blob.version
            row.secret.master_key_id = blob.master_key_id
            row.secret.wrapped_key = blob.wrapped_key
            row.secret.sealed = blob.sealed
        elif row.secret is not None:
            # A certificate-only file for a key held with its private key
            # (a renewed export, a correspondent's copy): keep the private
            # key, and what only its import could tell about signing. A
            # problem the new data reveals (revoked, expired...) turns
            # signing off until the key is imported again.
            new_problems = set(problems) - set(old_problems)
            usable_for_signing = old_signing and not new_problems
            problems += [p for p in old_problems if p in _SIGNING_PROBLEMS and p not in problems]

        row.scheme = key.scheme.value
        row.public_data = key.public_data
        row.chain = _pack_chain(key.chain)
        row.addresses = list(key.addresses)
        row.not_before = key.not_before
        row.not_after = key.not_after
        row.algorithm = key.algorithm
        row.subject = key.subject
        row.issuer = key.issuer
        row.problems = problems
        row.usable_for_encryption = key.usable_for_encryption
        row.usable_for_signing = usable_for_signing
        row.updated_at = now

        wanted = _index_addresses(key.addresses)
        current = {a.address: a for a in row.address_rows}
        row.address_rows = [current.get(a) or _AddressRow(address=a) for a in wanted]
        for address_row in row.address_rows:
            address_row.owner = user
            address_row.scheme = row.scheme
        # Flushed per key so that a later failure rolls back rows that really
        # reached the database, not just pending objects.
        session.flush()
        return row, row.secret is not None

    def list_keys(self, user: str) -> list[StoredKey]:
        with self._db_errors(), self._read() as session:
            result = session.execute(
                _select_keys().where(_KeyRow.owner == user).order_by(_KeyRow.created_at, _KeyRow.key_id)
            )
            return [_stored_key(row, bool(has)) for row, has in result]

    def get_key(self, user: str, key_id: str) -> StoredKey:
        """One key's public facts; raises KeyNotFoundError."""
        with self._db_errors(), self._read() as session:
            found = session.execute(
                _select_keys().where(_KeyRow.owner == user, _KeyRow.key_id == key_id)
            ).one_or_none()
        if found is None:
            raise KeyNotFoundError(f"no key {key_id} for this user", metadata={"key_id": key_id})
        return _stored_key(found[0], bool(found[1]))

    def delete_key(self, user: str, key_id: str) -> None:
        def write(session: Session) -> None:
            # Locked: a concurrent delete of the same key waits, then finds
            # nothing and reports KEY_NOT_FOUND instead of both succeeding.
            row = session.scalars(
                select(_KeyRow).where(_KeyRow.owner == user, _KeyRow.key_id == key_id).with_for_update()
            ).one_or_none()
            if row is None:
                raise KeyNotFoundError(f"no key {key_id} for this user", metadata={"key_id": key_id})
            session.delete(row)

        self._write_retrying(write)

    def find_public(self, address: str, scheme: Scheme, *, for_user: str) -> list[StoredKey]:
        norm = normalise_addr_spec(address)
        if norm is None:
            return []
        # Preference when the same certificate is visible several times.
        rank = {for_user: 0, norm: 1, EVERYONE: 2}
        with self._db_errors(), self._read() as session:
            result = session.execute(
                _select_keys()
                .join(_AddressRow, _AddressRow.key_ref == _KeyRow.id)
                .where(
                    _AddressRow.address == norm,
                    _AddressRow.scheme == scheme.value,
                    _AddressRow.owner.in_(list(rank)),
                )
            )
            best: dict[str, tuple[int, StoredKey]] = {}
            for row, has in result:
                r = rank[row.owner]
                if row.key_id not in best or r < best[row.key_id][0]:
                    best[row.key_id] = (r, _stored_key(row, bool(has)))
        found = [stored for _, stored in best.values()]
        epoch = datetime.min.replace(tzinfo=UTC)
        found.sort(key=lambda k: (not k.usable_for_encryption, -(k.not_after or epoch).timestamp(), k.key_id))
        return found

    def find_public_stamp(self, address: str, scheme: Scheme, *, for_user: str) -> object:
        """See :meth:`secmail.keystore.api.KeyStore.find_public_stamp`.

        The (row id, updated_at) of the keys :meth:`find_public` reads, by
        the same index range: a key gaining or losing the address (its
        address rows are rewritten with updated_at), an import, re-import
        or delete of one of them changes it. Constant in the number of keys
        others hold, unlike a stamp of every key imported for everyone.
        """
        norm = normalise_addr_spec(address)
        if norm is None:
            return ()
        # On every Encrypt (per recipient): run directly (_DirectStatement).
        with self._db_errors():
            params = {"address": norm, "scheme": scheme.value, "self": norm, "everyone": EVERYONE}
            rows = self._find_stamp.execute({**params, "reader": for_user})
        return tuple(tuple(row) for row in rows)

    def private_keys(self, user: str, scheme: Scheme) -> list[tuple[StoredKey, bytes]]:
        # A Core statement built once (_PRIVATE_KEYS) on a plain connection:
        # the ORM session and entity loading cost ~0.3 ms more per call, on
        # the Sign and Decrypt paths.
        with self._db_errors(), self._engine.connect() as conn, conn.begin():
            rows = conn.execute(_PRIVATE_KEYS, {"owner": user, "scheme": scheme.value}).all()
        out: list[tuple[StoredKey, bytes]] = []
        for row in rows:
            plaintext = self._sealer.unseal(_blob(row), aad=_sealing_aad(row.owner, row.key_id))
            out.append((_stored_key(row, True), plaintext))
        return out

    def private_keys_stamp(self, user: str, scheme: Scheme) -> object:
        """See :meth:`secmail.keystore.api.KeyStore.private_keys_stamp`.

        The (row id, key id, updated_at) of each key with a sealed secret:
        an import or re-import sets updated_at, a delete removes the row, a
        delete and re-import makes a new row id. Re-wrapping data keys
        changes none of them, rightly: the unsealed secrets stay the same.
        One indexed range on (owner, scheme), nothing unsealed.
        """
        # On every Sign: run directly (_DirectStatement). The driver's raw
        # values are fine for a stamp, which is only compared.
        with self._db_errors():
            rows = self._stamp.execute({"owner": user, "scheme": scheme.value})
        return tuple(tuple(row) for row in rows)

    def keys_stamps(self, owners: Iterable[str], scheme: Scheme) -> dict[str, object]:
        """See :meth:`secmail.keystore.api.KeyStore.keys_stamps`.

        Per owner, the (row id, updated_at) of each of its keys of
        ``scheme``: an import or re-import sets updated_at (and rewrites
        the key's address rows in the same transaction), a delete removes
        the row (and its address rows, by cascade), an import makes a new
        row. A row's owner, scheme and key id never change. One indexed
        range on (owner, scheme) per owner, several owners per statement;
        no key data is read. Its size grows with the owner's keys (those
        imported for everyone included): still far less than reading them.
        """
        wanted = list(dict.fromkeys(owners))
        found: dict[str, list[tuple[Any, ...]]] = {owner: [] for owner in wanted}
        for start in range(0, len(wanted), _STAMP_OWNERS):
            chunk = wanted[start : start + _STAMP_OWNERS]
            params: dict[str, Any] = {f"owner{n}": chunk[n % len(chunk)] for n in range(_STAMP_OWNERS)}
            params["scheme"] = scheme.value
            # On every Verify and Encrypt: run directly (_DirectStatement);
            # the driver's raw values are fine for a stamp, only compared.
            with self._db_errors():
                rows = self._keys_stamp.execute(params)
            for owner, *rest in rows:
                # A row is the owner's it was selected for; should a
                # database ever match an owner it does not spell the same,
                # it counts for every owner of the statement (a needless
                # re-read at worst, never a missed change).
                for target in [owner] if owner in found else chunk:
                    found[target].append(tuple(rest))
        return {owner: tuple(rows) for owner, rows in found.items()}

    # -- master key rotation -------------------------------------------------

    def rewrap_data_keys(
        self, *, batch_size: int = 200, progress: Callable[[int], None] | None = None
    ) -> RewrapResult:
        """Re-wrap every data key not under the sealer's current master key.

        Each batch is one transaction that locks its rows; only
        ``master_key_id`` and ``wrapped_key`` change, the sealed secrets are
        not touched. Serving replicas keep working throughout as long as
        they know both master keys (``previous_keys``). A data key wrapped
        by a master key this sealer does not have stops the run with
        :class:`~secmail.keystore.seal.UnsealError`; batches already done
        stay done, and a new run resumes.
        """
        if batch_size < 1:
            raise InputError("batch size must be at least 1", reason=ErrorReason.INVALID_ARGUMENT)
        target = self._sealer.master_key_id
        done = 0
        last_ref = -1

        def batch(session: Session) -> tuple[int, int]:
            rows = session.scalars(
                select(_SecretRow)
                .where(_SecretRow.master_key_id != target, _SecretRow.key_ref > last_ref)
                .order_by(_SecretRow.key_ref)
                .limit(batch_size)
                .with_for_update()
            ).all()
            for row in rows:
                new = self._sealer.rewrap(_blob(row))
                row.master_key_id = new.master_key_id
                row.wrapped_key = new.wrapped_key
            return len(rows), rows[-1].key_ref if rows else last_ref

        while True:
            count, last_ref = self._write_retrying(batch)
            if not count:
                break
            done += count
            if progress is not None:
                progress(done)
        counts = self.master_key_ids()
        under = counts.pop(target, 0)
        return RewrapResult(
            rewrapped=done, under_current=under, remaining=sum(counts.values()), master_key_id=target
        )

    def master_key_ids(self) -> dict[str, int]:
        """How many data keys each master key wraps."""
        with self._db_errors(), self._read() as session:
            return {
                mk: int(n)
                for mk, n in session.execute(
                    select(_SecretRow.master_key_id, func.count()).group_by(_SecretRow.master_key_id)
                )
            }

    # -- trust -------------------------------------------------------------

    def add_trust(self, entries: Sequence[TrustEntry]) -> list[TrustEntry]:
        scopes: dict[str, tuple[tuple[str, ...], str]] = {}
        for entry in entries:
            scope = normalise_trust_scope(entry.domains, entry.revocation_policy)
            if scopes.setdefault(entry.bundle, scope) != scope:
                raise InputError(
                    f"entries of bundle {entry.bundle!r} disagree on its domains or revocation policy",
                    reason=ErrorReason.INVALID_ARGUMENT,
                )
        now = datetime.now(UTC)
        ordered = sorted(entries, key=lambda e: e.anchor_id)

        def write(session: Session) -> list[TrustEntry]:
            bundles: dict[str, _TrustBundleRow] = {}
            for name in sorted(scopes):
                domains, policy = scopes[name]
                bundle = session.scalars(
                    select(_TrustBundleRow).where(_TrustBundleRow.name == name).with_for_update()
                ).one_or_none()
                if bundle is None:
                    bundle = _TrustBundleRow(name=name, created_at=now)
                    session.add(bundle)
                bundle.domains = list(domains)
                bundle.revocation_policy = policy
                bundle.updated_at = now
                bundles[name] = bundle
            session.flush()
            left: set[str] = set()
            stored: dict[str, TrustEntry] = {}
            for entry in ordered:
                row = session.scalars(
                    select(_TrustRow).where(_TrustRow.anchor_id == entry.anchor_id).with_for_update()
                ).one_or_none()
                if row is None:
                    row = _TrustRow(anchor_id=entry.anchor_id, created_at=now)
                    session.add(row)
                elif row.bundle != entry.bundle:
                    left.add(row.bundle)
                row.bundle = entry.bundle
                row.scheme = entry.scheme.value
                row.data = entry.data
                row.is_anchor = entry.is_anchor
                row.subject = entry.subject
                row.not_before = entry.not_before
                row.not_after = entry.not_after
                session.flush()
                stored[entry.anchor_id] = _trust_entry(row, bundles[entry.bundle])
            for name in sorted(left - set(scopes)):
                _drop_bundle_if_empty(session, name)
            return [stored[e.anchor_id] for e in dict((e.anchor_id, e) for e in entries).values()]

        return self._write_retrying(write)

    def trust_stamp(self) -> object:
        """See :meth:`secmail.keystore.api.KeyStore.trust_stamp`.

        One row per trust entry (id, anchor id, bundle, anchor or not), per
        bundle (name, revocation policy, updated_at) and per CRL (id,
        issuer, updated_at): a removal drops a row, an import adds one or
        rewrites its bundle's updated_at (scope and policy changes too), a
        CRL import adds a row or rewrites its updated_at. Compared row by
        row, so an update stamped with an older time than another row's
        (overlapping writers, replicas' clocks) is still seen.
        """
        # On every Verify and Decrypt: run directly (_DirectStatement).
        with self._db_errors():
            rows = self._trust_stamp.execute({})
        return tuple(tuple(row) for row in rows)

    def list_trust(self, bundle: str | None = None) -> list[TrustEntry]:
        stmt = (
            select(_TrustRow, _TrustBundleRow)
            .outerjoin(_TrustBundleRow, _TrustBundleRow.name == _TrustRow.bundle)
            .order_by(_TrustRow.bundle, _TrustRow.subject, _TrustRow.anchor_id)
        )
        if bundle is not None:
            stmt = stmt.where(_TrustRow.bundle == bundle)
        with self._db_errors(), self._read() as session:
            return [_trust_entry(row, b) for row, b in session.execute(stmt)]

    def list_trust_bundles(self) -> list[TrustBundle]:
        counts = (
            select(
                _TrustRow.bundle,
                func.count().filter(_TrustRow.is_anchor.is_(True)).label("anchors"),
                func.count().filter(_TrustRow.is_anchor.is_(False)).label("intermediates"),
            )
            .group_by(_TrustRow.bundle)
            .subquery()
        )
        stmt = (
            select(_TrustBundleRow, counts.c.anchors, counts.c.intermediates)
            .join(counts, counts.c.bundle == _TrustBundleRow.name)
            .order_by(_TrustBundleRow.name)
        )
        with self._db_errors(), self._read() as session:
            return [
                TrustBundle(
                    name=b.name,
                    domains=tuple(b.domains),
                    revocation_policy=b.revocation_policy,
                    anchors=int(anchors or 0),
                    intermediates=int(intermediates or 0),
                    created_at=b.created_at,
                    updated_at=b.updated_at,
                )
                for b, anchors, intermediates in session.execute(stmt)
            ]

    def remove_trust(self, anchor_id: str) -> None:
        def write(session: Session) -> None:
            row = session.scalars(
                select(_TrustRow).where(_TrustRow.anchor_id == anchor_id).with_for_update()
            ).one_or_none()
            if row is None:
                raise NotFoundError(
                    f"no trust entry {anchor_id}",
                    reason=ErrorReason.TRUST_ANCHOR_NOT_FOUND,
                    metadata={"anchor_id": anchor_id},
                )
            session.delete(row)
            session.flush()
            _drop_bundle_if_empty(session, row.bundle)

        self._write_retrying(write)

    def remove_trust_bundle(self, name: str) -> list[TrustEntry]:
        def write(session: Session) -> list[TrustEntry]:
            bundle = session.scalars(
                select(_TrustBundleRow).where(_TrustBundleRow.name == name).with_for_update()
            ).one_or_none()
            rows = session.scalars(
                select(_TrustRow)
                .where(_TrustRow.bundle == name)
                .order_by(_TrustRow.anchor_id)
                .with_for_update()
            ).all()
            if bundle is None and not rows:
                raise NotFoundError(
                    f"no trust bundle {name!r}",
                    reason=ErrorReason.TRUST_ANCHOR_NOT_FOUND,
                    metadata={"bundle": name},
                )
            removed = [_trust_entry(row, bundle) for row in rows]
            session.execute(delete(_TrustRow).where(_TrustRow.bundle == name))
            session.execute(delete(_TrustBundleRow).where(_TrustBundleRow.name == name))
            return removed

        return self._write_retrying(write)

    # -- CRLs --------------------------------------------------------------

    def add_crl(self, crl: StoredCRL) -> None:
        now = datetime.now(UTC)

        def write(session: Session) -> None:
            row = session.scalars(
                select(_CRLRow).where(_CRLRow.issuer == crl.issuer).with_for_update()
            ).one_or_none()
            if row is None:
                row = _CRLRow(issuer=crl.issuer)
                session.add(row)
            elif crl.this_update < row.this_update:
                return  # an older CRL never replaces a newer one
            row.data = crl.data
            row.this_update = crl.this_update
            row.next_update = crl.next_update
            row.updated_at = now

        self._write_retrying(write)

    def list_crls(self) -> list[StoredCRL]:
        with self._db_errors(), self._read() as session:
            return [
                StoredCRL(
                    issuer=row.issuer,
                    data=row.data,
                    this_update=row.this_update,
                    next_update=row.next_update,
                )
                for row in session.scalars(select(_CRLRow).order_by(_CRLRow.issuer))
            ]

    # -- audit -------------------------------------------------------------

    def audit_sink(self) -> SQLAuditSink:
        """An audit sink on this store's database (and connection pool)."""
        return SQLAuditSink(self._engine)

    # -- plumbing ----------------------------------------------------------

    def _write_retrying(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a write transaction, again from the start when it
        lost a race to another writer (see the module doc)."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._db_errors(), self._write() as session:
                    return work(session)
            except StoreError as exc:
                if attempt + 1 < _WRITE_ATTEMPTS and _lost_race(exc.__cause__):
                    log.info("key store write lost a race (%s); retrying", type(exc.__cause__).__name__)
                    time.sleep(0.01 * (attempt + 1))
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            # On SQLite this makes the BEGIN IMMEDIATE (see _configure_sqlite):
            # the write lock is taken up front, so two writers queue on
            # busy_timeout instead of one failing on a lock upgrade.
            session.connection(execution_options={WRITE_OPTION: True})
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def _db_errors(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            # hide_parameters keeps row data out of the message.
            log.error("key store database error: %s", exc)
            raise StoreError(
                f"the key store database failed ({type(exc).__name__})",
            ) from exc


class _DirectStatement:
    """A fixed Core statement, compiled once for an engine's dialect, run
    on a pooled DBAPI connection as a transaction of its own.

    For the statements on every Sign, Verify, Encrypt or Decrypt
    (:meth:`SQLKeyStore.private_keys_stamp`, :meth:`SQLKeyStore.keys_stamps`
    and :meth:`SQLAuditSink.record`), SQLAlchemy's per-execution machinery
    (connection and transaction objects, the BEGIN event, cache lookups,
    result wrapping: ~60 us per statement) costs more than the database
    does. The SQL is SQLAlchemy's own compilation of the statement, and
    parameters go through the column types' bind processors as a
    ``Connection`` would send them, so both dialects get exactly what the
    ORM path sends. Result rows are the driver's, unprocessed: only for
    callers that compare or discard them.

    The connection comes from the engine's pool (with its pre-ping and
    connect-time setup). On SQLite it is in autocommit mode (see
    :func:`_configure_sqlite`), so the statement is its own implicit
    transaction, waiting on busy_timeout for the write lock like BEGIN
    IMMEDIATE; on PostgreSQL it is committed before the connection goes
    back. A driver error invalidates the connection (the pool opens a new
    one) and is raised as the ``SQLAlchemyError`` the caller already
    handles.
    """

    __slots__ = ("_dbapi_error", "_engine", "_order", "_processors", "_sql")

    def __init__(self, engine: Engine, statement: Any, column_keys: Sequence[str] | None = None) -> None:
        dialect = engine.dialect
        compiled = statement.compile(
            dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None
        )
        self._engine = engine
        self._sql = str(compiled)
        #: Bind names in order for positional paramstyles (SQLite's qmark),
        #: None for named ones (psycopg's pyformat).
        self._order: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positiontup is not None else None
        )
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

    def execute(self, params: Mapping[str, Any]) -> list[Any]:
        """Run the statement with ``params`` (by bind name); its rows, if any."""
        processors = self._processors
        values = {k: processors[k](v) if k in processors else v for k, v in params.items()}
        args: Any = [values[k] for k in self._order] if self._order is not None else values
        try:
            # Inside the try: a database that cannot be reached fails here,
            # and must surface as the SQLAlchemyError callers turn into
            # StoreError (the pool does not wrap driver errors raised while
            # it connects).
            conn = self._engine.raw_connection()
        except self._dbapi_error as exc:
            raise DBAPIError.instance(self._sql, None, exc, self._dbapi_error, hide_parameters=True) from exc
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(self._sql, args)
                rows = cursor.fetchall() if cursor.description is not None else []
            finally:
                cursor.close()
            conn.commit()
        except self._dbapi_error as exc:
            conn.invalidate(exc)
            raise DBAPIError.instance(self._sql, None, exc, self._dbapi_error, hide_parameters=True) from exc
        finally:
            conn.close()
        return list(rows)


class SQLAuditSink:
    """:class:`secmail.audit.AuditSink` writing to the ``audit_events``
    table, each event in its own short transaction.

    A failure to record raises :class:`StoreError`: the service records an
    event before it answers, so an operation that cannot be audited is not
    reported as done. The engine must be on a database at the head schema
    revision (:meth:`SQLKeyStore.audit_sink` shares the store's).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = _DirectStatement(engine, _AUDIT_INSERT, _AUDIT_COLUMNS)

    def __repr__(self) -> str:
        return f"SQLAuditSink({self._engine.url.render_as_string(hide_password=True)!r})"

    def record(self, event: AuditEvent) -> None:
        values = {
            "at": event.at if event.at.tzinfo is not None else event.at.replace(tzinfo=UTC),
            "action": event.action.value,
            "outcome": event.outcome.value,
            "caller": event.caller[:512],
            "mailbox": event.user[:_MAX_USER_LEN],
            "key_id": event.key_id[:128],
            "reason": event.reason[:64],
        }
        try:
            # One statement, committed before this returns (_DirectStatement).
            self._insert.execute(values)
        except SQLAlchemyError as exc:
            log.error("audit database error: %s", exc)
            raise StoreError(f"the audit log could not be written ({type(exc).__name__})") from exc

    def query(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        user: str | None = None,
        action: AuditAction | None = None,
        limit: int = 10_000,
    ) -> list[AuditEvent]:
        """Matching events, oldest first; at most ``limit``, the newest."""
        stmt = select(_AuditRow).order_by(_AuditRow.at.desc(), _AuditRow.id.desc()).limit(limit)
        if since is not None:
            stmt = stmt.where(_AuditRow.at >= since)
        if until is not None:
            stmt = stmt.where(_AuditRow.at < until)
        if user is not None:
            stmt = stmt.where(_AuditRow.mailbox == user)
        if action is not None:
            stmt = stmt.where(_AuditRow.action == action.value)
        try:
            with Session(self._engine) as session, session.begin():
                events = [
                    AuditEvent(
                        action=AuditAction(row.action),
                        outcome=AuditOutcome(row.outcome),
                        caller=row.caller,
                        user=row.mailbox,
                        key_id=row.key_id,
                        reason=row.reason,
                        at=row.at,
                    )
                    for row in session.scalars(stmt)
                ]
        except SQLAlchemyError as exc:
            log.error("audit database error: %s", exc)
            raise StoreError(f"the audit log could not be read ({type(exc).__name__})") from exc
        return events[::-1]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _enable_wal(cursor: Any) -> None:
    """Switch the database to WAL (a no-op once it is: the mode is stored
    in the file).

    The switch itself needs an exclusive lock, and SQLite answers "database
    is locked" at once, without the busy handler, when another connection
    is opening the same new database (several processes or threads starting
    on a fresh data directory): retried for up to the busy timeout.
    """
    deadline = time.monotonic() + 10.0
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Python < 3.12's sqlite3 starts transactions lazily, only before
        # DML; take control and emit BEGIN ourselves (SQLAlchemy's SQLite
        # dialect documentation, "Transactions with SQLite").
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout=10000")
            _enable_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            # Durable at every checkpoint, and safe against corruption in WAL
            # mode; FULL would fsync on every commit for little gain here.
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _test_import_delay() -> float:
    raw = os.environ.get(IMPORT_DELAY_ENV)
    if not raw:
        return 0.0
    try:
        delay = float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number of seconds", IMPORT_DELAY_ENV, raw)
        return 0.0
    if delay > 0:
        log.warning("%s is set: key imports will stall %.1f s (test-only hook)", IMPORT_DELAY_ENV, delay)
    return max(delay, 0.0)


def _lost_race(exc: BaseException | None) -> bool:
    if isinstance(exc, IntegrityError | StaleDataError):
        return True
    if isinstance(exc, DBAPIError):
        return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES
    return False


def _drop_bundle_if_empty(session: Session, name: str) -> None:
    left = session.scalar(select(func.count()).select_from(_TrustRow).where(_TrustRow.bundle == name))
    if not left:
        session.execute(delete(_TrustBundleRow).where(_TrustBundleRow.name == name))


def _precreate_private_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (with the umask's
    permissions); SQLite gives its -wal and -shm files the same mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the key store database {path}: {exc.strerror}") from None
    os.close(fd)


def _check_user(user: str) -> None:
    if not user or len(user) > _MAX_USER_LEN or user != user.strip():
        raise InputError("invalid user name", reason=ErrorReason.INVALID_ARGUMENT)


def _sealing_aad(user: str, key_id: str) -> bytes:
    # Length-prefixed so that no (user, key_id) pair can spell another's.
    owner = user.encode("utf-8")
    return b"secmail/v1|%d:%s|%s" % (len(owner), owner, key_id.encode("ascii"))


def _blob(row: _SecretRow | _CoreRow) -> SealedBlob:
    return SealedBlob(
        version=row.version,
        master_key_id=row.master_key_id,
        wrapped_key=row.wrapped_key,
        sealed=row.sealed,
    )


def _index_addresses(addresses: Sequence[str]) -> list[str]:
    out: dict[str, None] = {}
    for addr in addresses:
        norm = normalise_addr_spec(addr)
        if norm is not None:
            out.setdefault(norm, None)
    return list(out)


def _pack_chain(chain: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(der)) + der for der in chain)


def _unpack_chain(blob: bytes) -> tuple[bytes, ...]:
    out: list[bytes] = []
    pos = 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise StoreError("a stored certificate chain is corrupted")
        (length,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        if pos + length > len(blob):
            raise StoreError("a stored certificate chain is corrupted")
        out.append(blob[pos : pos + length])
        pos += length
    return tuple(out)


def _select_keys() -> Any:
    """Key rows with a flag telling whether a sealed secret exists, without
    loading the secret."""
    return select(_KeyRow, _SecretRow.key_ref.is_not(None)).outerjoin(
        _SecretRow, _SecretRow.key_ref == _KeyRow.id
    )


def _stored_key(row: _KeyRow | _CoreRow, has_private: bool) -> StoredKey:
    return StoredKey(
        user=row.owner,
        scheme=Scheme(row.scheme),
        key_id=row.key_id,
        public_data=row.public_data,
        has_private_key=has_private,
        addresses=tuple(row.addresses),
        not_before=row.not_before,
        not_after=row.not_after,
        algorithm=row.algorithm,
        subject=row.subject,
        issuer=row.issuer,
        chain=_unpack_chain(row.chain),
        problems=tuple(row.problems),
        usable_for_encryption=row.usable_for_encryption,
        usable_for_signing=row.usable_for_signing,
        created_at=row.created_at,
    )


def _trust_entry(row: _TrustRow, bundle: _TrustBundleRow | None) -> TrustEntry:
    return TrustEntry(
        anchor_id=row.anchor_id,
        bundle=row.bundle,
        scheme=Scheme(row.scheme),
        data=row.data,
        is_anchor=row.is_anchor,
        subject=row.subject,
        not_before=row.not_before,
        not_after=row.not_after,
        domains=tuple(bundle.domains) if bundle is not None else (),
        revocation_policy=bundle.revocation_policy if bundle is not None else "",
    )
