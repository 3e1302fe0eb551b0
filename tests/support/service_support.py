"""Helpers for the gRPC tests: an in-process server on a fresh data directory, its stubs, and a cast of users."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from testpki import PKI, Identity, end_entity, make_pki

from secmail.service.app import Secmail, Settings
from secmail.service.server import ServerConfig, build_app, create_server
from secmail.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    message_security_pb2_grpc,
    trust_pb2,
    trust_pb2_grpc,
)


@dataclass
class Client:
    channel: grpc.Channel
    messages: message_security_pb2_grpc.MessageSecurityStub
    keys: keys_pb2_grpc.KeyServiceStub
    trust: trust_pb2_grpc.TrustServiceStub
    app: Secmail
    address: str


def start(data_dir: Path, settings: Settings | None = None) -> tuple[grpc.Server, Client]:
    app = build_app(ServerConfig(data_dir=data_dir, settings=settings or Settings()))
    server, port = create_server("127.0.0.1:0", app, threads=4)
    server.start()
    address = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
    )
    return server, Client(
        channel,
        message_security_pb2_grpc.MessageSecurityStub(channel),
        keys_pb2_grpc.KeyServiceStub(channel),
        trust_pb2_grpc.TrustServiceStub(channel),
        app,
        address,
    )


def client_fixture(tmp_path: Path) -> Iterator[Client]:
    server, c = start(tmp_path / "data")
    yield c
    c.channel.close()
    server.stop(None)


@dataclass(frozen=True)
class People:
    pki: PKI
    alice: Identity  # RSA-2048
    bob: Identity  # P-256
    carol: Identity  # Ed25519 signer


def make_people() -> People:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    pki = make_pki()
    return People(
        pki,
        end_entity(pki.intermediate, "alice@ac-besancon.fr"),
        end_entity(pki.intermediate, "bob@ac-besancon.fr", ec.generate_private_key(ec.SECP256R1())),
        end_entity(pki.intermediate, "carol@ac-besancon.fr", ed25519.Ed25519PrivateKey.generate()),
    )


def setup_academy(client: Client, people: People) -> Client:
    """A server where the académie CA is trusted and alice, bob and carol imported their .p12."""
    client.trust.ImportTrustBundle(
        trust_pb2.ImportTrustBundleRequest(name="ac-besancon", data=people.pki.bundle_pem)
    )
    for ident, user in ((people.alice, "alice"), (people.bob, "bob"), (people.carol, "carol")):
        client.keys.ImportKey(
            keys_pb2.ImportKeyRequest(user=f"{user}@ac-besancon.fr", data=ident.p12(b"pw"), passphrase="pw")
        )
    return client


def error_reason(exc: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call (asserting the domain)."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "no rich status"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "secmail.v1"
            return info.reason
    raise AssertionError("no ErrorInfo")


def sign(c: Client, user: str, msg: bytes, **kw: object) -> bytes:
    from secmail.v1 import message_security_pb2

    return c.messages.Sign(message_security_pb2.SignRequest(user=user, message=msg, **kw)).message  # type: ignore[arg-type]


def verify(c: Client, user: str, msg: bytes, **kw: object):  # type: ignore[no-untyped-def]
    from secmail.v1 import message_security_pb2

    return c.messages.Verify(message_security_pb2.VerifyRequest(user=user, message=msg, **kw))  # type: ignore[arg-type]
