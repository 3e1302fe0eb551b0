"""Helpers for the property suite: a server with a small cast, genuine
base messages, and mutations that can be drawn independently of them."""

from __future__ import annotations

import base64
import email.utils
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from service_support import Client, make_people, start
from testpki import Identity, end_entity

from secmail.mime.entity import canonicalize
from secmail.pgp import _backend
from secmail.v1 import keys_pb2, message_security_pb2, trust_pb2, verdict_pb2

V = verdict_pb2
CRLF = b"\r\n"
DOMAIN = "ac-besancon.fr"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
EVE = f"eve@{DOMAIN}"
#: Must never leave the service unless the ciphertext was authenticated.
MARKER = b"PROP-PLAINTEXT-5b1e07"


@dataclass(frozen=True, repr=False)
class Base:
    """A genuine message and what a GREEN verdict on a variant must keep."""

    name: str
    raw: bytes
    encrypted: bool
    #: The exact bytes the root signature covers: the first part of a
    #: multipart/signed, the eContent of opaque signed-data; empty for an
    #: encrypted base (its signed bytes are inside the ciphertext, and only
    #: the displayed body can tell them).
    covered: bytes
    #: The body of display_message for the genuine message.
    display_body: bytes

    def covered_in(self, mutated: bytes) -> bool:
        """Whether the signed bytes are still in ``mutated`` as they were,
        line endings aside: a receiver turns bare CR and LF into CRLF before
        verifying (RFC 8551 §3.1.1, RFC 3156 §5), as mail transports may
        change them, so a cut CR of a CRLF leaves the signed bytes intact."""
        if not self.covered:
            return True
        if self.name.endswith("opaque"):
            try:
                blob = base64.b64decode(b"".join(mutated.split(b"\r\n\r\n", 1)[1].split()), validate=True)
            except (ValueError, IndexError):
                return False
            return self.covered in blob
        return self.covered in canonicalize(mutated)


@dataclass(repr=False)
class World:
    client: Client
    bases: dict[str, Base]

    def __repr__(self) -> str:  # hypothesis prints the arguments of failures
        return f"World({sorted(self.bases)})"


def _message(subject: str) -> bytes:
    return (
        (
            f"From: Alice <{ALICE}>\r\nTo: Bob <{BOB}>\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.format_datetime(datetime.now(UTC))}\r\nMessage-ID: <{os.urandom(6).hex()}@{DOMAIN}>\r\n"
            'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
            "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour Bob, "
        ).encode()
        + MARKER
        + (
            b"\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Bonjour <b>Bob</b></p>\r\n--alt--\r\n"
        )
    )


def _body(display: bytes) -> bytes:
    return display.partition(b"\r\n\r\n")[2]


def _first_part(signed: bytes) -> bytes:
    boundary = re.search(rb'boundary="([^"]+)"', signed)
    assert boundary
    delim = b"\r\n--" + boundary.group(1)
    start = signed.index(b"--" + boundary.group(1) + CRLF) + len(boundary.group(1)) + 4
    return signed[start : signed.index(delim, start)]


def _econtent(raw: bytes) -> bytes:
    from asn1crypto import cms

    der = base64.b64decode(b"".join(raw.rsplit(b"\r\n\r\n", 1)[1].split()))
    content = cms.ContentInfo.load(der)["content"]["encap_content_info"]["content"].native
    assert isinstance(content, bytes)
    return content


def make_world(data_dir: Path) -> Iterator[World]:
    people = make_people()
    eve = end_entity(people.pki.intermediate, EVE)
    server, client = start(data_dir)
    client.trust.ImportTrustBundle(
        trust_pb2.ImportTrustBundleRequest(name="academie", data=people.pki.bundle_pem)
    )
    identities: dict[str, Identity] = {ALICE: people.alice, BOB: people.bob, EVE: eve}
    pgp = {u: _backend.generate_tsk([f"{u.split('@')[0].title()} <{u}>"]) for u in identities}
    for user, ident in identities.items():
        client.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=ident.p12(b"pw"), passphrase="pw"))
        client.keys.ImportKey(
            keys_pb2.ImportKeyRequest(user=user, data=_backend.armor(pgp[user], "secret-key"))
        )
        for other, tsk in pgp.items():
            if other != user:
                cert = _backend.armor(_backend.public_cert(tsk), "public-key")
                client.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=cert))

    bases: dict[str, Base] = {}
    for scheme_name, scheme in (("smime", V.SCHEME_SMIME), ("openpgp", V.SCHEME_OPENPGP)):
        for opaque in (False, True) if scheme == V.SCHEME_SMIME else (False,):
            name = f"{scheme_name}-{'opaque' if opaque else 'signed'}"
            raw = client.messages.Sign(
                message_security_pb2.SignRequest(
                    user=ALICE, message=_message(name), scheme=scheme, opaque=opaque
                )
            ).message
            resp = client.messages.Verify(message_security_pb2.VerifyRequest(user=BOB, message=raw))
            assert resp.verdict.banner == V.BANNER_GREEN, name
            covered = _econtent(raw) if opaque else _first_part(raw)
            bases[name] = Base(name, raw, False, covered, _body(resp.display_message))
        name = f"{scheme_name}-signed+encrypted"
        raw = client.messages.Encrypt(
            message_security_pb2.EncryptRequest(user=ALICE, message=_message(name), scheme=scheme, sign=True)
        ).message
        assert MARKER not in raw
        dresp = client.messages.Decrypt(message_security_pb2.DecryptRequest(user=BOB, message=raw))
        assert dresp.verdict.banner == V.BANNER_GREEN and dresp.verdict.lock, name
        bases[name] = Base(name, raw, True, b"", _body(dresp.display_message))
    try:
        yield World(client, bases)
    finally:
        client.channel.close()
        server.stop(None)


