"""Keys and PGP/MIME pieces for the OpenPGP gRPC tests
(``tests/service/test_openpgp_rpc.py`` and ``test_openpgp_interop_rpc.py``).

The cast is made once per process (``cast()``): Sequoia-made keys for the
académie's users, GnuPG for what Sequoia cannot do here (a third-party
certification, passphrase protection, a key created in the past).
"""

from __future__ import annotations

import email.utils
import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgp_support import GnuPG

from secmail.pgp import _backend
from secmail.pgp import packets as pk
from secmail.pgp.keys import parse_openpgp_keys

DOMAIN = "ac-besancon.fr"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
MALLORY = f"mallory@{DOMAIN}"
PASSPHRASE = "Tr0mbone-à-coulisse"


@dataclass(frozen=True)
class Person:
    address: str
    #: Unprotected binary TSK (secmail's form after import).
    tsk: bytes
    #: Binary public certificate.
    cert: bytes
    fingerprint: str

    @property
    def armored_tsk(self) -> bytes:
        return _backend.armor(self.tsk, "secret-key")

    @property
    def armored_cert(self) -> bytes:
        return _backend.armor(self.cert, "public-key")


@dataclass(frozen=True)
class Cast:
    #: Ed25519 + Cv25519, v4 (Sequoia).
    alice: Person
    #: RSA-3072 (sign and encryption subkeys), v4 (Sequoia): advertises
    #: SEIPDv2, so Sequoia writes v6 PKESKs to it.
    bob: Person
    #: Ed25519 + Cv25519, her User ID certified by ``ca``.
    carol: Person
    #: The académie's OpenPGP CA key (a trust anchor once imported).
    ca: Person
    #: Never imported anywhere.
    mallory: Person
    #: bob's TSK, armored, protected with PASSPHRASE (iterated S2K, GnuPG).
    bob_protected: bytes
    #: alice's TSK, binary, protected with PASSPHRASE.
    alice_protected: bytes


def person(tsk: bytes, address: str) -> Person:
    (parsed,) = parse_openpgp_keys(tsk, None)
    assert parsed.private_data is not None
    return Person(address, parsed.private_data, parsed.public_data, parsed.key_id)


def _protect(gpg: GnuPG, who: Person) -> bytes:
    gpg.run("--import", input=who.tsk)
    gpg.run("--passphrase", PASSPHRASE, "--passwd", who.fingerprint.upper())
    return gpg.run("--export-secret-keys", who.fingerprint.upper(), passphrase=PASSPHRASE)


@functools.cache
def cast() -> Cast:
    alice = person(_backend.generate_tsk([f"Alice Martin <{ALICE}>"]), ALICE)
    bob = person(_backend.generate_tsk([f"Bob Durand <{BOB}>"], suite="rsa3k"), BOB)
    ca = person(_backend.generate_tsk([f"CA OpenPGP <ca-openpgp@{DOMAIN}>"]), f"ca-openpgp@{DOMAIN}")
    carol_raw = person(_backend.generate_tsk([f"Carol Petit <{CAROL}>"]), CAROL)
    mallory = person(_backend.generate_tsk([f"Mallory <{MALLORY}>"]), MALLORY)
    gpg = GnuPG()
    # The agent's calibrated S2K takes seconds per key to protect and
    # export; 65536 iterations keep the format and cost milliseconds.
    (Path(gpg.home) / "gpg-agent.conf").write_text("s2k-count 65536\n")
    try:
        gpg.run("--import", input=ca.tsk)
        gpg.run("--import", input=carol_raw.tsk)
        gpg.run("--default-key", ca.fingerprint.upper(), "--quick-sign-key", carol_raw.fingerprint.upper())
        carol = person(gpg.export_secret(carol_raw.fingerprint.upper()), CAROL)
        bob_protected = _backend.armor(_protect(gpg, bob), "secret-key")
        alice_protected = _protect(gpg, alice)
    finally:
        gpg.close()
    return Cast(alice, bob, carol, ca, mallory, bob_protected, alice_protected)


