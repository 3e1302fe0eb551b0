"""Master key loading and generation (masterkey.py)."""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from secmail.keystore.masterkey import MasterKeyError, load_or_create_master_key, master_key_from_env
from secmail.keystore.seal import master_key_id


def test_creates_a_private_32_byte_key_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sub" / "master.key"
    with caplog.at_level(logging.WARNING, logger="secmail.keystore.masterkey"):
        key = load_or_create_master_key(path)
    assert len(key) == 32
    assert path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "back it up" in message and master_key_id(key) in message
    assert key.hex() not in message


def test_loads_existing_key_without_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "master.key"
    first = load_or_create_master_key(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="secmail.keystore.masterkey"):
        assert load_or_create_master_key(path) == first
    assert not caplog.records


def test_umask_does_not_matter(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_master_key(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_refuses_group_or_other_permissions(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    load_or_create_master_key(path)
    path.chmod(mode)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        load_or_create_master_key(path)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 100])
def test_refuses_wrong_length(tmp_path: Path, length: int) -> None:
    path = tmp_path / "master.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x" * length)
    os.close(fd)
    with pytest.raises(MasterKeyError, match="exactly 32"):
        load_or_create_master_key(path)
    assert path.read_bytes() == b"x" * length  # never overwritten


def test_refuses_symlink_and_directory(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    load_or_create_master_key(real)
    link = tmp_path / "link.key"
    link.symlink_to(real)
    with pytest.raises(MasterKeyError, match="symbolic link"):
        load_or_create_master_key(link)
    (tmp_path / "dir.key").mkdir(mode=0o700)
    with pytest.raises(MasterKeyError):
        load_or_create_master_key(tmp_path / "dir.key")


def test_concurrent_first_start_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    results: list[bytes] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        try:
            results.append(load_or_create_master_key(path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 8 and len(set(results)) == 1
    assert path.read_bytes() == results[0]
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]  # no temporary left


# --- environment ----------------------------------------------------------------

KEY = bytes(range(32))


@pytest.mark.parametrize(
    "value",
    [
        KEY.hex(),
        KEY.hex().upper(),
        base64.b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode().rstrip("="),
        f"  {KEY.hex()}\n",
    ],
    ids=["hex", "HEX", "base64", "base64url-nopad", "whitespace"],
)
def test_env_formats(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECMAIL_MASTER_KEY", value)
    assert master_key_from_env() == KEY


def test_env_unset_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECMAIL_MASTER_KEY", raising=False)
    assert master_key_from_env() is None


def test_env_other_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", KEY.hex())
    assert master_key_from_env("MY_KEY") == KEY


@pytest.mark.parametrize(
    "value",
    [
        "",
        "zz" * 32,
        KEY.hex()[:-2],
        base64.b64encode(KEY[:16]).decode(),
        base64.b64encode(KEY + b"!").decode(),
        "%%%",
    ],
)
def test_env_bad_values(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECMAIL_MASTER_KEY", value)
    with pytest.raises(MasterKeyError) as info:
        master_key_from_env()
    if value:
        assert value not in info.value.message
