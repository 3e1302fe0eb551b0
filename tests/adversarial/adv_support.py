"""Shared helpers for the adversarial suite: a cast of users, a server that
knows them, and builders for the hostile messages of issue 4.

Every attack message is made from real signatures and real ciphertexts:
S/MIME through secmail's own CMS code or ``openssl cms``, OpenPGP through
secmail's engine (Sequoia) or ``gpg``. What the production signer refuses
to make (a From that is not the signer's, several signers, no signer...)
is assembled here from the engines' pieces.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from service_support import Client, People, make_people, start
from testpki import Identity, end_entity

from secmail.pgp import _backend
from secmail.service.app import Settings
from secmail.smime import algorithms as alg
from secmail.smime.mime import build_multipart_signed as smime_multipart_signed
from secmail.smime.mime import build_pkcs7_mime
from secmail.smime.sign import micalg_for, sign_content
from secmail.v1 import keys_pb2, message_security_pb2, trust_pb2, verdict_pb2

V = verdict_pb2
CRLF = b"\r\n"
DOMAIN = "ac-besancon.fr"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
EVE = f"eve@{DOMAIN}"
MALLORY = "mallory@evil.example"

#: Text that must never leave the service when integrity fails.
MARKER = b"PLAINTEXT-MARKER-7f3a9c"

SMIME = V.SCHEME_SMIME
OPENPGP = V.SCHEME_OPENPGP
SCHEMES = {"smime": SMIME, "openpgp": OPENPGP}

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CORPORA = PROJECT_ROOT.parent / "shared" / "corpora"


# --- the cast -------------------------------------------------------------------


@dataclass(frozen=True)
class PGPKey:
    tsk: bytes
    cert: bytes
    address: str

    @property
    def armored_tsk(self) -> bytes:
        return _backend.armor(self.tsk, "secret-key")

    @property
    def armored_cert(self) -> bytes:
        return _backend.armor(self.cert, "public-key")


def pgp_key(*user_ids: str, validity_seconds: int | None = None) -> PGPKey:
    tsk = _backend.generate_tsk(list(user_ids), validity_seconds=validity_seconds)
    address = email.utils.parseaddr(user_ids[0])[1]
    return PGPKey(tsk, _backend.public_cert(tsk), address)


@dataclass(frozen=True)
class Cast:
    """alice writes, bob reads, eve is an insider with her own valid keys,
    mallory an outsider whose keys nobody trusts."""

    people: People
    eve: Identity
    mallory: Identity
    pgp_alice: PGPKey
    pgp_bob: PGPKey
    pgp_eve: PGPKey
    pgp_mallory: PGPKey

    @property
    def alice(self) -> Identity:
        return self.people.alice

    @property
    def bob(self) -> Identity:
        return self.people.bob


def make_cast() -> Cast:
    people = make_people()
    return Cast(
        people=people,
        eve=end_entity(people.pki.intermediate, EVE),
        mallory=end_entity(people.pki.other_root, MALLORY),
        pgp_alice=pgp_key(f"Alice <{ALICE}>"),
        pgp_bob=pgp_key(f"Bob <{BOB}>"),
        pgp_eve=pgp_key(f"Eve <{EVE}>"),
        pgp_mallory=pgp_key(f"Mallory <{MALLORY}>"),
    )


def populate(client: Client, cast: Cast) -> None:
    """The académie CA is trusted; alice, bob and eve imported their S/MIME
    .p12 and their OpenPGP secret keys, and each other's OpenPGP
    certificates."""
    client.trust.ImportTrustBundle(
        trust_pb2.ImportTrustBundleRequest(name="ac-besancon", data=cast.people.pki.bundle_pem)
    )
    for user, ident, key in (
        (ALICE, cast.alice, cast.pgp_alice),
        (BOB, cast.bob, cast.pgp_bob),
        (EVE, cast.eve, cast.pgp_eve),
    ):
        client.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=ident.p12(b"pw"), passphrase="pw"))
        client.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=key.armored_tsk))
    # Address books: each of them imported the others' OpenPGP certificates,
    # which is what authenticates a correspondent's key for its reader (see
    # ``secmail.service.app._PGPLookup``); the S/MIME counterpart is the
    # imported académie CA.
    users = {ALICE: cast.pgp_alice, BOB: cast.pgp_bob, EVE: cast.pgp_eve}
    for reader in users:
        for owner, key in users.items():
            if owner != reader:
                client.keys.ImportKey(keys_pb2.ImportKeyRequest(user=reader, data=key.armored_cert))


def world(data_dir: Path, cast: Cast, settings: Settings | None = None) -> Iterator[Client]:
    server, client = start(data_dir, settings)
    populate(client, cast)
    try:
        yield client
    finally:
        client.channel.close()
        server.stop(None)


# --- messages ---------------------------------------------------------------------


def now_date() -> str:
    return email.utils.format_datetime(datetime.now(UTC))


def headers(
    *,
    from_: str | None = f"Alice <{ALICE}>",
    to: str = f"Bob <{BOB}>",
    subject: str = "Conseil de classe",
    date: str | None = None,
    extra: Sequence[str] = (),
) -> bytes:
    """Outer header fields (no Content-* fields), CRLF-terminated."""
    lines: list[str] = []
    if from_ is not None:
        lines.append(f"From: {from_}")
    lines += [f"To: {to}", f"Subject: {subject}", f"Date: {date or now_date()}"]
    lines.append(f"Message-ID: <{os.urandom(6).hex()}@{DOMAIN}>")
    lines += list(extra)
    return "".join(line + "\r\n" for line in lines).encode()


def text_part(text: bytes = b"Bonjour Bob,\r\n\r\n" + MARKER + b"\r\n", *, subtype: str = "plain") -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'.encode()
        + text
    )


def message(outer: bytes | None = None, entity: bytes | None = None) -> bytes:
    """A complete message: outer fields, MIME-Version, one entity."""
    return (outer if outer is not None else headers()) + b"MIME-Version: 1.0\r\n" + (entity or text_part())


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(outer non-content fields, the root entity) of a message secmail made."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = re.split(rb"\r\n(?![ \t])", head)
    outer = [f for f in fields if not f.lower().startswith((b"content-", b"mime-version"))]
    content = [f for f in fields if f.lower().startswith(b"content-")]
    return (
        b"".join(f + CRLF for f in outer),
        b"".join(f + CRLF for f in content) + CRLF + body,
    )


def multipart(subtype: str, *parts: bytes, params: str = "", boundary: str | None = None) -> bytes:
    b = boundary or "adv-" + os.urandom(8).hex()
    head = f'Content-Type: multipart/{subtype}; boundary="{b}"{params}\r\n\r\n'.encode()
    body = b"".join(b"--" + b.encode() + CRLF + p + CRLF for p in parts)
    return head + body + b"--" + b.encode() + b"--" + CRLF


def rfc822_part(msg: bytes, *, disposition: str = "attachment") -> bytes:
    return (
        f'Content-Type: message/rfc822\r\nContent-Disposition: {disposition}; filename="fwd.eml"\r\n\r\n'.encode()
        + msg
    )


def entity_of(raw: bytes) -> bytes:
    """The root entity of a message (its Content-* fields and body)."""
    return split_message(raw)[1]


# --- S/MIME pieces ----------------------------------------------------------------


def smime_signed_entity(payload: bytes, signer: Identity, *, at: datetime | None = None) -> bytes:
    """multipart/signed over ``payload`` (an entity) with secmail's CMS signer."""
    der = sign_content(
        payload,
        private_key=signer.key,
        cert=signer.cert,
        chain=signer.chain,
        detached=True,
        signing_time=at or datetime.now(UTC),
    )
    return smime_multipart_signed(payload, der, micalg_for(signer.key, "sha256"))


