"""A master key held by a PKCS#11 token (SoftHSM2): it never leaves the
token, the token's wraps are standard RFC 3394, the sealed format is the
file key's, a file key can be rotated onto the token, and `secmail serve
--master-key-pkcs11` signs with keys sealed under it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from keystore_support import ServerProcess, SoftHSM
from sqlalchemy import select
from testpki import end_entity, make_pki, message

from secmail.keystore.pkcs11 import PKCS11KEK, PKCS11Config, TokenError, generate_master_key
from secmail.keystore.seal import LocalKEK, Sealer, UnsealError
from secmail.keystore.sql import SQLKeyStore, _SecretRow
from secmail.service.app import Secmail
from secmail.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    message_security_pb2,
    message_security_pb2_grpc,
    trust_pb2,
    trust_pb2_grpc,
)
from secmail.verdict import Banner, Scheme

ALICE = "alice@ac-besancon.fr"
BOB = "bob@ac-besancon.fr"


def _session(softhsm: SoftHSM, *, rw: bool = False):  # type: ignore[no-untyped-def]
    import pkcs11

    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token)
    try:
        return token.open(user_pin=softhsm.pin, rw=rw)
    except pkcs11.UserAlreadyLoggedIn:  # another session of this process logged in
        return token.open(rw=rw)


def test_generated_key_cannot_leave_the_token(softhsm: SoftHSM, token_key: PKCS11Config) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    with _session(softhsm) as session:
        key = session.get_key(
            object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=token_key.key_label
        )
        assert key[Attribute.VALUE_LEN] == 32
        assert key[Attribute.TOKEN] and key[Attribute.PRIVATE] and key[Attribute.SENSITIVE]
        assert not key[Attribute.EXTRACTABLE]
        assert key[Attribute.WRAP] and key[Attribute.UNWRAP]
        assert not key[Attribute.ENCRYPT] and not key[Attribute.DECRYPT]
        with pytest.raises(pkcs11.AttributeSensitive):
            key[Attribute.VALUE]


def test_token_wrap_is_rfc3394(softhsm: SoftHSM) -> None:
    """Interop: a key of known value on the token wraps exactly as
    cryptography's RFC 3394 implementation does, and opens those wraps."""
    from pkcs11 import Attribute, KeyType, ObjectClass

    label = f"known-{uuid.uuid4().hex[:8]}"
    known = secrets.token_bytes(32)
    with _session(softhsm, rw=True) as session:
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: known,
                Attribute.LABEL: label,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.WRAP: True,
                Attribute.UNWRAP: True,
            }
        )
    kek = PKCS11KEK(softhsm.config(label))
    try:
        data_key = secrets.token_bytes(32)
        assert kek.wrap(data_key) == aes_key_wrap(known, data_key)
        assert kek.unwrap(aes_key_wrap(known, data_key)) == data_key
    finally:
        kek.close()


def test_wrap_unwrap_and_key_id(softhsm: SoftHSM, token_key: PKCS11Config) -> None:
    kek = PKCS11KEK(token_key)
    again = PKCS11KEK(token_key)
    other_config = softhsm.config(f"other-{uuid.uuid4().hex[:8]}")
    generate_master_key(other_config)
    other = PKCS11KEK(other_config)
    try:
        data_key = secrets.token_bytes(32)
        wrapped = kek.wrap(data_key)
        assert len(wrapped) == 40 and data_key not in wrapped
        assert kek.unwrap(wrapped) == data_key == again.unwrap(wrapped)
        # The id names the key material: stable across sessions, distinct per key.
        assert kek.id == again.id != other.id
        assert len(kek.id) == 16 and token_key.key_label not in kek.id
        with pytest.raises(UnsealError, match="wrong master key"):
            other.unwrap(wrapped)
        with pytest.raises(UnsealError):
            kek.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]))
        assert "4271" not in repr(kek) and "4271" not in repr(token_key)
    finally:
        for k in (kek, again, other):
            k.close()


