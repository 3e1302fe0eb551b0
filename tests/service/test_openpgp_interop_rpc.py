"""PGP/MIME interoperability through the gRPC API, both directions, with
GnuPG 2.2 (gpg), Sequoia's sqop, GopenPGP's gosop and PGPainless.

secmail -> tool: messages signed or encrypted by the service are taken
apart as a receiving client would (the first part of multipart/signed byte
for byte, CRLF canonical; the armored message of multipart/encrypted) and
verified or decrypted by the tool. tool -> secmail: each tool's detached
signature or OpenPGP message is wrapped in RFC 3156 framing here, and the
service must say GREEN for an authenticated signer and decrypt. Keys:
Ed25519/Cv25519 (alice, each tool's own) and RSA-3072 (bob, Sequoia-made).
PGPainless runs on a JVM (~1.7 s a call): three calls in all.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from openpgp_rpc_support import (
    ALICE,
    BOB,
    DOMAIN,
    Cast,
    Person,
    cast,
    mail,
    multipart_parts,
    outer_headers,
    part_body,
    person,
    pgp_multipart_encrypted,
    pgp_multipart_signed,
    root_entity,
)
from pgp_support import GOSOP, PGPAINLESS, SQOP, GnuPG, Sop
from service_support import Client, sign, start, verify

from secmail.v1 import keys_pb2, message_security_pb2, verdict_pb2

pytestmark = pytest.mark.interop

V = verdict_pb2
M = message_security_pb2
OPENPGP = V.SCHEME_OPENPGP
BODY = "Bonjour,\r\n\r\nLe conseil de classe est jeudi. Accents : é à ç.\r\n".encode()
TOOLS = ["gpg", "sqop", "gosop"]


class GpgTool:
    """gpg driven like a SOP tool, in one throwaway home holding every key."""

    name = "gpg"

    def __init__(self) -> None:
        self.gpg = GnuPG()

    def _files(self, **files: bytes) -> dict[str, str]:
        out = {}
        for name, data in files.items():
            path = os.path.join(self.gpg.home, f"in-{name}")
            with open(path, "wb") as f:
                f.write(data)
            out[name] = path
        return out

    def verify(self, data: bytes, sig: bytes, signer: Person) -> bool:
        self.gpg.run("--import", input=signer.cert)
        f = self._files(sig=sig, data=data)
        status = self.gpg.run("--status-fd", "1", "--verify", f["sig"], f["data"], check=False).decode(
            errors="replace"
        )
        return any(
            line.startswith("[GNUPG:] VALIDSIG ") and line.split()[-1].lower() == signer.fingerprint
            for line in status.splitlines()
        )

    def decrypt(self, msg: bytes, key: Person, signer: Person) -> tuple[bytes, bool]:
        self.gpg.run("--import", input=key.tsk)
        self.gpg.run("--import", input=signer.cert)
        f = self._files(msg=msg)
        out = os.path.join(self.gpg.home, "out")
        status = self.gpg.run("--status-fd", "1", "--yes", "--output", out, "--decrypt", f["msg"]).decode(
            errors="replace"
        )
        with open(out, "rb") as fh:
            plain = fh.read()
        good = any(
            line.startswith("[GNUPG:] VALIDSIG ") and line.split()[-1].lower() == signer.fingerprint
            for line in status.splitlines()
        )
        return plain, good

    def sign(self, data: bytes, key: Person) -> bytes:
        self.gpg.run("--import", input=key.tsk)
        return self.gpg.run("--armor", "--local-user", key.fingerprint.upper(), "--detach-sign", input=data)

    def encrypt(self, data: bytes, recipients: list[Person], signer: Person) -> bytes:
        self.gpg.run("--import", input=signer.tsk)
        args = ["--armor", "--local-user", signer.fingerprint.upper(), "--sign"]
        for r in recipients:
            self.gpg.run("--import", input=r.cert)
            args += ["--recipient", r.fingerprint.upper()]
        return self.gpg.run(*args, "--encrypt", input=data)

    def generate(self, uid: str) -> bytes:
        fpr = self.gpg.gen_key(uid, "ed25519", "cv25519")
        return self.gpg.export_secret(fpr)

    def close(self) -> None:
        self.gpg.close()


@dataclass
class SopTool:
    sop: Sop

    @property
    def name(self) -> str:
        return self.sop.name

    def verify(self, data: bytes, sig: bytes, signer: Person) -> bool:
        try:
            out = self.sop("verify", "sig", "cert", input=data, files={"sig": sig, "cert": signer.cert})
        except AssertionError:
            return False
        return signer.fingerprint in out.decode().lower()

    def decrypt(self, msg: bytes, key: Person, signer: Person) -> tuple[bytes, bool]:
        plain, verifications = self.sop.decrypt_verified(key.tsk, signer.cert, msg)
        return plain, signer.fingerprint in verifications.decode().lower()

    def sign(self, data: bytes, key: Person) -> bytes:
        return self.sop("sign", "key", input=data, files={"key": key.tsk})

    def encrypt(self, data: bytes, recipients: list[Person], signer: Person) -> bytes:
        files = {"key": signer.tsk} | {f"cert{i}": r.cert for i, r in enumerate(recipients)}
        return self.sop(
            "encrypt",
            "--sign-with",
            "key",
            *[f"cert{i}" for i in range(len(recipients))],
            input=data,
            files=files,
        )

    def generate(self, uid: str) -> bytes:
        return self.sop("generate-key", uid)

    def close(self) -> None:
        pass


Tool = GpgTool | SopTool


def _make_tool(name: str) -> Tool:
    if name == "gpg":
        return GpgTool()
    sop = {"sqop": SQOP, "gosop": GOSOP, "pgpainless-cli": PGPAINLESS}[name]
    if not sop.available():
        pytest.skip(f"{name} is not installed")
    return SopTool(sop)


@pytest.fixture(scope="module", params=TOOLS)
def tool(request: pytest.FixtureRequest) -> Iterator[Tool]:
    t = _make_tool(request.param)
    yield t
    t.close()


@functools.cache
def _tool_person(name: str, tsk: bytes) -> Person:
    return person(tsk, f"{name.replace('-cli', '')}@{DOMAIN}")


@pytest.fixture(scope="module")
def tool_key(tool: Tool) -> Person:
    """The tool's own key (its default algorithms: Ed25519/Cv25519)."""
    address = f"{tool.name}@{DOMAIN}"
    return _tool_person(tool.name, tool.generate(f"Outil {tool.name} <{address}>"))