def smime_opaque_entity(payload: bytes, signer: Identity, *, at: datetime | None = None) -> bytes:
    der = sign_content(
        payload,
        private_key=signer.key,
        cert=signer.cert,
        chain=signer.chain,
        detached=False,
        signing_time=at or datetime.now(UTC),
    )
    return build_pkcs7_mime(der, "signed-data")


def signature_der(signed: bytes) -> bytes:
    """The DER of the application/pkcs7-signature part of a multipart/signed."""
    tail = signed.split(b"smime.p7s", 2)[-1]
    b64 = tail.split(b"\r\n\r\n", 1)[1].split(b"\r\n--")[0]
    return base64.b64decode(b"".join(b64.split()))


def der_digest_algorithm(digest: str) -> bytes:
    return alg.digest_algorithm_identifier(digest)


def cms_attribute(oid: str, value: bytes) -> bytes:
    return alg.der_sequence(alg.der_oid(oid), alg.der_set_of([value]))


def cms_signer_info(
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    content: bytes,
    *,
    digest: str = "sha256",
    at: datetime | None = None,
    corrupt: bool = False,
) -> bytes:
    """One SignerInfo (RFC 5652 §5.3) with the usual signed attributes."""
    from asn1crypto import core

    when = (at or datetime.now(UTC)).replace(microsecond=0)
    attrs = alg.der_set_of(
        [
            cms_attribute(alg.OID_CONTENT_TYPE, alg.der_oid(alg.OID_DATA)),
            cms_attribute(alg.OID_MESSAGE_DIGEST, alg.der_octet_string(alg.digest(digest, content))),
            cms_attribute(alg.OID_SIGNING_TIME, bytes(core.UTCTime(when).dump())),
        ]
    )
    h = alg.hash_algorithm(digest)
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(attrs, padding.PKCS1v15(), h)
        oid = alg.OID_MD5_RSA if digest == "md5" else alg.RSA_PKCS1_OIDS[digest]
        sig_alg = alg.algorithm_identifier(oid, alg.DER_NULL)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(attrs, ec.ECDSA(h))
        sig_alg = alg.algorithm_identifier(alg.ECDSA_OIDS[digest])
    else:
        raise TypeError(type(key))
    if corrupt:
        sig = sig[:-1] + bytes([sig[-1] ^ 0x01])
    return alg.der_sequence(
        alg.der_integer(1),
        alg.issuer_and_serial_number(cert),
        der_digest_algorithm(digest),
        alg.der_implicit_constructed(0, attrs),
        sig_alg,
        alg.der_octet_string(sig),
    )