def test_sealer_with_a_token_key(token_key: PKCS11Config) -> None:
    kek = PKCS11KEK(token_key)
    try:
        sealer = Sealer(kek)
        blob = sealer.seal(b"pkcs8 bytes", aad=b"alice|k1")
        assert blob.master_key_id == kek.id and len(blob.wrapped_key) == 40
        assert sealer.unseal(blob, aad=b"alice|k1") == b"pkcs8 bytes"
        with pytest.raises(UnsealError, match="not loaded"):
            Sealer(secrets.token_bytes(32)).unseal(blob, aad=b"alice|k1")
    finally:
        kek.close()


def test_token_errors_are_clear_and_hold_no_pin(
    softhsm: SoftHSM, token_key: PKCS11Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TokenError, match="already has a key labelled"):
        generate_master_key(token_key)
    with pytest.raises(TokenError, match=r"no AES key labelled 'missing'.*pkcs11-keygen"):
        PKCS11KEK(softhsm.config("missing"))
    with pytest.raises(TokenError, match="no PKCS#11 token labelled 'nope'"):
        PKCS11KEK(PKCS11Config(softhsm.module, "nope", pin=softhsm.pin))
    # In a fresh process: PKCS#11 login belongs to the process, so one
    # already logged in here (another test's key) would not ask again.
    probe = (
        "from secmail.keystore.pkcs11 import PKCS11KEK, PKCS11Config\n"
        f"PKCS11KEK(PKCS11Config({softhsm.module!r}, {softhsm.token!r}, {token_key.key_label!r}))"
    )
    wrong = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **softhsm.env(), "SECMAIL_PKCS11_PIN": "0000-wrong"},
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0
    assert "TokenError: the PIN in $SECMAIL_PKCS11_PIN was refused by token 'secmail-test'" in wrong.stderr
    assert "0000-wrong" not in wrong.stderr
    monkeypatch.delenv("SECMAIL_PKCS11_PIN", raising=False)
    with pytest.raises(TokenError, match="SECMAIL_PKCS11_PIN"):
        PKCS11KEK(PKCS11Config(softhsm.module, softhsm.token, token_key.key_label))
    monkeypatch.setenv("SECMAIL_PKCS11_PIN", softhsm.pin)
    PKCS11KEK(PKCS11Config(softhsm.module, softhsm.token, token_key.key_label)).close()
    with pytest.raises(TokenError, match="cannot load"):
        PKCS11KEK(PKCS11Config("/nonexistent/libpkcs11.so", softhsm.token, pin=softhsm.pin))


def test_rotation_from_a_file_key_to_the_token(
    tmp_path: Path, softhsm: SoftHSM, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from secmail.cli import main

    file_key = tmp_path / "master.key"
    file_key.write_bytes(secrets.token_bytes(32))
    file_key.chmod(0o600)
    label = f"rotated-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SECMAIL_PKCS11_PIN", softhsm.pin)
    pkcs11_args = ["--pkcs11-module", softhsm.module, "--pkcs11-token", softhsm.token]
    assert main(["admin", "pkcs11-keygen", *pkcs11_args, "--pkcs11-key-label", label]) == 0

    pki = make_pki()
    alice, bob = end_entity(pki.intermediate, ALICE), end_entity(pki.intermediate, BOB)
    with SQLKeyStore(db_url, Sealer(file_key.read_bytes()), auto_upgrade=True) as store:
        app = Secmail(store)
        app.import_trust("ac-besancon", pki.bundle_pem)
        app.import_key(ALICE, alice.p12(b"pw"), "pw")
        app.import_key(BOB, bob.p12(b"pw"), "pw")

    assert main([
        "admin", "rotate-master-key", "--new-pkcs11-key-label", label, *pkcs11_args,
        "--old-key-file", str(file_key), "--database-url", db_url,
    ]) == 0  # fmt: skip

    kek = PKCS11KEK(softhsm.config(label))
    try:
        with SQLKeyStore(db_url, Sealer(kek), auto_upgrade=False) as store:
            with store._engine.connect() as conn:
                ids = set(conn.execute(select(_SecretRow.master_key_id)).scalars())
            assert ids == {kek.id}
            app = Secmail(store)
            signed = app.sign(ALICE, message(), Scheme.SMIME, opaque=False, header_protection=False)
            assert app.verify(BOB, signed, None).verdict.banner is Banner.GREEN
            encrypted = app.encrypt(
                ALICE, message(), Scheme.SMIME, [BOB], sign=False, header_protection=False
            )
            opened = app.decrypt(BOB, encrypted, None)
            assert opened.verdict.lock and b"conseil de classe" in opened.display_message
    finally:
        kek.close()
    with SQLKeyStore(db_url, Sealer(file_key.read_bytes()), auto_upgrade=False) as store:
        with pytest.raises(UnsealError):
            store.private_keys(ALICE, Scheme.SMIME)
        assert LocalKEK(file_key.read_bytes()).id not in store.master_key_ids()