@pytest.fixture(scope="module")
def people() -> Cast:
    return cast()


@pytest.fixture(scope="module")
def world(people: Cast, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    server, c = start(tmp_path_factory.mktemp("openpgp-interop") / "data")
    for user, data in (
        (ALICE, people.alice.tsk),
        (BOB, people.bob.tsk),
        (BOB, people.alice.cert),
        (ALICE, people.bob.cert),
    ):
        c.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=data))
    yield c
    c.channel.close()
    server.stop(None)


def _import_cert(c: Client, user: str, p: Person) -> None:
    c.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=p.armored_cert))


def _who(people: Cast, name: str) -> Person:
    return people.alice if name == "alice" else people.bob


# --- secmail -> tool ---------------------------------------------------------


_SIGNED: dict[tuple[int, str], tuple[bytes, bytes]] = {}


def _signed_by(c: Client, signer: str) -> tuple[bytes, bytes]:
    """(the signed entity, its armored signature) of a message the service
    signed, as a receiving client extracts them (made once per signer)."""
    if (id(c), signer) not in _SIGNED:
        msg = mail(signer, BOB if signer == ALICE else ALICE, body=BODY)
        signed = sign(c, signer, msg, scheme=OPENPGP)
        entity, sig_part = multipart_parts(signed)
        assert b"\n" not in entity.replace(b"\r\n", b"")  # CRLF canonical
        _SIGNED[id(c), signer] = entity, part_body(sig_part)
    return _SIGNED[id(c), signer]


@pytest.mark.parametrize("signer", ["alice", "bob"])
def test_tool_verifies_secmail_signed_message(world: Client, people: Cast, tool: Tool, signer: str) -> None:
    p = _who(people, signer)
    entity, sig = _signed_by(world, p.address)
    assert tool.verify(entity, sig, p)
    tampered = entity.replace(b"Subject: Conseil de classe", b"Subject: Conseil de classe!")
    assert tampered != entity and not tool.verify(tampered, sig, p)