def cms_signed_data(
    signer_infos: Sequence[bytes],
    certs: Sequence[x509.Certificate],
    *,
    econtent: bytes | None = None,
    digests: Sequence[str] = ("sha256",),
) -> bytes:
    """ContentInfo(SignedData) from ready SignerInfos (RFC 5652 §5.1)."""
    encap = [alg.der_oid(alg.OID_DATA)]
    if econtent is not None:
        encap.append(alg.der_explicit(0, alg.der_octet_string(econtent)))
    parts = [
        alg.der_integer(1),
        alg.der_set_of([der_digest_algorithm(d) for d in digests]),
        alg.der_sequence(*encap),
    ]
    if certs:
        der_certs = dict.fromkeys(c.public_bytes(serialization.Encoding.DER) for c in certs)
        parts.append(alg.der_set_of(der_certs, tag=0xA0))
    parts.append(alg.der_set_of(list(signer_infos)))
    return alg.der_sequence(alg.der_oid(alg.OID_SIGNED_DATA), alg.der_explicit(0, alg.der_sequence(*parts)))


def smime_detached_with(payload: bytes, der: bytes) -> bytes:
    """A multipart/signed whose signature part holds ``der`` as given."""
    return smime_multipart_signed(payload, der, "sha-256")


def chain_of(*idents: Identity) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for ident in idents:
        out += [ident.cert, *ident.chain]
    return out


def sha256_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


# --- OpenPGP pieces -----------------------------------------------------------------


def pgp_signed_entity(payload: bytes, key: PGPKey) -> bytes:
    from secmail.pgp.mime import build_multipart_signed
    from secmail.pgp.sign import sign_detached

    sig, micalg = sign_detached(payload, key.tsk)
    return build_multipart_signed(payload, sig, micalg)


def pgp_multipart_signed(payload: bytes, armored_sig: bytes, micalg: str = "pgp-sha256") -> bytes:
    from secmail.pgp.mime import build_multipart_signed

    return build_multipart_signed(payload, armored_sig, micalg)


def pgp_detached(payload: bytes, key: PGPKey) -> bytes:
    from secmail.pgp.sign import sign_detached

    return sign_detached(payload, key.tsk)[0]


def dearmor(armored: bytes) -> bytes:
    from secmail.pgp import packets as pk

    return pk.to_binary(armored)


def pgp_encrypted_blob(entity: bytes) -> bytes:
    """The armored OpenPGP message of a multipart/encrypted entity."""
    start = entity.index(b"-----BEGIN PGP MESSAGE-----")
    end = entity.index(b"-----END PGP MESSAGE-----") + len(b"-----END PGP MESSAGE-----")
    return entity[start:end] + CRLF


