"""OpenPGP (PGP/MIME) end to end through the gRPC API (issue 3 acceptance).

The cast (``tests/pgp/openpgp_rpc_support.py``): alice (Ed25519/Cv25519),
bob (RSA-3072, Sequoia-made: v6 PKESKs to it are opened by the OpenSSL
RSA path), carol (her User ID certified by the académie's OpenPGP CA key),
mallory (never imported). In ``world`` each imported their own secret key,
bob imported alice's certificate and alice bob's (their address books);
nobody imported carol's, and the CA key is not a trust anchor there.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from openpgp_rpc_support import (
    ALICE,
    BOB,
    CAROL,
    DOMAIN,
    PASSPHRASE,
    Cast,
    Person,
    cast,
    content_type_of,
    expired_cert,
    mail,
    micalg_of,
    multipart_parts,
    outer_headers,
    part_body,
    pgp_multipart_encrypted,
    root_entity,
    split_message,
)
from pgp_support import GnuPG, flip_byte
from service_support import Client, error_reason, sign, start, verify

from secmail.message import PGPSigningKey, sign_message
from secmail.pgp import _backend
from secmail.pgp import packets as pk
from secmail.pgp.encrypt import encrypt as pgp_encrypt
from secmail.v1 import keys_pb2, message_security_pb2, trust_pb2, verdict_pb2

V = verdict_pb2
M = message_security_pb2
OPENPGP = V.SCHEME_OPENPGP
BODY = b"Bonjour,\r\n\r\nLe conseil de classe est jeudi.\r\n"


@pytest.fixture(scope="module")
def people() -> Cast:
    return cast()


def _import(c: Client, user: str, data: bytes, passphrase: str = "") -> list[keys_pb2.KeyInfo]:
    resp = c.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=data, passphrase=passphrase))
    return list(resp.keys)


def _populate(c: Client, people: Cast) -> None:
    _import(c, ALICE, people.alice.armored_tsk)
    _import(c, BOB, people.bob_protected, PASSPHRASE)
    _import(c, CAROL, people.carol.tsk)
    _import(c, BOB, people.alice.armored_cert)
    _import(c, ALICE, people.bob.cert)


@pytest.fixture(scope="module")
def world(people: Cast, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    server, c = start(tmp_path_factory.mktemp("openpgp") / "data")
    _populate(c, people)
    yield c
    c.channel.close()
    server.stop(None)


@pytest.fixture
def fresh(people: Cast, tmp_path: Path) -> Iterator[Client]:
    """A world of its own, for tests that change what is trusted."""
    server, c = start(tmp_path / "data")
    _populate(c, people)
    yield c
    c.channel.close()
    server.stop(None)


def _encrypt(c: Client, user: str, msg: bytes, *, sign: bool, recipients: tuple[str, ...] = ()) -> bytes:
    req = M.EncryptRequest(user=user, message=msg, scheme=OPENPGP, sign=sign, recipients=list(recipients))
    return c.messages.Encrypt(req).message


def _decrypt(c: Client, user: str, msg: bytes) -> M.DecryptResponse:
    return c.messages.Decrypt(M.DecryptRequest(user=user, message=msg))


def _forge_signed(signer: Person, msg: bytes) -> bytes:
    """Signed by ``signer`` whatever the From says (the service refuses to)."""
    key = PGPSigningKey(tsk=signer.tsk, addresses=(ALICE, BOB, CAROL, f"recteur@{DOMAIN}", signer.address))
    return sign_message(msg, key, at=datetime.now(UTC))


# --- keys -------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_import_tsks_and_certificates(client: Client, people: Cast, who: str) -> None:
    p: Person = getattr(people, who)
    protected = people.alice_protected if who == "alice" else people.bob_protected
    algorithm = "ed25519" if who == "alice" else "rsa-3072"
    forms = {
        "armored TSK": (p.armored_tsk, ""),
        "binary TSK": (p.tsk, ""),
        "protected TSK": (protected, PASSPHRASE),
        "protected TSK, other armor": (
            pk.to_binary(protected) if pk.is_armored(protected) else _backend.armor(protected, "secret-key"),
            PASSPHRASE,
        ),
        "armored certificate": (p.armored_cert, ""),
        "binary certificate": (p.cert, ""),
    }
    for form, (data, passphrase) in forms.items():
        user = f"{who}-{form.replace(' ', '-').replace(',', '')}@{DOMAIN}"
        (info,) = _import(client, user, data, passphrase)
        secret = "TSK" in form
        assert info.scheme == OPENPGP, form
        assert info.key_id == p.fingerprint, form
        assert list(info.addresses) == [p.address], form
        assert info.has_private_key == secret, form
        assert info.usable_for_signing == secret, form
        assert info.usable_for_encryption, form
        assert info.algorithm == algorithm, form
        assert p.address in info.subject and not info.issuer, form
        assert not info.problems, (form, list(info.problems))
        assert not info.HasField("not_after"), form
        listed = client.keys.ListKeys(keys_pb2.ListKeysRequest(user=user)).keys
        assert [k.key_id for k in listed] == [p.fingerprint], form
    for bad in ("", "wrong passphrase"):
        with pytest.raises(grpc.RpcError) as err:
            _import(client, f"{who}@{DOMAIN}", protected, bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(err.value) == "WRONG_PASSPHRASE"
        assert PASSPHRASE not in (err.value.details() or "")


def test_revoked_and_expired_keys_have_problems(client: Client, people: Cast) -> None:
    (revoked,) = _import(client, ALICE, _backend.revoke_cert(people.mallory.tsk))
    assert revoked.key_id == people.mallory.fingerprint
    assert any("revoked" in p for p in revoked.problems), list(revoked.problems)
    assert not revoked.usable_for_encryption and not revoked.has_private_key
    (expired,) = _import(client, ALICE, expired_cert(f"Ancien <ancien@{DOMAIN}>"))
    assert any("expired" in p for p in expired.problems), list(expired.problems)
    assert not expired.usable_for_encryption
    assert expired.not_after.ToDatetime(tzinfo=UTC) < datetime(2022, 1, 1, tzinfo=UTC)


# --- sign and verify -----------------------------------------------------------


@pytest.mark.parametrize(("signer", "reader"), [(ALICE, BOB), (BOB, ALICE)], ids=["ed25519", "rsa"])
def test_sign_then_verify_is_green(world: Client, people: Cast, signer: str, reader: str) -> None:
    signed = sign(world, signer, mail(signer, reader), scheme=OPENPGP)
    ctype = content_type_of(signed)
    assert ctype.startswith("multipart/signed;") and 'protocol="application/pgp-signature"' in ctype
    entity, sig_part = multipart_parts(signed)
    assert b"Content-Type: application/pgp-signature" in sig_part
    assert f'micalg="{micalg_of(part_body(sig_part))}"' in ctype
    assert b"Subject: Conseil de classe" in entity  # RFC 9788 protected headers, signed
    for who in (reader, signer):  # the signer can check its Sent copy too
        resp = verify(world, who, signed)
        v = resp.verdict
        assert v.banner == V.BANNER_GREEN, list(v.reasons)
        assert v.scheme == OPENPGP and v.signature == V.SIGNATURE_STATUS_VALID
        assert v.coverage == V.COVERAGE_BODY_AND_HEADERS
        assert not v.lock and not v.reasons
        (s,) = v.signers
        key = people.alice if signer == ALICE else people.bob
        assert s.fingerprint == key.fingerprint and list(s.verified_addresses) == [signer]
        assert s.scheme == OPENPGP
        assert BODY in resp.display_message and b"Subject: Conseil de classe" in resp.display_message


def test_sender_key_seen_but_unauthenticated_is_yellow_until_vouched_for(fresh: Client, people: Cast) -> None:
    """carol's key is in the service (she imported it for her mailbox): bob
    sees the signature is hers, but nobody he relies on vouched for the key
    (see ``secmail.service.app._PGPLookup``). Either of the two ways of
    authenticating it turns the same message GREEN."""
    signed = sign(fresh, CAROL, mail(CAROL, BOB), scheme=OPENPGP)
    v = verify(fresh, BOB, signed).verdict
    assert v.banner == V.BANNER_YELLOW
    assert list(v.reasons) == [V.REASON_UNTRUSTED_CHAIN]
    (s,) = v.signers  # the mathematics hold, the key is not vouched for
    assert s.status == V.SIGNATURE_STATUS_INDETERMINATE and list(s.verified_addresses) == [CAROL]
    assert s.fingerprint == people.carol.fingerprint and list(s.reasons) == [V.REASON_UNTRUSTED_CHAIN]
    assert verify(fresh, CAROL, signed).verdict.banner == V.BANNER_GREEN  # her own key

    # 1. bob imports carol's certificate into his address book.
    (info,) = _import(fresh, BOB, people.carol.armored_cert)
    assert verify(fresh, BOB, signed).verdict.banner == V.BANNER_GREEN
    fresh.keys.DeleteKey(keys_pb2.DeleteKeyRequest(user=BOB, key_id=info.key_id))
    assert verify(fresh, BOB, signed).verdict.banner == V.BANNER_YELLOW

    # 2. A trust bundle scoped to another académie does not apply to bob...
    ca = _backend.armor(people.ca.cert, "public-key")
    fresh.trust.ImportTrustBundle(
        trust_pb2.ImportTrustBundleRequest(name="ac-dijon", data=ca, domains=["ac-dijon.fr"])
    )
    assert verify(fresh, BOB, signed).verdict.banner == V.BANNER_YELLOW
    # ...the académie's own CA key, which certified carol's User ID, does.
    resp = fresh.trust.ImportTrustBundle(trust_pb2.ImportTrustBundleRequest(name="ac-besancon", data=ca))
    assert [a.anchor_id for a in resp.anchors] == [people.ca.fingerprint]
    v = verify(fresh, BOB, signed).verdict
    assert v.banner == V.BANNER_GREEN, list(v.reasons)
    # The CA vouches for carol's key only: alice's, unimported by carol,
    # stays YELLOW for her.
    from_alice = sign(fresh, ALICE, mail(ALICE, CAROL), scheme=OPENPGP)
    assert list(verify(fresh, CAROL, from_alice).verdict.reasons) == [V.REASON_UNTRUSTED_CHAIN]


def test_anchor_vouches_for_the_certified_user_id_only(fresh: Client, people: Cast) -> None:
    """The CA certified "Claire <claire@…>"; its holder added "Recteur
    <recteur@…>" to the key and uses it from the recteur's mailbox. The
    signature is the key's, the From is one of its User IDs, but no anchor
    vouched for that one: YELLOW, not GREEN."""
    recteur = f"recteur@{DOMAIN}"
    gpg = GnuPG()
    try:
        gpg.run("--import", input=people.ca.tsk)
        fpr = gpg.gen_key(f"Claire <claire@{DOMAIN}>", "ed25519", "cv25519")
        gpg.run("--quick-add-uid", fpr, f"Recteur <{recteur}>")
        gpg.run("-u", people.ca.fingerprint.upper(), "--quick-sign-key", fpr, f"Claire <claire@{DOMAIN}>")
        tsk = gpg.export_secret(fpr)
    finally:
        gpg.close()
    (info,) = _import(fresh, recteur, tsk)
    assert sorted(info.addresses) == [f"claire@{DOMAIN}", recteur]
    ca = _backend.armor(people.ca.cert, "public-key")
    fresh.trust.ImportTrustBundle(trust_pb2.ImportTrustBundleRequest(name="ac-besancon", data=ca))
    signed = sign(fresh, recteur, mail(recteur, BOB), scheme=OPENPGP)
    v = verify(fresh, BOB, signed).verdict
    assert v.banner == V.BANNER_YELLOW
    assert list(v.reasons) == [V.REASON_UNTRUSTED_CHAIN]
    assert recteur in v.signers[0].verified_addresses


def test_unknown_signer_key_is_yellow(world: Client, people: Cast) -> None:
    signed = _forge_signed(people.mallory, mail(f"mallory@{DOMAIN}", BOB))
    v = verify(world, BOB, signed).verdict
    assert v.banner == V.BANNER_YELLOW
    assert V.REASON_SIGNER_KEY_MISSING in v.reasons
    (s,) = v.signers
    assert s.status != V.SIGNATURE_STATUS_VALID and not s.verified_addresses
    assert s.claimed_key_id  # the issuer it claims, for the user to look up


def test_from_not_a_user_id_of_the_key_is_yellow(world: Client, people: Cast) -> None:
    signed = _forge_signed(people.alice, mail(f"recteur@{DOMAIN}", BOB))
    v = verify(world, BOB, signed).verdict
    assert v.banner == V.BANNER_YELLOW
    assert V.REASON_SENDER_MISMATCH in v.reasons
    assert [list(s.verified_addresses) for s in v.signers] == [[ALICE]]
    # And the service itself refuses to make such a message.
    with pytest.raises(grpc.RpcError) as err:
        sign(world, ALICE, mail(f"recteur@{DOMAIN}", BOB), scheme=OPENPGP)
    assert error_reason(err.value) == "SENDER_MISMATCH"


@pytest.mark.parametrize("where", ["body", "protected-subject", "signature"])
def test_tampering_is_red(world: Client, where: str) -> None:
    signed = sign(world, ALICE, mail(ALICE, BOB), scheme=OPENPGP)
    if where == "body":
        tampered = signed.replace(b"jeudi", b"lundi")
    elif where == "protected-subject":
        head, body = split_message(signed)  # only the signed copy, not the outer field
        assert body.count(b"Subject: Conseil de classe\r\n") == 1
        tampered = (
            head + b"\r\n" + body.replace(b"Subject: Conseil de classe", b"Subject: Conseil de classe!")
        )
    else:
        _, sig_part = multipart_parts(signed)
        sig = pk.to_binary(part_body(sig_part))
        bad = _backend.armor(flip_byte(sig, len(sig) - 5), "signature")
        tampered = signed.replace(part_body(sig_part), bad.replace(b"\n", b"\r\n") + b"\r\n")
    assert tampered != signed
    v = verify(world, BOB, tampered).verdict
    assert v.banner == V.BANNER_RED, list(v.reasons)
    assert V.REASON_BAD_SIGNATURE in v.reasons


# --- encrypt and decrypt ------------------------------------------------------


@pytest.mark.parametrize("sign_too", [False, True], ids=["encrypt", "sign+encrypt"])
@pytest.mark.parametrize(("sender", "recipient"), [(ALICE, BOB), (BOB, ALICE)], ids=["alice", "bob"])
def test_encrypt_then_decrypt(world: Client, sender: str, recipient: str, sign_too: bool) -> None:
    enc = _encrypt(world, sender, mail(sender, recipient), sign=sign_too)
    ctype = content_type_of(enc)
    assert ctype.startswith("multipart/encrypted;") and 'protocol="application/pgp-encrypted"' in ctype
    control, data = multipart_parts(enc)
    assert b"Content-Type: application/pgp-encrypted" in control and b"Version: 1" in control
    armored = part_body(data)
    packets = pk.read_packets(pk.to_binary(armored))
    # Both certificates advertise SEIPDv2: AEAD, v6 PKESKs (bob's is RSA).
    assert [p.body[0] for p in packets if p.tag == pk.TAG_PKESK] == [6, 6]
    assert [p.body[0] for p in packets if p.tag == pk.TAG_SEIPD] == [2]
    assert b"jeudi" not in enc
    assert b"Subject: [...]" in enc and b"Conseil de classe" not in enc  # RFC 9788 hp="cipher"
    for reader in (recipient, sender):  # the sender reads its Sent copy
        resp = _decrypt(world, reader, enc)
        v = resp.verdict
        assert v.lock and v.integrity_protected and v.scheme == OPENPGP
        assert BODY in resp.display_message
        assert b"Subject: Conseil de classe" in resp.display_message
        assert b"[...]" not in resp.display_message
        if sign_too:
            assert v.banner == V.BANNER_GREEN, list(v.reasons)
            assert v.coverage == V.COVERAGE_BODY_AND_HEADERS
            assert [list(s.verified_addresses) for s in v.signers] == [[sender]]
        else:
            assert v.banner == V.BANNER_NONE and not v.signers
    with pytest.raises(grpc.RpcError) as err:
        verify(world, recipient, enc)
    assert error_reason(err.value) == "ENCRYPTED"


def test_multipart_signed_inside_encryption(world: Client, people: Cast) -> None:
    """RFC 3156 §6.1: a multipart/signed entity, encrypted as a whole."""
    signed = sign(world, ALICE, mail(ALICE, BOB), scheme=OPENPGP)
    inner = root_entity(signed)
    assert inner.startswith(b"Content-Type: multipart/signed;")
    armored = pgp_encrypt(inner, [people.bob.cert, people.alice.cert])
    enc = pgp_multipart_encrypted(outer_headers(ALICE, BOB, "[...]"), armored)
    resp = _decrypt(world, BOB, enc)
    v = resp.verdict
    assert v.lock and v.integrity_protected
    assert v.banner == V.BANNER_GREEN, list(v.reasons)
    assert v.coverage == V.COVERAGE_BODY_AND_HEADERS
    assert [s.fingerprint for s in v.signers] == [people.alice.fingerprint]
    assert BODY in resp.display_message and b"Subject: Conseil de classe" in resp.display_message
    # Tampering inside the signed part, re-encrypted: decrypts, and RED.
    armored = pgp_encrypt(inner.replace(b"jeudi", b"lundi"), [people.bob.cert])
    v = _decrypt(world, BOB, pgp_multipart_encrypted(outer_headers(ALICE, BOB), armored)).verdict
    assert v.lock and v.banner == V.BANNER_RED


def test_combined_signed_and_encrypted_by_another_client(world: Client, people: Cast) -> None:
    """RFC 3156 §6.2, the form secmail writes, but made outside the service
    to a single recipient (bob's RSA key) with alice's signature inside."""
    payload = root_entity(mail(ALICE, BOB))
    armored = pgp_encrypt(payload, [people.bob.cert], signer_tsk=people.alice.tsk)
    resp = _decrypt(world, BOB, pgp_multipart_encrypted(outer_headers(ALICE, BOB), armored))
    v = resp.verdict
    assert v.lock and v.banner == V.BANNER_GREEN, list(v.reasons)
    assert v.coverage == V.COVERAGE_BODY  # no protected headers in this payload
    assert BODY in resp.display_message


@pytest.fixture(scope="module")
def gpg(people: Cast) -> Iterator[GnuPG]:
    g = GnuPG()
    for p in (people.alice, people.bob):
        g.run("--import", input=p.tsk)
    yield g
    g.close()


def test_inline_cleartext_signature_is_partial(world: Client, people: Cast, gpg: GnuPG) -> None:
    text = "Réunion parents-professeurs mardi à 18 h.\n".encode()
    clear = gpg.run("--local-user", people.alice.fingerprint.upper(), "--clearsign", input=text)
    assert clear.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
    msg = mail(ALICE, BOB, body=clear.replace(b"\n", b"\r\n"))
    resp = verify(world, BOB, msg)
    v = resp.verdict
    assert v.banner == V.BANNER_YELLOW
    assert list(v.reasons) == [V.REASON_PARTIAL_COVERAGE]
    assert [s.status for s in v.signers] == [V.SIGNATURE_STATUS_VALID]
    assert b"parents-professeurs" in resp.display_message
    assert b"BEGIN PGP SIGNED MESSAGE" not in resp.display_message
    # An edit to the signed text is caught.
    bad = msg.replace(b"mardi", b"jeudi")
    assert verify(world, BOB, bad).verdict.banner == V.BANNER_RED


@pytest.mark.parametrize("sign_too", [False, True], ids=["encrypt", "sign+encrypt"])
def test_inline_encrypted_body(world: Client, people: Cast, gpg: GnuPG, sign_too: bool) -> None:
    text = "Les notes du conseil sont en pièce jointe.\n".encode()
    extra = ["--sign", "--local-user", people.alice.fingerprint.upper()] if sign_too else []
    armored = gpg.run(
        "--armor", "--recipient", people.bob.fingerprint.upper(), *extra, "--encrypt", input=text
    )
    resp = _decrypt(world, BOB, mail(ALICE, BOB, body=armored.replace(b"\n", b"\r\n")))
    v = resp.verdict
    assert v.lock and v.integrity_protected
    assert "pièce jointe".encode() in resp.display_message
    if sign_too:
        assert v.banner == V.BANNER_YELLOW
        assert list(v.reasons) == [V.REASON_PARTIAL_COVERAGE]
        assert [s.status for s in v.signers] == [V.SIGNATURE_STATUS_VALID]
    else:
        assert v.banner == V.BANNER_NONE


def test_recipient_without_usable_key(client: Client, people: Cast) -> None:
    _import(client, ALICE, people.alice.tsk)
    _import(client, ALICE, _backend.revoke_cert(people.mallory.tsk))  # mallory's only cert: revoked
    _import(client, ALICE, expired_cert(f"Ancien <ancien@{DOMAIN}>"))  # ancien's only cert: expired
    for missing in (f"inconnu@{DOMAIN}", f"mallory@{DOMAIN}", f"ancien@{DOMAIN}"):
        with pytest.raises(grpc.RpcError) as err:
            _encrypt(client, ALICE, mail(ALICE, missing), sign=False)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(err.value) == "RECIPIENT_KEY_MISSING", missing
    # With a usable certificate for the same address, it works.
    _import(client, ALICE, people.bob.cert)
    assert b"multipart/encrypted" in _encrypt(client, ALICE, mail(ALICE, BOB), sign=True)


# --- integrity failures release nothing ------------------------------------------


def _sed(body: bytes) -> tuple[int, bytes]:
    return pk.TAG_SED, body[1:]


def _strip_mdc(body: bytes) -> tuple[int, bytes]:
    return pk.TAG_SEIPD, body[:-22]


def _flip_middle(body: bytes) -> tuple[int, bytes]:
    return pk.TAG_SEIPD, flip_byte(body, len(body) // 2)


def _rebuild(armored: bytes, mutate: object, *, pkesk: bytes | None = None) -> bytes:
    out = b""
    for p in pk.read_packets(pk.to_binary(armored)):
        if p.tag == pk.TAG_SEIPD and callable(mutate):
            tag, body = mutate(p.body)
            out += pk.encode_packet(tag, body)
        elif p.tag == pk.TAG_PKESK and pkesk is not None:
            out += pkesk
        else:
            out += p.raw
    return _backend.armor(out, "message")


def _files_written_since(start: float, roots: list[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                try:
                    if path.stat().st_mtime >= start and path.is_file():
                        found.append(path)
                except OSError:
                    continue
    return found


@pytest.mark.parametrize("attack", ["sed", "stripped-mdc", "seipdv1-flip", "seipdv2-flip", "bad-rsa-pkesk"])
def test_integrity_failure_releases_nothing(
    client: Client, people: Cast, gpg: GnuPG, caplog: pytest.LogCaptureFixture, tmp_path: Path, attack: str
) -> None:
    _import(client, BOB, people.bob.tsk)
    marker = "MARQUEUR-" + secrets.token_hex(8)
    payload = root_entity(mail(ALICE, BOB, body=f"Code d'accès : {marker}\r\n".encode()))
    if attack in ("sed", "stripped-mdc", "seipdv1-flip"):
        # GnuPG 2.2 writes SEIPDv1 (CFB + MDC), uncompressed here so that
        # the plaintext would be right there if anything released it.
        v1 = gpg.run(
            "--armor", "-z", "0", "--recipient", people.bob.fingerprint.upper(), "--encrypt", input=payload
        )
        mutate = {"sed": _sed, "stripped-mdc": _strip_mdc, "seipdv1-flip": _flip_middle}[attack]
        original = v1
        armored = _rebuild(v1, mutate)
    else:
        v2 = pgp_encrypt(payload, [people.bob.cert])  # SEIPDv2, v6 RSA PKESK
        original = v2
        if attack == "seipdv2-flip":
            armored = _rebuild(v2, _flip_middle)
        else:
            # A PKESK to bob's key whose RSA block is not a session key.
            (esk,) = [pk.parse_pkesk(p) for p in pk.read_packets(pk.to_binary(v2)) if p.tag == pk.TAG_PKESK]
            mpi = pk._Reader(esk.material).mpi()
            bogus = esk.raw[: -len(mpi)] + flip_byte(mpi, len(mpi) // 2)
            assert pk.parse_pkesk(pk.read_packets(bogus)[0]).recipient == esk.recipient
            armored = _rebuild(v2, None, pkesk=bogus)
    enc = pgp_multipart_encrypted(outer_headers(ALICE, BOB, "[...]"), armored)
    assert marker.encode() not in enc
    # The control: untouched, the same message does show the marker.
    control = _decrypt(client, BOB, pgp_multipart_encrypted(outer_headers(ALICE, BOB, "[...]"), original))
    assert marker.encode() in control.display_message

    caplog.set_level(logging.DEBUG)
    caplog.clear()
    start_time = time.time()
    with pytest.raises(grpc.RpcError) as err:
        _decrypt(client, BOB, enc)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "INTEGRITY_CHECK_FAILED"

    from grpc_status import rpc_status

    status = rpc_status.from_call(err.value)
    assert status is not None
    exposed = [err.value.details() or "", str(status), repr(err.value.trailing_metadata())]
    assert not [t for t in exposed if marker in t]
    assert not [r for r in caplog.records if marker in r.getMessage() or marker in str(r.__dict__)]
    # The server's data directory (the ``client`` fixture's) and $TMPDIR,
    # with two canaries to show that the scan would find a leak there.
    canaries = {tmp_path / "data" / "canary", Path(tempfile.mkdtemp()) / "canary"}
    for canary in canaries:
        canary.write_bytes(marker.encode())
    written = _files_written_since(start_time, [tmp_path / "data", Path(tempfile.gettempdir())])
    leaked = {p for p in written if marker.encode() in _read(p)}
    assert leaked == canaries, leaked - canaries
    for canary in canaries:
        canary.unlink()
        if canary.parent != tmp_path / "data":
            canary.parent.rmdir()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
