from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pgp_support import GnuPG, KeyPair, flip_byte

from secmail.errors import InvalidKeyError, WrongPassphraseError
from secmail.pgp import _backend
from secmail.pgp import packets as pk
from secmail.pgp.keys import (
    is_certified_by,
    load_cert,
    parse_openpgp_keys,
    parse_openpgp_trust,
    usable_encryption_cert,
)
from secmail.verdict import Scheme


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize(
    ("fixture", "algorithm"),
    [
        ("alice", "ed25519"),
        ("carol_v6", "ed25519"),
        ("dave_p256", "ecdsa-p256"),
        ("erin_448", "ed448"),
        ("bob_rsa", "rsa-3072"),
        ("gpg_ed", "ed25519"),
    ],
)
def test_parse_secret_keys(fixture: str, algorithm: str, request: pytest.FixtureRequest) -> None:
    pair: KeyPair = request.getfixturevalue(fixture)
    (parsed,) = parse_openpgp_keys(pair.tsk, None)
    assert parsed.scheme is Scheme.OPENPGP
    assert parsed.algorithm == algorithm
    assert parsed.key_id == pair.fingerprint and parsed.key_id == parsed.key_id.lower()
    assert parsed.addresses == (pair.address,)  # domain lower-cased
    assert parsed.usable_for_encryption and parsed.usable_for_signing
    assert parsed.problems == ()
    assert parsed.private_data is not None
    # public_data is a public-only certificate
    tags = {p.tag for p in pk.read_packets(parsed.public_data)}
    assert pk.TAG_SECRET_KEY not in tags and pk.TAG_SECRET_SUBKEY not in tags
    assert parsed.not_before is not None and parsed.not_before <= _now()
    assert "private" not in repr(parsed).replace("has_private_key", "")


def test_parse_certificate_armored_and_binary(alice: KeyPair) -> None:
    armored = _backend.armor(alice.cert, "public-key")
    for data in (alice.cert, armored):
        (parsed,) = parse_openpgp_keys(data, None)
        assert parsed.private_data is None
        assert parsed.usable_for_encryption and not parsed.usable_for_signing


def test_keyring_with_two_certs(alice: KeyPair, bob_rsa: KeyPair) -> None:
    parsed = parse_openpgp_keys(alice.cert + bob_rsa.cert, None)
    assert [p.key_id for p in parsed] == [alice.fingerprint, bob_rsa.fingerprint]


@pytest.fixture(scope="module")
def protected(gpg: GnuPG) -> tuple[bytes, str]:
    """An RSA-2048 TSK exported by GnuPG under the passphrase "s3cret"."""
    before = set(gpg.fingerprints())
    gpg.run(
        "--quick-gen-key",
        "Paula <paula@example.org>",
        "rsa2048",
        "sign,cert",
        "never",
        passphrase="s3cret",
    )
    (fpr,) = set(gpg.fingerprints()) - before
    return gpg.run("--export-secret-keys", fpr, passphrase="s3cret"), fpr.lower()


def test_passphrase_protected_key_is_unprotected(protected: tuple[bytes, str]) -> None:
    data, fpr = protected
    # GnuPG exports it protected (S2K usage 254, iterated+salted, AES).
    first = pk.parse_key(pk.read_packets(data)[0])
    assert first.secret_area is not None and first.secret_area[0] == 254
    (parsed,) = parse_openpgp_keys(data, "s3cret")
    assert parsed.key_id == fpr
    assert parsed.private_data is not None
    key = pk.parse_key(pk.read_packets(parsed.private_data)[0])
    assert key.secret_area is not None and key.secret_area[0] == 0
    assert parsed.usable_for_signing


def test_wrong_or_missing_passphrase(protected: tuple[bytes, str]) -> None:
    data, _ = protected
    with pytest.raises(WrongPassphraseError) as exc:
        parse_openpgp_keys(data, "wrong")
    assert "wrong" not in str(exc.value).split("passphrase")[-1]
    with pytest.raises(WrongPassphraseError):
        parse_openpgp_keys(data, None)