class GnuPG:
    """``gpg`` in a throwaway GNUPGHOME, for what Sequoia will not make
    (SHA-1 signatures, notations, faked times, SED packets)."""

    def __init__(self) -> None:
        self.home = tempfile.mkdtemp(prefix="adv-gpg-")
        os.chmod(self.home, 0o700)

    def run(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "", *args],
            input=input,
            capture_output=True,
            env=dict(os.environ, GNUPGHOME=self.home),
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"gpg {args[:3]} failed: {proc.stderr.decode(errors='replace')[-400:]}")
        return proc

    def import_key(self, data: bytes) -> None:
        self.run("--import", input=data)

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(self.home, ignore_errors=True)


# --- RPC and verdicts ----------------------------------------------------------------


def sign_rpc(c: Client, user: str, msg: bytes, scheme: int, **kw: object) -> bytes:
    req = message_security_pb2.SignRequest(user=user, message=msg, scheme=scheme, **kw)  # type: ignore[arg-type]
    return c.messages.Sign(req).message


def encrypt_rpc(c: Client, user: str, msg: bytes, scheme: int, *, sign: bool = False, **kw: object) -> bytes:
    req = message_security_pb2.EncryptRequest(user=user, message=msg, scheme=scheme, sign=sign, **kw)  # type: ignore[arg-type]
    return c.messages.Encrypt(req).message


def verify_rpc(
    c: Client, msg: bytes, *, user: str = BOB, **kw: object
) -> message_security_pb2.VerifyResponse:
    req = message_security_pb2.VerifyRequest(user=user, message=msg, **kw)  # type: ignore[arg-type]
    return c.messages.Verify(req)


def decrypt_rpc(
    c: Client, msg: bytes, *, user: str = BOB, **kw: object
) -> message_security_pb2.DecryptResponse:
    req = message_security_pb2.DecryptRequest(user=user, message=msg, **kw)  # type: ignore[arg-type]
    return c.messages.Decrypt(req)


def reasons_of(v: verdict_pb2.Verdict) -> list[str]:
    return sorted(V.Reason.Name(r) for r in v.reasons)


def describe(v: verdict_pb2.Verdict) -> str:
    return (
        f"banner={V.Banner.Name(v.banner)} lock={v.lock} coverage={V.Coverage.Name(v.coverage)} "
        f"reasons={reasons_of(v)} signers={[(list(s.verified_addresses), [V.Reason.Name(r) for r in s.reasons]) for s in v.signers]}"
    )


def expect(
    v: verdict_pb2.Verdict,
    *,
    banner: int,
    reasons: Sequence[int] = (),
    lock: bool = False,
    coverage: int | None = None,
) -> None:
    """Exact banner, lock, coverage and (unordered, duplicate-free) reasons.

    ``coverage`` defaults to what the banner implies: NONE for an unsigned
    message, BODY_AND_HEADERS otherwise (secmail signs with header
    protection).
    """
    if coverage is None:
        coverage = V.COVERAGE_NONE if banner == V.BANNER_NONE else V.COVERAGE_BODY_AND_HEADERS
    got = (V.Banner.Name(v.banner), v.lock, V.Coverage.Name(v.coverage), reasons_of(v))
    want = (
        _enum_name(V.Banner, banner),
        lock,
        _enum_name(V.Coverage, coverage),
        sorted(_enum_name(V.Reason, r) for r in reasons),
    )
    assert got == want, describe(v)
    # The overall status always agrees with the banner.
    status: dict[int, int] = {
        V.BANNER_NONE: V.SIGNATURE_STATUS_UNSIGNED,
        V.BANNER_GREEN: V.SIGNATURE_STATUS_VALID,
        V.BANNER_YELLOW: V.SIGNATURE_STATUS_INDETERMINATE,
        V.BANNER_RED: V.SIGNATURE_STATUS_INVALID,
    }
    assert v.signature == status[banner]
    assert v.policy == "secmail-default-2026"
    assert len(v.reason_texts) == len(v.reasons)


def _enum_name(wrapper: Any, value: int) -> str:
    # The generated stubs want each enum's own ValueType; tests pass ints.
    return str(wrapper.Name(value))


def expect_attack(v: verdict_pb2.Verdict, **kw: object) -> None:
    """Like :func:`expect`, for a message that must never be GREEN."""
    assert v.banner != V.BANNER_GREEN, describe(v)
    expect(v, **kw)  # type: ignore[arg-type]


