"""Correspondents' certificates kept from GREEN messages, so a reader can
answer encrypted without importing anything (secmail/service/harvest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from access_support import Running, Stubs, error_info, running
from cryptography.hazmat.primitives import hashes
from service_support import People
from testpki import Identity, end_entity, message

from secmail.context import VerifyContext
from secmail.message import (
    DecryptionKeys,
    Recipients,
    SMIMESigningKey,
    decrypt_message,
    encrypt_message,
    sign_message,
    verify_message,
)
from secmail.policy import DEFAULT_POLICY
from secmail.service.harvest import Harvester, SignerCertificates
from secmail.v1 import keys_pb2, message_security_pb2, trust_pb2, verdict_pb2
from secmail.verdict import Banner, Scheme

V = verdict_pb2
BOB = "bob@ac-besancon.fr"
ALICE = "alice@ac-besancon.fr"


def _signing_key(ident: Identity, address: str) -> SMIMESigningKey:
    return SMIMESigningKey(ident.cert, ident.key, ident.chain, (address,))


def _signed_by(ident: Identity, sender: str = ALICE, to: str = BOB) -> bytes:
    """Signed outside secmail: the sender's key is not on this server."""
    return sign_message(message(sender=sender, to=to), _signing_key(ident, sender), at=datetime.now(UTC))


@contextmanager
def _server(tmp_path: Path, people: People, harvest: tuple[str, ...]) -> Iterator[tuple[Running, Stubs]]:
    with running(tmp_path / "data", harvest_domains=harvest) as run:
        stubs = run.channel()
        stubs.trust.ImportTrustBundle(
            trust_pb2.ImportTrustBundleRequest(name="ac-besancon", data=people.pki.bundle_pem)
        )
        stubs.keys.ImportKey(keys_pb2.ImportKeyRequest(user=BOB, data=people.bob.p12(b"pw"), passphrase="pw"))
        yield run, stubs


@pytest.fixture
def harvesting(tmp_path: Path, people: People) -> Iterator[tuple[Running, Stubs]]:
    with _server(tmp_path, people, ("ac-besancon.fr",)) as server:
        yield server


def _encrypt(stubs: Stubs, sender: str, to: str) -> bytes:
    return stubs.messages.Encrypt(
        message_security_pb2.EncryptRequest(user=sender, message=message(sender=sender, to=to))
    ).message


def _keys(stubs: Stubs, user: str) -> list[keys_pb2.KeyInfo]:
    return list(stubs.keys.ListKeys(keys_pb2.ListKeysRequest(user=user)).keys)


def _verify(stubs: Stubs, user: str, msg: bytes) -> verdict_pb2.Verdict:
    return stubs.messages.Verify(message_security_pb2.VerifyRequest(user=user, message=msg)).verdict


def test_bob_can_answer_alice_encrypted_after_a_green_message(
    harvesting: tuple[Running, Stubs], people: People
) -> None:
    _, stubs = harvesting
    with pytest.raises(grpc.RpcError) as err:
        _encrypt(stubs, BOB, ALICE)
    assert error_info(err.value).reason == "RECIPIENT_KEY_MISSING"

    assert _verify(stubs, BOB, _signed_by(people.alice)).banner == V.BANNER_GREEN
    [kept] = [k for k in _keys(stubs, BOB) if ALICE in k.addresses]
    assert not kept.has_private_key
    assert kept.key_id == people.alice.cert.fingerprint(hashes.SHA256()).hex()

    encrypted = _encrypt(stubs, BOB, ALICE)
    # Alice, with her own key and nothing from secmail, can read it.
    ctx = VerifyContext(at=datetime.now(UTC), policy=DEFAULT_POLICY)
    keys = DecryptionKeys(smime=lambda: [(people.alice.cert, people.alice.key)], pgp=lambda: [])
    opened = decrypt_message(encrypted, ctx, keys)
    assert opened.verdict.lock
    assert b"Le conseil de classe est jeudi." in opened.display_message


def test_kept_from_a_green_decrypt_too(harvesting: tuple[Running, Stubs], people: People) -> None:
    _, stubs = harvesting
    encrypted = encrypt_message(
        message(),
        Scheme.SMIME,
        Recipients(smime=(people.bob.cert,)),
        signer=_signing_key(people.alice, ALICE),
        at=datetime.now(UTC),
    )
    verdict = stubs.messages.Decrypt(message_security_pb2.DecryptRequest(user=BOB, message=encrypted)).verdict
    assert (verdict.banner, verdict.lock) == (V.BANNER_GREEN, True)
    assert [k.addresses for k in _keys(stubs, BOB) if not k.has_private_key] == [[ALICE]]
    _encrypt(stubs, BOB, ALICE)


