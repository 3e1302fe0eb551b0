"""Alembic migrations (migrate.py, migrations/): on SQLite and PostgreSQL,
the head revision is the schema the store's models describe; old databases
are adopted; unknown or missing revisions are refused; concurrent upgrades
are safe."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from secmail.keystore import migrate
from secmail.keystore.api import EVERYONE
from secmail.keystore.migrate import SchemaError, check_schema, head_revision, schema_status, upgrade_database
from secmail.keystore.seal import Sealer
from secmail.keystore.sql import SQLKeyStore, _Base, database_url, open_engine
from secmail.verdict import Scheme

ALICE = "alice@ac-test.fr"
NOW = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _upgrade_to(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), revision)


def test_head_matches_the_models(engine: Engine) -> None:
    """The hand-written migrations and the ORM models describe the same
    tables, columns, types, indexes and constraints."""
    assert upgrade_database(engine) == (None, head_revision())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), _Base.metadata)
    assert diff == []
    assert set(inspect(engine).get_table_names()) == {
        "alembic_version",
        "keys",
        "key_addresses",
        "sealed_secrets",
        "trust_entries",
        "trust_bundles",
        "crls",
        "audit_events",
    }


def test_upgrade_is_idempotent(engine: Engine) -> None:
    upgrade_database(engine)
    assert upgrade_database(engine) == (head_revision(), head_revision())


def test_0002_gives_existing_bundles_an_unscoped_row(engine: Engine, sealer: Sealer, db_url: str) -> None:
    _upgrade_to(engine, "0001")
    with engine.begin() as conn:
        for anchor, bundle in (("a1", "national"), ("a2", "national"), ("a3", "besancon")):
            conn.execute(
                text(
                    "INSERT INTO trust_entries (anchor_id, bundle, scheme, data, is_anchor, subject, "
                    "created_at) VALUES (:a, :b, 'smime', :d, :t, :s, :c)"
                ),
                {"a": anchor, "b": bundle, "d": b"der", "t": True, "s": f"CN={anchor}", "c": NOW},
            )
    assert upgrade_database(engine) == ("0001", head_revision())
    with SQLKeyStore(db_url, sealer, auto_upgrade=False) as store:
        bundles = {b.name: b for b in store.list_trust_bundles()}
        assert set(bundles) == {"national", "besancon"}
        assert bundles["national"].anchors == 2 and bundles["national"].domains == ()
        assert bundles["national"].revocation_policy == ""
        assert {e.anchor_id for e in store.list_trust()} == {"a1", "a2", "a3"}


def _make_pre_migration_database(engine: Engine) -> None:
    """A database as secmail 0.1 left it: the 0001 tables, a schema_version
    table holding 1, no alembic_version."""
    _upgrade_to(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY)"))
        conn.execute(text("INSERT INTO schema_version (version) VALUES (1)"))


def test_pre_migration_database_is_adopted_with_its_keys(engine: Engine, sealer: Sealer, db_url: str) -> None:
    _make_pre_migration_database(engine)
    key_id = hashlib.sha256(b"k").hexdigest()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO keys (owner, scheme, key_id, public_data, chain, addresses, algorithm, "
                "subject, issuer, problems, usable_for_encryption, usable_for_signing, created_at, "
                "updated_at) VALUES (:o, 'smime', :k, :p, :c, :a, 'rsa-2048', 'CN=k', 'CN=ca', '[]', "
                ":t, :f, :n, :n)"
            ),
            {
                "o": EVERYONE,
                "k": key_id,
                "p": b"cert",
                "c": b"",
                "a": '["bob@ac-test.fr"]',
                "t": True,
                "f": False,
            }
            | {"n": NOW},
        )
    with engine.connect() as conn:
        status = schema_status(conn)
    assert status.current is None and status.pre_migrations and status.known
    with pytest.raises(SchemaError, match=r"pre-0001.*db upgrade"):
        check_schema(engine, auto_upgrade=False)

    assert upgrade_database(engine) == (None, head_revision())
    assert not inspect(engine).has_table("schema_version")
    with SQLKeyStore(db_url, sealer, auto_upgrade=False) as store:
        [key] = store.list_keys(EVERYONE)
        assert key.key_id == key_id and key.created_at == NOW


def test_empty_database_refused_without_upgrade(engine: Engine, sealer: Sealer, db_url: str) -> None:
    with pytest.raises(SchemaError, match=r"no secmail schema.*secmail db upgrade"):
        SQLKeyStore(db_url, sealer, auto_upgrade=False)
    assert _revision(engine) is None
    assert inspect(engine).get_table_names() == []  # refusing wrote nothing


def test_older_revision_refused_without_upgrade(engine: Engine, sealer: Sealer, db_url: str) -> None:
    _upgrade_to(engine, "0001")
    with pytest.raises(SchemaError, match=f"revision 0001, this secmail needs {head_revision()}"):
        SQLKeyStore(db_url, sealer, auto_upgrade=False)
    with SQLKeyStore(db_url, sealer, auto_upgrade=True) as store:
        assert store.list_keys(ALICE) == []
    assert _revision(engine) == head_revision()


def test_newer_revision_refused_even_with_upgrade(engine: Engine, sealer: Sealer, db_url: str) -> None:
    upgrade_database(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    for auto in (False, True):
        with pytest.raises(SchemaError, match="0099, which this secmail does not know"):
            SQLKeyStore(db_url, sealer, auto_upgrade=auto)
    with pytest.raises(SchemaError, match="does not know"):
        upgrade_database(engine)
    assert _revision(engine) == "0099"


def test_sqlite_upgrades_itself_by_default(tmp_path: Path, sealer: Sealer) -> None:
    url = f"sqlite:///{tmp_path / 'secmail.db'}"
    eng = open_engine(url)
    try:
        _upgrade_to(eng, "0001")
        with SQLKeyStore(url, sealer) as store:  # no auto_upgrade: SQLite default
            store.add_keys(ALICE, [])
        assert _revision(eng) == head_revision()
    finally:
        eng.dispose()


def test_failed_migration_rolls_back_entirely(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Transactional DDL: a migration failing half-way leaves no table and
    no revision behind."""
    from alembic.operations import Operations

    real = Operations.create_table
    calls = {"n": 0}

    def failing(self: Operations, name: str, *cols: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected migration failure")
        return real(self, name, *cols, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Operations, "create_table", failing)
    with pytest.raises(RuntimeError, match="injected"):
        upgrade_database(engine)
    assert calls["n"] == 3
    assert _revision(engine) is None
    assert inspect(engine).get_table_names() == []


def test_concurrent_upgrades_are_serialised(db_url: str, sealer: Sealer) -> None:
    """Four upgraders start together on an empty database: one migrates,
    the others wait for its lock and find the schema at head."""
    engines = [open_engine(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    results: list[tuple[str | None, str]] = []
    errors: list[BaseException] = []

    def run(eng: Engine) -> None:
        try:
            barrier.wait()
            results.append(upgrade_database(eng))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for eng in engines:
        eng.dispose()
    assert errors == []
    head = head_revision()
    assert sorted(results, key=str) == sorted([(None, head)] + [(head, head)] * 3, key=str)
    with SQLKeyStore(db_url, sealer, auto_upgrade=False) as store:
        assert store.find_public(ALICE, Scheme.SMIME, for_user=ALICE) == []


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("sqlite:////tmp/x.db", "sqlite"),
    ],
)
def test_postgresql_urls_mean_psycopg3(given: str, driver: str) -> None:
    assert database_url(given).drivername == driver


def test_schema_error_is_reported_by_serve(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`secmail serve` on a database without the schema says what to run
    and exits non-zero, before listening."""
    if db_url.startswith("sqlite"):
        pytest.skip("the SQLite database upgrades itself at start")
    from secmail.service.server import ServerConfig, serve

    key = tmp_path / "master.key"
    key.write_bytes(bytes(range(32)))
    key.chmod(0o600)
    errors: list[str] = []
    config = ServerConfig(
        address="127.0.0.1:0", data_dir=tmp_path / "data", database_url=db_url, master_key_file=key
    )
    assert serve(config, err=errors.append) == 1
    assert any("no secmail schema" in e and "secmail db upgrade" in e for e in errors), errors


def test_db_upgrade_command(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from secmail.cli import main

    # The plain postgresql:// form an operator types is accepted as is.
    url = db_url.replace("postgresql+psycopg://", "postgresql://")
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert capsys.readouterr().out == f"database schema upgraded from empty to revision {head_revision()}\n"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert capsys.readouterr().out == f"database schema already at revision {head_revision()}\n"


def test_db_upgrade_command_on_the_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from secmail.cli import main

    assert main(["db", "upgrade", "--data-dir", str(tmp_path / "state")]) == 0
    assert (tmp_path / "state" / "secmail.db").is_file()
    assert "upgraded from empty" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one database or the other, not both
        main(["db", "upgrade", "--data-dir", str(tmp_path), "--database-url", "sqlite://"])


def test_serve_refuses_an_unknown_revision(tmp_path: Path, sealer: Sealer) -> None:
    """Even the self-upgrading SQLite default: a newer secmail's schema is
    never touched."""
    from secmail.service.server import ServerConfig, serve

    data_dir = tmp_path / "data"
    with SQLKeyStore(None, sealer, data_dir=data_dir) as store, store._engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    errors: list[str] = []
    assert serve(ServerConfig(address="127.0.0.1:0", data_dir=data_dir), err=errors.append) == 1
    assert any("revision 0099, which this secmail does not know" in e for e in errors), errors