def error_info(exc: BaseException) -> tuple[str, str]:
    """(gRPC status code name, ErrorInfo reason) of a failed call."""
    import grpc
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    assert isinstance(exc, grpc.RpcError)
    status = rpc_status.from_call(exc)
    assert status is not None, "no rich status"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "secmail.v1"
            return exc.code().name, info.reason
    raise AssertionError("no ErrorInfo")


# --- forged messages the production signer refuses to make ---------------------


def forge_signed(
    outer: bytes,
    scheme: int,
    signer: Identity | PGPKey,
    *,
    entity: bytes | None = None,
    hp: bool = True,
    at: datetime | None = None,
) -> bytes:
    """A message with ``outer`` fields signed by ``signer``, whatever its From.

    With ``hp`` the user-facing fields are copied into the signed payload
    (RFC 9788 hp="clear"), as secmail's own Sign does; without it only the
    body is signed and the outer fields are all there is.
    """
    from secmail.mime.entity import parse_entity
    from secmail.mime.protect import build_payload

    raw = message(outer, entity)
    if hp:
        payload, fields = build_payload(parse_entity(raw), hp="clear")
        outer_bytes = b"".join(h.raw + CRLF for h in fields)
    else:
        outer_bytes, payload = split_message(raw)
    assert isinstance(signer, Identity) == (scheme == SMIME)
    return outer_bytes + b"MIME-Version: 1.0\r\n" + signed_entity(payload, signer, at=at)


def signed_entity(payload: bytes, signer: Identity | PGPKey, *, at: datetime | None = None) -> bytes:
    """multipart/signed over ``payload`` in the signer's scheme."""
    if isinstance(signer, PGPKey):
        return pgp_signed_entity(payload, signer)
    return smime_signed_entity(payload, signer, at=at)


def signer_of(cast: Cast, who: str, scheme: int) -> Identity | PGPKey:
    smime = {"alice": cast.alice, "bob": cast.bob, "eve": cast.eve, "mallory": cast.mallory}
    pgp = {"alice": cast.pgp_alice, "bob": cast.pgp_bob, "eve": cast.pgp_eve, "mallory": cast.pgp_mallory}
    return (smime if scheme == SMIME else pgp)[who]


# --- ciphertext surgery --------------------------------------------------------------


def smime_encrypted_entity(
    content: bytes, recipients: Sequence[x509.Certificate], *, authenticated: bool
) -> bytes:
    """application/pkcs7-mime (Auth)EnvelopedData made by secmail's CMS code."""
    from secmail.smime.envelope import encrypt_content

    der = encrypt_content(content, list(recipients), authenticated=authenticated)
    return build_pkcs7_mime(der, "authEnveloped-data" if authenticated else "enveloped-data")


def pkcs7_der(entity: bytes) -> bytes:
    body = entity.split(b"\r\n\r\n", 1)[1]
    return base64.b64decode(b"".join(body.split()))


def with_pkcs7_der(entity: bytes, der: bytes) -> bytes:
    head = entity.split(b"\r\n\r\n", 1)[0]
    return head + b"\r\n\r\n" + base64.encodebytes(der).replace(b"\n", CRLF)


def cbc_parts(der: bytes) -> tuple[bytes, bytes]:
    """(IV, ciphertext) of a CBC EnvelopedData."""
    from asn1crypto import cms

    info = cms.ContentInfo.load(der)
    eci = info["content"]["encrypted_content_info"]
    iv = eci["content_encryption_algorithm"]["parameters"].native
    return bytes(iv), bytes(eci["encrypted_content"].native)


def cbc_gadget(der: bytes, plaintext: bytes, chosen: dict[int, bytes]) -> bytes:
    """EFAIL CBC gadgets (Poddebniak et al., USENIX Security 2018, §3.1).

    Knowing plaintext block ``i``, xoring ``P_i ^ X`` into ciphertext block
    ``i-1`` (or the IV for ``i == 0``) makes block ``i`` decrypt to ``X``
    (16 bytes) and block ``i-1`` to garbage. ``chosen`` maps block index to
    ``X``; the DER keeps its length.
    """
    iv, ct = cbc_parts(der)
    blocks = [iv] + [ct[i : i + 16] for i in range(0, len(ct), 16)]
    for index, x in chosen.items():
        assert len(x) == 16
        p = plaintext[16 * index : 16 * index + 16]
        prev = blocks[index]
        blocks[index] = bytes(a ^ b ^ c for a, b, c in zip(prev, p, x, strict=True))
    new_iv, new_ct = blocks[0], b"".join(blocks[1:])
    assert der.count(ct) == 1 and der.count(iv) == 1
    return der.replace(ct, new_ct).replace(iv, new_iv)


