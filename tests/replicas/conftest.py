"""Fixtures for the replica tests: a fresh PostgreSQL database per module
(CREATE DATABASE secmail_test_<random>, dropped afterwards), migrated with
the real `secmail db upgrade`, and real `secmail serve` processes on it.

PostgreSQL is the server on 127.0.0.1:5432 (user postgres, trust auth), as
for the store tests; without it every test here is skipped.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from replica_support import Database, Replica, free_port, wait_serving

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


def _postgres_problem() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        psycopg.connect(PG_ADMIN_DSN).close()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL server answers at 127.0.0.1:5432 ({first})"
    return None


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    problem = _postgres_problem()
    if problem:
        pytest.skip(f"replica tests need PostgreSQL: {problem}")
    import psycopg

    db = Database(f"secmail_test_{secrets.token_hex(6)}")
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db.name}"')
    try:
        upgrade = subprocess.run(
            [sys.executable, "-m", "secmail.cli", "db", "upgrade", "--database-url", db.url],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=120,
        )
        assert upgrade.returncode == 0, upgrade.stderr
        assert "upgraded from empty to revision" in upgrade.stdout
        yield db
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def master_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("master") / "master.key"
    path.write_bytes(secrets.token_bytes(32))
    path.chmod(0o600)
    return path


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECMAIL_")}
    env.update(extra or {})
    return env


@pytest.fixture(scope="module")
def start_replica(
    database: Database, master_key_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Replica]]:
    """`python -m secmail.cli serve --database-url postgresql://... --workers 1`
    processes sharing the module's database and master key."""
    started: list[Replica] = []
    logs = tmp_path_factory.mktemp("replicas")

    def start(env: dict[str, str] | None = None) -> Replica:
        address = f"127.0.0.1:{free_port()}"
        data_dir = logs / f"data-{len(started)}"
        log = logs / f"replica-{len(started)}.log"
        argv = [
            sys.executable, "-m", "secmail.cli", "serve", "--address", address,
            "--database-url", database.url, "--master-key-file", str(master_key_file),
            "--data-dir", str(data_dir), "--workers", "1", "--no-network-revocation",
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=_clean_env(env), stdout=out, stderr=subprocess.STDOUT)
        replica = Replica(proc, address, log)
        started.append(replica)
        wait_serving(replica)
        return replica

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.terminate()
    for r in started:
        try:
            r.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