@pytest.mark.parametrize("garbage", [b"", b"hello", b"\x99\x00\x05abc", b"-----BEGIN PGP x"])
def test_garbage_is_invalid_key(garbage: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        parse_openpgp_keys(garbage, None)


def test_revoked_certificate(alice: KeyPair) -> None:
    revoked = _backend.revoke_cert(alice.tsk)
    (parsed,) = parse_openpgp_keys(revoked, None)
    assert "certificate revoked" in parsed.problems
    assert not parsed.usable_for_encryption
    assert not usable_encryption_cert(revoked, _now())
    assert usable_encryption_cert(alice.cert, _now())


def test_expiry_judged_at_the_given_time() -> None:
    tsk = _backend.generate_tsk(["Exp <exp@example.org>"], validity_seconds=3600)
    cert = _backend.public_cert(tsk)
    assert usable_encryption_cert(cert, _now())
    later = _now() + timedelta(hours=2)
    assert not usable_encryption_cert(cert, later)
    info = load_cert(cert, later)
    assert info.expired and any("expired" in p for p in info.problems)


def test_revoked_user_id_gives_no_address() -> None:
    tsk = _backend.generate_tsk(["A <a@example.org>", "B <b@example.org>"])
    cert = _backend.revoke_user_id(tsk, 1)
    (parsed,) = parse_openpgp_keys(cert, None)
    assert parsed.addresses == ("a@example.org",)
    assert any("revoked" in p for p in parsed.problems)


def test_revoked_and_expired_subkeys_are_reported_and_unused(gpg: GnuPG) -> None:
    fpr = gpg.gen_key("Sam <sam@example.org>", "ed25519", "cv25519")
    # A second encryption subkey expiring in a day, then revoke the first.
    gpg.run("--quick-add-key", fpr, "cv25519", "encr", "1d")
    gpg.run("--command-fd", "0", "--edit-key", fpr, input=b"key 1\nrevkey\ny\n0\n\ny\nsave\n")
    cert = gpg.export(fpr)
    info = load_cert(cert, _now())
    revoked = [k for k in info.subkeys if k.revoked]
    assert len(revoked) == 1 and any("revoked" in p for p in revoked[0].problems)
    assert [k for k in info.encryption_keys()] == [
        k for k in info.subkeys if not k.revoked and k.flags & pk.KF_ENCRYPT
    ]
    assert usable_encryption_cert(cert, _now())
    # Two days later the only unrevoked encryption subkey has expired.
    later = load_cert(cert, _now() + timedelta(days=2))
    assert later.encryption_keys() == []
    assert any("expired" in p for p in later.problems)
    assert not usable_encryption_cert(cert, _now() + timedelta(days=2))


def test_forged_subkey_binding_is_never_used(alice: KeyPair) -> None:
    packets = pk.read_packets(alice.cert)
    # Corrupt the last signature (the encryption subkey's binding).
    idx = max(i for i, p in enumerate(packets) if p.tag == pk.TAG_SIGNATURE)
    sig = packets[idx]
    forged_raw = flip_byte(sig.raw, len(sig.raw) - 5)
    forged = b"".join(p.raw for p in packets[:idx]) + forged_raw
    info = load_cert(forged, _now())
    assert info.encryption_keys() == []
    assert any("no valid binding" in p for p in info.problems)
    assert not usable_encryption_cert(forged, _now())


@pytest.fixture(scope="module")
def certified(gpg: GnuPG, alice: KeyPair) -> tuple[bytes, bytes, bytes]:
    """(alice certified by the CA, CA cert, an unrelated key's cert)."""
    ca = gpg.gen_key("Académie CA <pgp-ca@ac-example.fr>", "ed25519", "cv25519")
    other = gpg.gen_key("Other <other@example.org>", "ed25519", "cv25519")
    gpg.run("--import", input=alice.cert)
    gpg.run("-u", ca, "--quick-sign-key", alice.fingerprint.upper())
    return gpg.export(alice.fingerprint.upper()), gpg.export(ca), gpg.export(other)


def test_is_certified_by(certified: tuple[bytes, bytes, bytes], alice: KeyPair) -> None:
    cert, ca, other = certified
    assert is_certified_by(cert, [ca], _now())
    assert not is_certified_by(cert, [other], _now())
    assert not is_certified_by(alice.cert, [ca], _now())  # without the certification
    # The certification is verified: a corrupted one does not count.
    packets = pk.read_packets(cert)
    uid_at = next(i for i, p in enumerate(packets) if p.tag == pk.TAG_USER_ID)
    third_party = [
        i
        for i, p in enumerate(packets)
        if i > uid_at
        and p.tag == pk.TAG_SIGNATURE
        and pk.parse_signature(p).issuer_fingerprint not in (alice.fingerprint,)
        and pk.parse_signature(p).sig_type in pk.CERTIFICATION_TYPES
    ]
    assert third_party
    i = third_party[0]
    broken = (
        b"".join(p.raw for p in packets[:i])
        + flip_byte(packets[i].raw, len(packets[i].raw) - 4)
        + b"".join(p.raw for p in packets[i + 1 :])
    )
    assert not is_certified_by(broken, [ca], _now())


def test_parse_openpgp_trust(certified: tuple[bytes, bytes, bytes]) -> None:
    _, ca, _ = certified
    (entry,) = parse_openpgp_trust(ca, "academie")
    assert entry.scheme is Scheme.OPENPGP and entry.is_anchor and entry.bundle == "academie"
    assert entry.subject == "Académie CA <pgp-ca@ac-example.fr>"
    assert load_cert(entry.data, _now()).fingerprint == entry.anchor_id


def test_is_certified_by_one_address(gpg: GnuPG) -> None:
    """A certification vouches for one User ID; a second User ID that the
    holder added counts for nothing."""
    ca = gpg.gen_key("CA deux <pgp-ca2@ac-example.fr>", "ed25519", "cv25519")
    two = gpg.gen_key("Carol <carol@ac-example.fr>", "ed25519", "cv25519")
    gpg.run("--quick-add-uid", two, "Recteur <recteur@ac-example.fr>")
    gpg.run("-u", ca, "--quick-sign-key", two, "Carol <carol@ac-example.fr>")
    cert, anchor = gpg.export(two), gpg.export(ca)
    assert sorted(load_cert(cert, _now()).addresses()) == ["carol@ac-example.fr", "recteur@ac-example.fr"]
    assert is_certified_by(cert, [anchor], _now())
    assert is_certified_by(cert, [anchor], _now(), address="carol@ac-example.fr")
    assert is_certified_by(cert, [anchor], _now(), address="carol@AC-Example.fr")
    assert not is_certified_by(cert, [anchor], _now(), address="recteur@ac-example.fr")
    assert not is_certified_by(cert, [anchor], _now(), address="Carol@ac-example.fr")  # local part exact