def flip_in(data: bytes, needle: bytes, offset: int) -> bytes:
    """``data`` with one bit flipped ``offset`` bytes into ``needle``."""
    at = data.index(needle) + offset
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def pgp_packets(armored_or_binary: bytes) -> list[tuple[int, bytes, bytes]]:
    """(tag, body, raw) of every top-level packet."""
    from secmail.pgp import packets as pk

    return [(p.tag, p.body, p.raw) for p in pk.iter_packets(pk.to_binary(armored_or_binary))]


def pgp_packet(tag: int, body: bytes) -> bytes:
    from secmail.pgp import packets as pk

    return pk.encode_packet(tag, body)


def literal_packet(data: bytes) -> bytes:
    # RFC 9580 §5.9: format 'b', no file name, zero date.
    return pgp_packet(11, b"b\x00\x00\x00\x00\x00" + data)


def openpgp_cfb_encrypt(key: bytes, plaintext: bytes) -> bytes:
    """RFC 4880 §13.9 CFB with resynchronisation (Symmetrically Encrypted
    Data, tag 9): random prefix + 2 check octets, no MDC."""
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    prefix = os.urandom(16)
    prefix += prefix[-2:]
    head = Cipher(algorithms.AES(key), CFB(bytes(16))).encryptor().update(prefix)
    rest = Cipher(algorithms.AES(key), CFB(head[2:18])).encryptor().update(plaintext)
    return head + rest


def multipart_encrypted_pgp(armored: bytes) -> bytes:
    from secmail.pgp.mime import build_multipart_encrypted

    return build_multipart_encrypted(armored)


def gpg_session_key(g: GnuPG, armored: bytes) -> tuple[int, bytes]:
    """(cipher id, session key) of a message ``g`` can decrypt."""
    proc = g.run("--decrypt", "--show-session-key", input=armored)
    m = re.search(rb"session key: '(\d+):([0-9A-Fa-f]+)'", proc.stderr)
    assert m, proc.stderr[-300:]
    return int(m.group(1)), bytes.fromhex(m.group(2).decode())


def seipd_v1(key: bytes, inner: bytes, *, mdc: str = "good") -> bytes:
    """A Symmetrically Encrypted Integrity Protected Data packet, version 1
    (RFC 9580 §5.13.1): CFB without resync over prefix, ``inner`` and the
    MDC packet. ``mdc`` is "good", "bad" (wrong hash) or "missing"."""
    import hashlib

    from cryptography.hazmat.decrepit.ciphers.modes import CFB
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    prefix = os.urandom(16)
    prefix += prefix[-2:]
    plain = prefix + inner
    if mdc != "missing":
        digest = hashlib.sha1(plain + b"\xd3\x14").digest()
        if mdc == "bad":
            digest = digest[:-1] + bytes([digest[-1] ^ 0x01])
        plain += b"\xd3\x14" + digest
    ct = Cipher(algorithms.AES(key), CFB(bytes(16))).encryptor().update(plain)
    return pgp_packet(18, b"\x01" + ct)


def html_texts(display: bytes) -> list[str]:
    """The decoded text of every text/html part of a displayed message."""
    import email
    from email.policy import default

    msg = email.message_from_bytes(display, policy=default)
    return [str(p.get_content()) for p in msg.walk() if p.get_content_type() == "text/html"]


def remote_urls(html: str) -> list[str]:
    """URL-bearing attribute values other than cid:/mailto: (absolute,
    protocol-relative or relative: all resolve to something a browser
    fetches), and any CSS url()."""
    from html.parser import HTMLParser

    url_attributes = {
        "src", "href", "srcset", "poster", "background", "action", "data", "formaction",
        "longdesc", "lowsrc", "dynsrc", "cite", "xlink:href", "ping", "manifest", "codebase",
    }  # fmt: skip
    found: list[str] = []

    class _Collector(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for name, value in attrs:
                v = (value or "").strip().lower()
                if name in url_attributes and not v.startswith(("cid:", "mailto:")):
                    found.append(f"{tag} {name}={v}")
                elif "url(" in v or "@import" in v:
                    found.append(f"{tag} {name}={v}")

    _Collector().feed(html)
    return found