def test_not_kept_from_a_yellow_message(harvesting: tuple[Running, Stubs], people: People) -> None:
    _, stubs = harvesting
    # Same address, but a certificate from a CA this server does not trust:
    # exactly what an attacker would want planted as "alice".
    impostor = end_entity(people.pki.other_root, ALICE)
    assert _verify(stubs, BOB, _signed_by(impostor)).banner == V.BANNER_YELLOW
    assert [k for k in _keys(stubs, BOB) if ALICE in k.addresses] == []


def test_not_kept_from_a_red_message(harvesting: tuple[Running, Stubs], people: People) -> None:
    _, stubs = harvesting
    tampered = _signed_by(people.alice).replace(b"jeudi", b"lundi")
    assert _verify(stubs, BOB, tampered).banner == V.BANNER_RED
    assert [k for k in _keys(stubs, BOB) if ALICE in k.addresses] == []


def test_not_kept_when_the_signer_is_not_the_sender(
    harvesting: tuple[Running, Stubs], people: People
) -> None:
    _, stubs = harvesting
    # Alice's valid certificate over a message From someone else: YELLOW.
    forged = sign_message(
        message(sender="recteur@ac-besancon.fr"),
        _signing_key(people.alice, "recteur@ac-besancon.fr"),
        at=datetime.now(UTC),
    )
    assert _verify(stubs, BOB, forged).banner == V.BANNER_YELLOW
    assert [k for k in _keys(stubs, BOB) if not k.has_private_key] == []


def test_not_kept_for_a_domain_that_did_not_opt_in(tmp_path: Path, people: People) -> None:
    with _server(tmp_path, people, ("ac-lyon.fr",)) as (run, stubs):
        assert run.app.harvester is not None
        assert _verify(stubs, BOB, _signed_by(people.alice)).banner == V.BANNER_GREEN
        assert [k for k in _keys(stubs, BOB) if ALICE in k.addresses] == []
        with pytest.raises(grpc.RpcError):
            _encrypt(stubs, BOB, ALICE)


def test_off_by_default(tmp_path: Path, people: People) -> None:
    with _server(tmp_path, people, ()) as (run, stubs):
        assert run.app.harvester is None
        assert _verify(stubs, BOB, _signed_by(people.alice)).banner == V.BANNER_GREEN
        assert len(_keys(stubs, BOB)) == 1


def test_signing_only_certificate_is_not_kept(harvesting: tuple[Running, Stubs], people: People) -> None:
    _, stubs = harvesting
    # Carol's Ed25519 certificate can sign but not encrypt: useless to reply.
    carol = "carol@ac-besancon.fr"
    assert _verify(stubs, BOB, _signed_by(people.carol, sender=carol)).banner == V.BANNER_GREEN
    assert [k for k in _keys(stubs, BOB) if carol in k.addresses] == []


def test_own_certificate_is_left_alone(harvesting: tuple[Running, Stubs], people: People) -> None:
    _, stubs = harvesting
    before = _keys(stubs, BOB)
    signed = stubs.messages.Sign(
        message_security_pb2.SignRequest(user=BOB, message=message(sender=BOB))
    ).message
    assert _verify(stubs, BOB, signed).banner == V.BANNER_GREEN
    assert _keys(stubs, BOB) == before
    assert before[0].has_private_key


def test_already_visible_certificate_is_not_copied(harvesting: tuple[Running, Stubs], people: People) -> None:
    _, stubs = harvesting
    # Alice's own key is on the server: bob already sees her certificate.
    stubs.keys.ImportKey(keys_pb2.ImportKeyRequest(user=ALICE, data=people.alice.p12(b"pw"), passphrase="pw"))
    assert _verify(stubs, BOB, _signed_by(people.alice)).banner == V.BANNER_GREEN
    assert len(_keys(stubs, BOB)) == 1


def test_harvest_ignores_anything_but_green(harvesting: tuple[Running, Stubs], people: People) -> None:
    run, _ = harvesting
    harvester = run.app.harvester
    assert isinstance(harvester, Harvester)
    seen = SignerCertificates()
    ctx = VerifyContext(
        at=datetime.now(UTC), policy=DEFAULT_POLICY, trust=replace(run.app.trust_context(), checkers=(seen,))
    )
    result = verify_message(_signed_by(people.alice), ctx)
    # The recorder saw the validated chain: alice's certificate is known by
    # the fingerprint the verdict reports.
    assert result.verdict.banner is Banner.GREEN
    assert seen.get(result.verdict.signers[0].fingerprint) == people.alice.cert
    assert harvester.harvest(BOB, replace(result.verdict, banner=Banner.YELLOW), seen) == []
    stored = harvester.harvest(BOB, result.verdict, seen)
    assert [k.addresses for k in stored] == [(ALICE,)]
    # Once kept, not written again.
    assert harvester.harvest(BOB, result.verdict, seen) == []
