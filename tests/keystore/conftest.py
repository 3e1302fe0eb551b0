"""Fixtures for the store tests: one database per test, SQLite or PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, user postgres,
database ``test``); each test gets its own schema, dropped afterwards, so
parallel runs do not meet. Without a server the postgres cases skip.

Also: a SoftHSM2 token per test process (``softhsm``, ``token_key``;
skipped without softhsm2 or python-pkcs11), and real `secmail serve`
subprocesses (``run_server``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from keystore_support import Clock, ServerProcess, SoftHSM, free_port, wait_serving
from testpki import PKI, Identity, end_entity, make_pki

import secmail.service.app as app_module
from secmail.keystore.pkcs11 import PKCS11Config, generate_master_key
from secmail.keystore.seal import Sealer
from secmail.keystore.sql import SQLKeyStore

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

_pg_problem: list[str] = []


def _postgres_unavailable() -> str | None:
    """Why the PostgreSQL cases cannot run, or None. Asked once per process."""
    if not _pg_problem:
        try:
            import psycopg
        except ImportError:
            _pg_problem.append("psycopg is not installed (pip install 'psycopg[binary]')")
        else:
            try:
                psycopg.connect(PG_DSN).close()
                _pg_problem.append("")
            except psycopg.Error as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                _pg_problem.append(f"no PostgreSQL server answers at 127.0.0.1:5432 ({reason})")
    return _pg_problem[0] or None


@pytest.fixture(scope="module")
def pki() -> PKI:
    return make_pki()


@pytest.fixture(scope="module")
def alice(pki: PKI) -> Identity:
    """alice@ac-besancon.fr's certificate and key, issued by ``pki``."""
    return end_entity(pki.intermediate, "alice@ac-besancon.fr")


@pytest.fixture
def master_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def sealer(master_key: bytes) -> Sealer:
    return Sealer(master_key)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'secmail.db'}"
        return
    problem = _postgres_unavailable()
    if problem:
        pytest.skip(f"PostgreSQL case skipped: {problem}")
    import psycopg

    schema = f"secmail_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        # libpq's "options" sets search_path for every pooled connection.
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def make_store(db_url: str, sealer: Sealer) -> Iterator[Callable[..., SQLKeyStore]]:
    """Opens stores on the test's database; all are closed before the
    database is dropped."""
    opened: list[SQLKeyStore] = []

    def make(
        *, url: str | None = None, with_sealer: Sealer | None = None, auto_upgrade: bool = True
    ) -> SQLKeyStore:
        store = SQLKeyStore(url or db_url, with_sealer or sealer, auto_upgrade=auto_upgrade)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., SQLKeyStore]) -> SQLKeyStore:
    return make_store()


# --- SoftHSM2 --------------------------------------------------------------------

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    """One token per test process: the PKCS#11 library reads SOFTHSM2_CONF
    once, when it is first initialised. Tests use distinct key labels."""
    util = shutil.which("softhsm2-util")
    if util is None or not SOFTHSM_MODULE.exists():
        pytest.skip("SoftHSM2 is not installed (Debian package softhsm2)")
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        pytest.skip("python-pkcs11 is not installed (pip install 'secmail[pkcs11]')")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    hsm = SoftHSM(module=str(SOFTHSM_MODULE), token="secmail-test", pin="4271-pin", conf=conf)
    subprocess.run(
        [util, "--init-token", "--free", "--label", hsm.token, "--pin", hsm.pin, "--so-pin", "so-5678"],
        check=True,
        capture_output=True,
    )
    try:
        yield hsm
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture
def token_key(softhsm: SoftHSM) -> PKCS11Config:
    """A fresh AES master key on the SoftHSM2 token."""
    config = softhsm.config(f"master-{uuid.uuid4().hex[:12]}")
    generate_master_key(config)
    return config


# --- `secmail serve` subprocesses ------------------------------------------------------


@pytest.fixture
def run_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Starts `python -m secmail.cli serve` processes on free loopback
    ports (one worker each); all are stopped at teardown."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> ServerProcess:
        address = f"127.0.0.1:{free_port()}"
        log = tmp_path / f"serve-{len(started)}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SECMAIL_")}
        full_env.update(env or {})
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "secmail.cli", "serve", "--address", address, "--workers", "1", *args],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(proc, address, log)
        started.append(server)
        if wait:
            wait_serving(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.terminate()
    for server in started:
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A monotonic clock the test moves by hand, for the key caches' TTLs."""
    clock = Clock()
    monkeypatch.setattr(app_module, "time", types.SimpleNamespace(monotonic=clock))
    return clock