def expired_cert(uid: str) -> bytes:
    """A certificate (Ed25519/Cv25519, GnuPG) that expired in 2021."""
    gpg = GnuPG()
    try:
        # Frozen clocks ("!"), the subkey a minute younger than its primary:
        # a subkey older than its primary is refused ("Time conflict").
        gpg.run(
            "--faked-system-time", "20200101T000000!", "--quick-gen-key", uid, "ed25519", "sign,cert", "1y"
        )
        (fpr,) = gpg.fingerprints()
        gpg.run("--faked-system-time", "20200101T000100!", "--quick-add-key", fpr, "cv25519", "encr", "1y")
        return gpg.export(fpr)
    finally:
        gpg.close()


# --- messages ---------------------------------------------------------------


def mail(
    sender: str = ALICE,
    to: str = BOB,
    *,
    subject: str = "Conseil de classe",
    body: bytes = b"Bonjour,\r\n\r\nLe conseil de classe est jeudi.\r\n",
    content_type: bytes = b'text/plain; charset="utf-8"',
) -> bytes:
    date = email.utils.format_datetime(datetime.now(UTC))
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <{abs(hash(body))}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n".encode()
        + b"Content-Type: "
        + content_type
        + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + body
    )


def outer_headers(sender: str = ALICE, to: str = BOB, subject: str = "Conseil de classe") -> bytes:
    date = email.utils.format_datetime(datetime.now(UTC))
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\nMIME-Version: 1.0\r\n"
    ).encode()


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head + b"\r\n", body


def root_entity(raw: bytes) -> bytes:
    """The root entity of a message: its Content-* header fields and body
    (what RFC 3156 §6.1 puts inside the encryption)."""
    head, body = split_message(raw)
    fields = re.findall(rb"(?mi)^(Content-[^:]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*)\r\n", head)
    return b"\r\n".join(fields) + b"\r\n\r\n" + body


def content_type_of(raw: bytes) -> str:
    head, _ = split_message(raw)
    m = re.search(rb"(?mi)^Content-Type:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head)
    assert m is not None
    return re.sub(r"\s+", " ", m.group(1).decode()).strip()


def multipart_parts(raw: bytes) -> list[bytes]:
    """The parts of the root multipart entity, byte for byte (RFC 2046
    §5.1.1: the CRLF before each delimiter belongs to the delimiter)."""
    ctype = content_type_of(raw)
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    assert m is not None, ctype
    delimiter = b"\r\n--" + m.group(1).encode()
    _, body = split_message(raw)
    body = b"\r\n" + body
    chunks = body.split(delimiter)
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        parts.append(chunk.split(b"\r\n", 1)[1])
    return parts


def part_body(part: bytes) -> bytes:
    return part.partition(b"\r\n\r\n")[2]


def micalg_of(signature: bytes) -> str:
    (p,) = [p for p in pk.read_packets(pk.to_binary(signature)) if p.tag == pk.TAG_SIGNATURE]
    return pk.MICALG_NAMES[pk.parse_signature(p).hash_algorithm]


def pgp_multipart_signed(headers: bytes, entity: bytes, armored_sig: bytes) -> bytes:
    """RFC 3156 §5 around a third party's detached signature of ``entity``."""
    boundary = "sig-" + format(abs(hash(entity)), "x")
    sig = armored_sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return (
        headers
        + f'Content-Type: multipart/signed; micalg="{micalg_of(armored_sig)}";\r\n'
        f' protocol="application/pgp-signature"; boundary="{boundary}"\r\n\r\n'.encode()
        + f"--{boundary}\r\n".encode()
        + entity
        + f"\r\n--{boundary}\r\n".encode()
        + b"Content-Type: application/pgp-signature\r\n\r\n"
        + sig
        + f"\r\n--{boundary}--\r\n".encode()
    )


def pgp_multipart_encrypted(headers: bytes, armored_msg: bytes) -> bytes:
    """RFC 3156 §4 around a third party's OpenPGP message."""
    boundary = "enc-" + format(abs(hash(armored_msg)), "x")
    msg = armored_msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return (
        headers
        + f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        f' boundary="{boundary}"\r\n\r\n'.encode()
        + f"--{boundary}\r\n".encode()
        + b"Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        + f"\r\n--{boundary}\r\n".encode()
        + b"Content-Type: application/octet-stream\r\n\r\n"
        + msg
        + f"\r\n--{boundary}--\r\n".encode()
    )
