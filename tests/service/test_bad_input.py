"""Hostile or broken input gets a clear status, promptly, and the server keeps serving."""

from __future__ import annotations

import base64
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_support import Client, People, error_reason, sign
from testpki import message

from secmail.v1 import keys_pb2, message_security_pb2, trust_pb2


def _nested(depth: int) -> bytes:
    msg = b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    for i in range(depth):
        b = f"b{i}".encode()
        msg = (
            b'Content-Type: multipart/mixed; boundary="'
            + b
            + b'"\r\n\r\n--'
            + b
            + b"\r\n"
            + msg
            + b"\r\n--"
            + b
            + b"--\r\n"
        )
    return b"From: a@ac-besancon.fr\r\nMIME-Version: 1.0\r\n" + msg


def _smime_opaque(body: bytes) -> bytes:
    return (
        b"From: alice@ac-besancon.fr\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    )


def _healthy(c: Client) -> bool:
    stub = health_pb2_grpc.HealthStub(c.channel)
    return (
        stub.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    )


def _cases(signed: bytes) -> dict[str, tuple[bytes, str]]:
    body = signed.split(b"\r\n\r\n", 1)[1]
    der_b64 = b"".join(body.split(b"smime.p7s")[-1].split(b"\r\n\r\n", 1)[1].split(b"\r\n--")[0].split())
    der = base64.b64decode(der_b64)
    truncated = base64.encodebytes(der[: len(der) // 2]).replace(b"\n", b"\r\n")
    return {
        "truncated-cms": (_smime_opaque(truncated), "INVALID_MESSAGE"),
        "garbage-base64": (_smime_opaque(b"!!!not base64 at all$$$\r\n"), "INVALID_MESSAGE"),
        "deep-multipart": (_nested(10_000), "MESSAGE_TOO_LARGE"),
        "not-mime": (bytes(range(256)) * 10, "INVALID_MESSAGE"),
        "empty": (b"", "INVALID_MESSAGE"),
        "signed-wrong-parts": (
            b'From: a@ac-besancon.fr\r\nContent-Type: multipart/signed; protocol="application/pkcs7-signature";'
            b' boundary="x"\r\n\r\n--x\r\n\r\nonly one part\r\n--x--\r\n',
            "INVALID_MESSAGE",
        ),
    }


@pytest.mark.parametrize(
    "case", ["truncated-cms", "garbage-base64", "deep-multipart", "not-mime", "empty", "signed-wrong-parts"]
)
def test_bad_message_is_invalid_argument(academy: Client, case: str) -> None:
    signed = sign(academy, "alice@ac-besancon.fr", message())
    data, reason = _cases(signed)[case]
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        academy.messages.Verify(message_security_pb2.VerifyRequest(user="bob@ac-besancon.fr", message=data))
    assert time.monotonic() - started < 10  # "promptly": generous, this is a hang guard not a benchmark
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == reason
    assert "Traceback" not in (err.value.details() or "")
    assert _healthy(academy)


def test_huge_message_is_refused(tmp_path: object) -> None:
    from pathlib import Path

    from service_support import start

    from secmail.service.app import Settings

    server, c = start(Path(str(tmp_path)) / "d", Settings(max_message_bytes=1 << 20))
    try:
        with pytest.raises(grpc.RpcError) as err:
            c.messages.Verify(
                message_security_pb2.VerifyRequest(
                    user="bob@ac-besancon.fr", message=message(body=b"x" * (3 << 19))
                )
            )
        assert error_reason(err.value) == "MESSAGE_TOO_LARGE"
        assert _healthy(c)
    finally:
        c.channel.close()
        server.stop(None)


def test_wrong_p12_passphrase(client: Client, people: People) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.keys.ImportKey(
            keys_pb2.ImportKeyRequest(
                user="alice@ac-besancon.fr", data=people.alice.p12(b"right"), passphrase="wrong-Passw0rd"
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "WRONG_PASSPHRASE"
    assert "wrong-Passw0rd" not in (err.value.details() or "")
    assert list(client.keys.ListKeys(keys_pb2.ListKeysRequest(user="alice@ac-besancon.fr")).keys) == []
    assert _healthy(client)


@pytest.mark.parametrize(
    ("call", "reason", "code"),
    [
        ("sign-unknown-user", "KEY_NOT_FOUND", grpc.StatusCode.NOT_FOUND),
        ("bad-user", "INVALID_MESSAGE", grpc.StatusCode.INVALID_ARGUMENT),
        ("delete-missing", "KEY_NOT_FOUND", grpc.StatusCode.NOT_FOUND),
        ("garbage-key", "INVALID_KEY", grpc.StatusCode.INVALID_ARGUMENT),
        ("garbage-bundle", "INVALID_CERTIFICATE", grpc.StatusCode.INVALID_ARGUMENT),
        ("decrypt-no-key", "KEY_NOT_FOUND", grpc.StatusCode.NOT_FOUND),
    ],
)
def test_errors_have_reasons(academy: Client, call: str, reason: str, code: grpc.StatusCode) -> None:
    enc = academy.messages.Encrypt(
        message_security_pb2.EncryptRequest(user="alice@ac-besancon.fr", message=message())
    ).message
    calls = {
        "sign-unknown-user": lambda: sign(
            academy, "nobody@ac-besancon.fr", message(sender="nobody@ac-besancon.fr")
        ),
        "bad-user": lambda: sign(academy, "not an address", message()),
        "delete-missing": lambda: academy.keys.DeleteKey(
            keys_pb2.DeleteKeyRequest(user="alice@ac-besancon.fr", key_id="00")
        ),
        "garbage-key": lambda: academy.keys.ImportKey(
            keys_pb2.ImportKeyRequest(user="alice@ac-besancon.fr", data=b"\x30\x03junk")
        ),
        "garbage-bundle": lambda: academy.trust.ImportTrustBundle(
            trust_pb2.ImportTrustBundleRequest(name="x", data=b"junk")
        ),
        "decrypt-no-key": lambda: academy.messages.Decrypt(
            message_security_pb2.DecryptRequest(user="eve@ac-besancon.fr", message=enc)
        ),
    }
    with pytest.raises(grpc.RpcError) as err:
        calls[call]()
    assert (err.value.code(), error_reason(err.value)) == (code, reason)