def test_serve_with_the_master_key_on_the_token(
    tmp_path: Path, softhsm: SoftHSM, token_key: PKCS11Config, run_server: Callable[..., ServerProcess]
) -> None:
    """End to end: `secmail serve --master-key-pkcs11`, PIN from the
    environment; a .p12 imported through it is sealed under the token key
    and signs. No master key file is created."""
    data_dir = tmp_path / "data"
    server = run_server(
        "--data-dir", str(data_dir), "--master-key-pkcs11", "--pkcs11-module", softhsm.module,
        "--pkcs11-token", softhsm.token, "--pkcs11-key-label", token_key.key_label,
        env=softhsm.env(),
    )  # fmt: skip
    assert softhsm.pin not in " ".join(server.proc.args)  # type: ignore[arg-type]
    pki = make_pki()
    alice = end_entity(pki.intermediate, ALICE)
    with grpc.insecure_channel(server.address) as channel:
        trust_pb2_grpc.TrustServiceStub(channel).ImportTrustBundle(
            trust_pb2.ImportTrustBundleRequest(name="ac-besancon", data=pki.bundle_pem)
        )
        keys_pb2_grpc.KeyServiceStub(channel).ImportKey(
            keys_pb2.ImportKeyRequest(user=ALICE, data=alice.p12(b"pw"), passphrase="pw")
        )
        messages = message_security_pb2_grpc.MessageSecurityStub(channel)
        signed = messages.Sign(message_security_pb2.SignRequest(user=ALICE, message=message())).message
        verdict = messages.Verify(message_security_pb2.VerifyRequest(user=BOB, message=signed)).verdict
    from secmail.v1 import verdict_pb2

    assert verdict.banner == verdict_pb2.BANNER_GREEN
    assert not (data_dir / "master.key").exists()
    kek = PKCS11KEK(token_key)
    try:
        with SQLKeyStore(None, Sealer(kek), data_dir=data_dir) as store:
            assert store.master_key_ids() == {kek.id: 1}
    finally:
        kek.close()


def test_serve_refuses_a_token_without_the_key(
    tmp_path: Path, softhsm: SoftHSM, run_server: Callable[..., ServerProcess]
) -> None:
    server = run_server(
        "--data-dir", str(tmp_path / "data"), "--master-key-pkcs11", "--pkcs11-module", softhsm.module,
        "--pkcs11-token", softhsm.token, "--pkcs11-key-label", "absent",
        env=softhsm.env(), wait=False,
    )  # fmt: skip
    assert server.proc.wait(timeout=30) != 0
    out = server.output()
    assert "no AES key labelled 'absent'" in out and "Traceback" not in out
    assert softhsm.pin not in out


def test_pin_comes_from_the_environment_only() -> None:
    from secmail.cli import build_parser

    serve = build_parser().parse_args(["serve", "--master-key-pkcs11"])
    assert serve.master_key_pkcs11
    assert not any("pin" in name for name in vars(serve))  # $SECMAIL_PKCS11_PIN, never a flag