# --- calling the service ----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    verdict: verdict_pb2.Verdict | None
    display: bytes
    error: grpc.RpcError | None


def call(client: Client, raw: bytes, *, decrypt: bool) -> Outcome:
    try:
        if decrypt:
            resp = client.messages.Decrypt(message_security_pb2.DecryptRequest(user=BOB, message=raw))
        else:
            resp = client.messages.Verify(message_security_pb2.VerifyRequest(user=BOB, message=raw))
    except grpc.RpcError as err:
        return Outcome(None, b"", err)
    return Outcome(resp.verdict, resp.display_message, None)


def error_reason(err: grpc.RpcError) -> str:
    """The ErrorInfo reason; fails when the status carries none."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)
    assert status is not None, f"no rich status: {err.code()}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "secmail.v1"
            return info.reason
    raise AssertionError("no ErrorInfo")


# --- mutations ------------------------------------------------------------------------------

#: A mutation: message bytes in, message bytes out.
Mutation = Callable[[bytes], bytes]


def _at(data: bytes, fraction: float) -> int:
    return min(len(data) - 1, int(fraction * len(data)))


def flip(fraction: float, mask: int) -> Mutation:
    def apply(data: bytes) -> bytes:
        i = _at(data, fraction)
        return data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :]

    apply.__name__ = f"flip({fraction:.4f},{mask:#x})"
    return apply


def cut(fraction: float, length: int) -> Mutation:
    def apply(data: bytes) -> bytes:
        i = _at(data, fraction)
        return data[:i] + data[i + length :]

    apply.__name__ = f"cut({fraction:.4f},{length})"
    return apply


def insert(fraction: float, chunk: bytes) -> Mutation:
    def apply(data: bytes) -> bytes:
        i = _at(data, fraction)
        return data[:i] + chunk + data[i:]

    apply.__name__ = f"insert({fraction:.4f},{chunk!r})"
    return apply


def _header_lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return re.split(rb"\r\n(?![ \t])", head), body


def header_edit(fraction: float, action: str, value: bytes) -> Mutation:
    """Replace, drop, duplicate or add an outer header field."""

    def apply(data: bytes) -> bytes:
        fields, body = _header_lines(data)
        i = min(len(fields) - 1, int(fraction * len(fields)))
        name = fields[i].split(b":", 1)[0]
        if action == "replace":
            fields[i] = name + b": " + value
        elif action == "drop":
            del fields[i]
        elif action == "duplicate":
            fields.insert(i, fields[i])
        else:
            fields.insert(i, value)
        return CRLF.join(fields) + b"\r\n\r\n" + body

    apply.__name__ = f"header_edit({fraction:.3f},{action},{value!r})"
    return apply


def renest(how: str) -> Mutation:
    """MIME re-nesting of the root entity."""

    def apply(data: bytes) -> bytes:
        fields, body = _header_lines(data)
        outer = [f for f in fields if not f.lower().startswith((b"content-", b"mime-version"))]
        content = [f for f in fields if f.lower().startswith(b"content-")]
        entity = CRLF.join(content) + b"\r\n\r\n" + body
        text = b"Content-Type: text/plain\r\n\r\nVous etes renvoye.\r\n"
        if how == "mixed-prepend":
            parts = [text, entity]
        elif how == "mixed-append":
            parts = [entity, text]
        elif how == "rfc822":
            parts = [text, b"Content-Type: message/rfc822\r\n\r\n" + data]
        elif how == "related":
            parts = [b'Content-Type: text/html\r\n\r\n<img src="cid:x">\r\n', b"Content-ID: <x>\r\n" + entity]
        else:  # "signed-in-signed": the root entity as the signed part of a bogus multipart/signed
            parts = [
                entity,
                b"Content-Type: application/pkcs7-signature\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQExADALBgkqhkiG9w0BBwGggCSABAAAAAAAAKCAAAAAAAAAMQAAAAAAAAAAAAAA\r\n",
            ]
        sub = (
            'signed; protocol="application/pkcs7-signature"'
            if how == "signed-in-signed"
            else how.split("-")[0]
        )
        sub = "mixed" if sub == "rfc822" else sub
        b = b"prop-" + os.urandom(4).hex().encode()
        mp = b"".join(b"--" + b + CRLF + p + CRLF for p in parts) + b"--" + b + b"--\r\n"
        head = f'Content-Type: multipart/{sub}; boundary="{b.decode()}"'.encode()
        return CRLF.join([*outer, b"MIME-Version: 1.0", head]) + b"\r\n\r\n" + mp

    apply.__name__ = f"renest({how})"
    return apply