@pytest.mark.parametrize("sender", ["alice", "bob"])
def test_tool_decrypts_secmail_encrypted_message(
    world: Client, people: Cast, tool: Tool, tool_key: Person, sender: str
) -> None:
    p = _who(people, sender)
    _import_cert(world, p.address, tool_key)
    msg = mail(p.address, tool_key.address, body=BODY)
    enc = world.messages.Encrypt(
        M.EncryptRequest(user=p.address, message=msg, scheme=OPENPGP, sign=True)
    ).message
    _, data = multipart_parts(enc)
    plain, good = tool.decrypt(part_body(data), tool_key, p)
    plain = plain.replace(b"\r\n", b"\n")  # gosop writes LF line ends
    assert BODY.replace(b"\r\n", b"\n") in plain
    assert b"Subject: Conseil de classe" in plain  # the protected headers, for the tool's reader
    assert good, f"{tool.name} did not verify {sender}'s signature"


# --- tool -> secmail ---------------------------------------------------------


@pytest.mark.parametrize("key", ["own", "bob"])
def test_secmail_verifies_tool_signed_message(
    world: Client, people: Cast, tool: Tool, tool_key: Person, key: str
) -> None:
    signer = tool_key if key == "own" else people.bob
    reader = BOB if key == "own" else ALICE
    if key == "own":
        _import_cert(world, BOB, tool_key)
    entity = root_entity(mail(signer.address, reader, body=BODY))
    signed = pgp_multipart_signed(outer_headers(signer.address, reader), entity, tool.sign(entity, signer))
    resp = verify(world, reader, signed)
    v = resp.verdict
    assert v.banner == V.BANNER_GREEN, (tool.name, list(v.reasons))
    assert [s.fingerprint for s in v.signers] == [signer.fingerprint]
    assert BODY in resp.display_message
    tampered = signed.replace(b"jeudi", b"lundi")
    assert verify(world, reader, tampered).verdict.banner == V.BANNER_RED


@pytest.mark.parametrize("recipient", ["alice", "bob"])
def test_secmail_decrypts_tool_encrypted_message(
    world: Client, people: Cast, tool: Tool, tool_key: Person, recipient: str
) -> None:
    r = _who(people, recipient)
    _import_cert(world, r.address, tool_key)
    entity = root_entity(mail(tool_key.address, r.address, body=BODY))
    armored = tool.encrypt(entity, [r], tool_key)
    enc = pgp_multipart_encrypted(outer_headers(tool_key.address, r.address), armored)
    resp = world.messages.Decrypt(M.DecryptRequest(user=r.address, message=enc))
    v = resp.verdict
    assert v.lock and v.integrity_protected
    assert v.banner == V.BANNER_GREEN, (tool.name, list(v.reasons))
    assert [s.fingerprint for s in v.signers] == [tool_key.fingerprint]
    assert BODY in resp.display_message


# --- PGPainless: three calls --------------------------------------------------


def test_pgpainless_both_directions(world: Client, people: Cast) -> None:
    painless = _make_tool("pgpainless-cli")
    alice, bob = people.alice, people.bob
    # secmail -> PGPainless: the service's RSA (bob) signature.
    entity, sig = _signed_by(world, BOB)
    assert painless.verify(entity, sig, bob)
    # PGPainless -> secmail: a detached signature by alice's Ed25519 key...
    payload = root_entity(mail(ALICE, BOB, body=BODY))
    signed = pgp_multipart_signed(outer_headers(ALICE, BOB), payload, painless.sign(payload, alice))
    assert verify(world, BOB, signed).verdict.banner == V.BANNER_GREEN
    # ...and a message to bob (RSA) and alice, signed by alice inside.
    armored = painless.encrypt(payload, [bob, alice], alice)
    enc = pgp_multipart_encrypted(outer_headers(ALICE, BOB), armored)
    for reader in (BOB, ALICE):
        resp = world.messages.Decrypt(M.DecryptRequest(user=reader, message=enc))
        assert resp.verdict.lock and resp.verdict.banner == V.BANNER_GREEN, list(resp.verdict.reasons)
        assert BODY in resp.display_message
