"""The production listener: TLS and mutual TLS, callers and their rights,
bearer tokens, the health listener, and the refusals to start."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from access_support import (
    SERVER_NAME,
    TLSPKI,
    KeyPair,
    RecordingSink,
    Running,
    error_info,
    make_tls_pki,
    running,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_support import People
from testpki import message

from secmail.audit import AuditAction, AuditOutcome
from secmail.service.auth import RULES
from secmail.service.config import ConfigError, Role, parse_callers
from secmail.service.server import (
    ServerConfig,
    check_listener,
    create_health_server,
    serve,
    serving_health,
)
from secmail.v1 import keys_pb2, message_security_pb2, trust_pb2

LYON_TOKEN = "lyon-proxy-0123456789abcdef-this-is-a-test-token"

CALLERS = f"""
[[callers]]
name = "webmail-besancon"
roles = ["webmail"]
domains = ["ac-besancon.fr"]
cert_san = ["webmail.ac-besancon.fr"]

[[callers]]
name = "gateway"
role = "gateway"
domains = ["ac-besancon.fr"]
cert_subject = "CN=smtp-gateway,O=Rectorat de test"

[[callers]]
name = "admin-tools"
roles = ["admin"]
cert_san = "admin.rectorat.test"

[[callers]]
name = "webmail-lyon"
roles = ["webmail"]
domains = ["ac-lyon.fr"]
token_sha256 = "{hashlib.sha256(LYON_TOKEN.encode()).hexdigest()}"
"""


@pytest.fixture(scope="module")
def pki() -> TLSPKI:
    return make_tls_pki()


@pytest.fixture(scope="module")
def clients(pki: TLSPKI) -> dict[str, KeyPair]:
    return {
        "webmail": pki.client("webmail", "webmail.ac-besancon.fr"),
        "gateway": pki.client("smtp-gateway"),
        "admin": pki.client("admin", "admin.rectorat.test"),
        "stranger": pki.client("stranger", "stranger.ac-besancon.fr"),
        "other-ca": pki.client("webmail", "webmail.ac-besancon.fr", ca=pki.other_ca),
    }


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def server(tmp_path: Path, pki: TLSPKI, sink: RecordingSink) -> Iterator[Running]:
    with running(tmp_path / "data", callers_toml=CALLERS, tls=pki.write(tmp_path / "tls"), audit=sink) as run:
        yield run


def _verify_request(user: str) -> message_security_pb2.VerifyRequest:
    return message_security_pb2.VerifyRequest(user=user, message=message())


# --- mutual TLS ---------------------------------------------------------------


def test_right_client_certificate_works(server: Running, pki: TLSPKI, clients: dict[str, KeyPair]) -> None:
    admin = server.channel(pki=pki, client=clients["admin"])
    assert list(admin.trust.ListTrustAnchors(trust_pb2.ListTrustAnchorsRequest()).anchors) == []
    webmail = server.channel(pki=pki, client=clients["webmail"])
    verdict = webmail.messages.Verify(_verify_request("bob@ac-besancon.fr")).verdict
    assert not verdict.signers  # an unsigned message: evaluated, not refused


@pytest.mark.parametrize("who", [None, "other-ca"], ids=["no-certificate", "certificate-of-another-ca"])
def test_handshake_fails_without_a_certificate_of_the_client_ca(
    server: Running, pki: TLSPKI, clients: dict[str, KeyPair], who: str | None
) -> None:
    stubs = server.channel(pki=pki, client=clients[who] if who else None)
    with pytest.raises(grpc.RpcError) as err:
        stubs.messages.Verify(_verify_request("bob@ac-besancon.fr"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_of_the_ca_naming_no_caller_is_unauthenticated(
    server: Running, pki: TLSPKI, clients: dict[str, KeyPair], sink: RecordingSink
) -> None:
    stubs = server.channel(pki=pki, client=clients["stranger"])
    with pytest.raises(grpc.RpcError) as err:
        stubs.messages.Verify(_verify_request("bob@ac-besancon.fr"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(err.value).reason == "UNAUTHENTICATED"


def test_plaintext_client_cannot_talk_to_the_tls_listener(server: Running) -> None:
    stubs = server.channel()
    with pytest.raises(grpc.RpcError) as err:
        stubs.messages.Verify(_verify_request("bob@ac-besancon.fr"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


# --- rights -----------------------------------------------------------------


def test_webmail_of_one_domain_cannot_sign_for_another_and_it_is_audited(
    server: Running, pki: TLSPKI, clients: dict[str, KeyPair], sink: RecordingSink
) -> None:
    webmail = server.channel(pki=pki, client=clients["webmail"])
    request = message_security_pb2.SignRequest(
        user="Jean.Dupont@AC-LYON.fr", message=message(sender="jean.dupont@ac-lyon.fr")
    )
    with pytest.raises(grpc.RpcError) as err:
        webmail.messages.Sign(request)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(err.value)
    assert info.reason == "PERMISSION_DENIED"
    assert dict(info.metadata) == {
        "rpc": "/secmail.v1.MessageSecurity/Sign",
        "right": "sign",
        "caller": "webmail-besancon",
        "domain": "ac-lyon.fr",
    }
    [event] = sink.events
    assert event.action is AuditAction.PERMISSION_DENIED
    assert event.outcome is AuditOutcome.DENIED
    assert event.caller == "webmail-besancon"
    assert event.user == "Jean.Dupont@ac-lyon.fr"  # the domain folded, as the core does
    assert event.reason.startswith("PERMISSION_DENIED sign /secmail.v1.MessageSecurity/Sign")


def test_webmail_signs_for_its_own_domain(
    server: Running, pki: TLSPKI, clients: dict[str, KeyPair], people: People, sink: RecordingSink
) -> None:
    app_events = RecordingSink()
    server.app.audit = app_events
    webmail = server.channel(pki=pki, client=clients["webmail"])
    webmail.keys.ImportKey(
        keys_pb2.ImportKeyRequest(user="alice@ac-besancon.fr", data=people.alice.p12(b"pw"), passphrase="pw")
    )
    signed = webmail.messages.Sign(
        message_security_pb2.SignRequest(user="alice@ac-besancon.fr", message=message())
    ).message
    assert b"application/pkcs7-signature" in signed
    assert sink.events == []
    # The application's own audit events name the authenticated caller.
    assert [(e.action, e.caller, e.user) for e in app_events.events] == [
        (AuditAction.KEY_IMPORT, "webmail-besancon", "alice@ac-besancon.fr"),
        (AuditAction.SIGN, "webmail-besancon", "alice@ac-besancon.fr"),
    ]


def test_gateway_may_sign_for_its_domain_but_never_decrypt(
    server: Running, pki: TLSPKI, clients: dict[str, KeyPair], people: People, sink: RecordingSink
) -> None:
    admin = server.channel(pki=pki, client=clients["admin"])
    admin.keys.ImportKey(
        keys_pb2.ImportKeyRequest(user="alice@ac-besancon.fr", data=people.alice.p12(b"pw"), passphrase="pw")
    )
    gateway = server.channel(pki=pki, client=clients["gateway"])
    signed = gateway.messages.Sign(
        message_security_pb2.SignRequest(user="alice@ac-besancon.fr", message=message())
    ).message
    gateway.messages.Verify(message_security_pb2.VerifyRequest(user="bob@ac-besancon.fr", message=signed))
    with pytest.raises(grpc.RpcError) as err:
        gateway.messages.Decrypt(
            message_security_pb2.DecryptRequest(user="alice@ac-besancon.fr", message=signed)
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(err.value)
    assert (info.reason, info.metadata["right"], info.metadata["caller"]) == (
        "PERMISSION_DENIED",
        "decrypt",
        "gateway",
    )
    assert [(e.action, e.caller) for e in sink.events] == [(AuditAction.PERMISSION_DENIED, "gateway")]
    # Nor may it manage keys, even of its own domain.
    with pytest.raises(grpc.RpcError) as err:
        gateway.keys.ListKeys(keys_pb2.ListKeysRequest(user="alice@ac-besancon.fr"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_only_admin_manages_trust(
    server: Running, pki: TLSPKI, clients: dict[str, KeyPair], people: People
) -> None:
    webmail = server.channel(pki=pki, client=clients["webmail"])
    request = trust_pb2.ImportTrustBundleRequest(name="ac", data=people.pki.bundle_pem)
    with pytest.raises(grpc.RpcError) as err:
        webmail.trust.ImportTrustBundle(request)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(err.value).metadata["right"] == "manage trust"
    admin = server.channel(pki=pki, client=clients["admin"])
    assert len(admin.trust.ImportTrustBundle(request).anchors) == 2
    # The admin acts for no mailbox: signing is not among its rights.
    with pytest.raises(grpc.RpcError) as err:
        admin.messages.Sign(message_security_pb2.SignRequest(user="alice@ac-besancon.fr", message=message()))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_key_management_scope(
    server: Running, pki: TLSPKI, clients: dict[str, KeyPair], people: People
) -> None:
    webmail = server.channel(pki=pki, client=clients["webmail"])
    admin = server.channel(pki=pki, client=clients["admin"])
    cert = people.alice.cert_pem
    webmail.keys.ImportKey(keys_pb2.ImportKeyRequest(user="bob@ac-besancon.fr", data=cert))
    assert len(webmail.keys.ListKeys(keys_pb2.ListKeysRequest(user="bob@ac-besancon.fr")).keys) == 1
    for user in ("bob@ac-lyon.fr", "*"):
        with pytest.raises(grpc.RpcError) as err:
            webmail.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=cert))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, user
    for user in ("bob@ac-lyon.fr", "*"):
        admin.keys.ImportKey(keys_pb2.ImportKeyRequest(user=user, data=cert))
        assert len(admin.keys.ListKeys(keys_pb2.ListKeysRequest(user=user)).keys) == 1


def test_a_malformed_user_is_invalid_not_a_domain(
    server: Running, pki: TLSPKI, clients: dict[str, KeyPair]
) -> None:
    webmail = server.channel(pki=pki, client=clients["webmail"])
    with pytest.raises(grpc.RpcError) as err:
        webmail.messages.Verify(_verify_request("bob@ac-lyon.fr <bob@ac-besancon.fr>"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_every_rpc_has_an_access_rule() -> None:
    from secmail.v1 import keys_pb2, message_security_pb2, trust_pb2

    for module, service in (
        (message_security_pb2, "MessageSecurity"),
        (keys_pb2, "KeyService"),
        (trust_pb2, "TrustService"),
    ):
        descriptor = module.DESCRIPTOR.services_by_name[service]
        for method in descriptor.methods:
            rule = RULES.get(f"/{descriptor.full_name}/{method.name}")
            assert rule is not None, method.full_name
            assert rule.roles, f"{method.full_name} must not be open to everyone"


# --- audit sinks ------------------------------------------------------------


def test_denials_go_to_the_application_audit_sink(tmp_path: Path) -> None:
    with running(tmp_path / "data", callers_toml=CALLERS) as run:
        stubs = run.channel(token=f"Bearer {LYON_TOKEN}")
        recorder = RecordingSink()
        run.app.audit = recorder  # the SQL audit log in a real server
        with pytest.raises(grpc.RpcError):
            stubs.messages.Verify(_verify_request("bob@ac-besancon.fr"))
        assert [(e.action, e.caller, e.user) for e in recorder.events] == [
            (AuditAction.PERMISSION_DENIED, "webmail-lyon", "bob@ac-besancon.fr")
        ]


# --- bearer tokens ----------------------------------------------------------


def test_bearer_token_identifies_a_caller(tmp_path: Path) -> None:
    with running(tmp_path / "data", callers_toml=CALLERS) as run:
        lyon = run.channel(token=f"Bearer {LYON_TOKEN}")
        lyon.messages.Verify(_verify_request("claire@ac-lyon.fr"))
        # The scheme is case-insensitive (RFC 6750 §2.1 via RFC 9110 §11.1).
        run.channel(token=f"bearer {LYON_TOKEN}").messages.Verify(_verify_request("claire@ac-lyon.fr"))
        with pytest.raises(grpc.RpcError) as err:
            lyon.messages.Verify(_verify_request("bob@ac-besancon.fr"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer {LYON_TOKEN}x", f"Bearer {LYON_TOKEN[:-1]}", "Bearer ", f"Basic {LYON_TOKEN}"],
    ids=["none", "longer", "shorter", "empty", "basic"],
)
def test_wrong_or_missing_token_is_unauthenticated(tmp_path: Path, authorization: str | None) -> None:
    with running(tmp_path / "data", callers_toml=CALLERS) as run:
        stubs = run.channel(token=authorization)
        with pytest.raises(grpc.RpcError) as err:
            stubs.messages.Verify(_verify_request("claire@ac-lyon.fr"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(err.value).reason == "UNAUTHENTICATED"


def test_bad_token_is_refused_even_with_a_good_certificate(
    server: Running, pki: TLSPKI, clients: dict[str, KeyPair]
) -> None:
    stubs = server.channel(pki=pki, client=clients["webmail"], token="Bearer not-a-token")
    with pytest.raises(grpc.RpcError) as err:
        stubs.messages.Verify(_verify_request("bob@ac-besancon.fr"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_token_over_tls_without_client_certificates(tmp_path: Path, pki: TLSPKI) -> None:
    # A backend behind a TLS-terminating proxy that re-encrypts to secmail.
    files = pki.write(tmp_path / "tls", client_ca=False)
    with running(tmp_path / "data", callers_toml=CALLERS, tls=files) as run:
        stubs = run.channel(pki=pki, token=f"Bearer {LYON_TOKEN}")
        stubs.messages.Verify(_verify_request("claire@ac-lyon.fr"))
        with pytest.raises(grpc.RpcError) as err:
            run.channel(pki=pki).messages.Verify(_verify_request("claire@ac-lyon.fr"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- development mode -------------------------------------------------------


def test_without_callers_every_local_caller_is_admin_and_webmail(tmp_path: Path, people: People) -> None:
    with running(tmp_path / "data") as run:
        stubs = run.channel()
        stubs.trust.ImportTrustBundle(
            trust_pb2.ImportTrustBundleRequest(name="ac", data=people.pki.bundle_pem)
        )
        stubs.keys.ImportKey(keys_pb2.ImportKeyRequest(user="*", data=people.alice.cert_pem))
        stubs.messages.Verify(_verify_request("anyone@any-domain.example"))


# --- health listener --------------------------------------------------------


def test_health_listener_is_plaintext_and_serves_health_only(tmp_path: Path) -> None:
    health_server, port = create_health_server("127.0.0.1:0", serving_health())
    health_server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            from secmail.v1 import message_security_pb2_grpc

            with pytest.raises(grpc.RpcError) as err:
                message_security_pb2_grpc.MessageSecurityStub(channel).Verify(
                    _verify_request("bob@ac-besancon.fr"), timeout=5
                )
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        health_server.stop(None)


# --- refusals to start ------------------------------------------------------


def _serve(config: ServerConfig) -> tuple[int, str]:
    messages: list[str] = []
    code = serve(config, err=messages.append)
    return code, "\n".join(messages)


def test_non_loopback_without_tls_refuses(tmp_path: Path) -> None:
    code, text = _serve(ServerConfig(address="0.0.0.0:50051", data_dir=tmp_path / "data"))
    assert code == 2
    assert "without TLS" in text
    assert not (tmp_path / "data").exists(), "nothing is created before the checks pass"


def test_non_loopback_with_tls_but_no_callers_file_refuses(tmp_path: Path, pki: TLSPKI) -> None:
    files = pki.write(tmp_path / "tls")
    config = ServerConfig(
        address="[::]:50051",
        data_dir=tmp_path / "data",
        tls_cert=files.cert,
        tls_key=files.key,
        tls_client_ca=files.client_ca,
    )
    code, text = _serve(config)
    assert code == 2
    assert "without --callers" in text
    (tmp_path / "callers.toml").write_text(CALLERS)
    with_callers = ServerConfig(
        address="[::]:50051",
        tls_cert=files.cert,
        tls_key=files.key,
        tls_client_ca=files.client_ca,
        callers_file=tmp_path / "callers.toml",
        health_address="0.0.0.0:50052",
    )
    assert check_listener(with_callers) is None


def test_tls_key_not_matching_the_certificate_refuses(tmp_path: Path, pki: TLSPKI) -> None:
    files = pki.write(tmp_path / "tls")
    files.key.write_bytes(pki.ca.key_pem)
    code, text = _serve(
        ServerConfig(
            address="127.0.0.1:0", data_dir=tmp_path / "data", tls_cert=files.cert, tls_key=files.key
        )
    )
    assert code == 2
    assert "is not the key of the certificate" in text


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (ServerConfig(tls_cert=Path("/x.crt")), "go together"),
        (ServerConfig(tls_client_ca=Path("/ca.crt")), "needs --tls-cert"),
        (ServerConfig(health_address="127.0.0.1:50051"), "must differ"),
    ],
    ids=["cert-without-key", "client-ca-without-cert", "same-health-address"],
)
def test_inconsistent_flags_refuse(config: ServerConfig, expected: str) -> None:
    problem = check_listener(config)
    assert problem is not None and expected in problem


def test_bad_callers_file_refuses(tmp_path: Path) -> None:
    path = tmp_path / "callers.toml"
    path.write_text('[[callers]]\nname = "x"\nroles = ["webmail"]\ndomain = ["ac-besancon.fr"]\n')
    code, text = _serve(ServerConfig(data_dir=tmp_path / "data", callers_file=path))
    assert code == 2
    assert "unknown key(s) domain" in text


# --- callers file -----------------------------------------------------------


def test_callers_file_is_parsed() -> None:
    # Top-level keys come before the first table (TOML puts them in it otherwise).
    config = parse_callers('harvest_domains = ["AC-Besancon.fr"]\n' + CALLERS)
    assert config.harvest_domains == {"ac-besancon.fr"}
    by_name = {c.name: c for c in config.callers}
    assert by_name["gateway"].roles == {Role.GATEWAY}
    assert by_name["admin-tools"].cert_san == {"admin.rectorat.test"}
    assert by_name["webmail-lyon"].token_sha256 == hashlib.sha256(LYON_TOKEN.encode()).digest()
    assert "token" not in repr(by_name["webmail-lyon"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('name = "a"\nroles = ["webmail"]\ncert_san = "a"', "need domains"),
        ('name = "a"\nroles = ["root"]\ncert_san = "a"', "unknown role"),
        ('name = "a"\nroles = ["admin"]', "exactly one kind"),
        (
            'name = "a"\nroles = ["admin"]\ncert_san = "a"\ntoken_sha256 = "' + "0" * 64 + '"',
            "exactly one kind",
        ),
        ('name = "a"\nroles = ["admin"]\ntoken_sha256 = "abc"', "64 hex digits"),
        ('name = "a"\nroles = ["admin"]\ncert_subject = "not a name"', "RFC 4514"),
        ('name = "a"\nroles = ["webmail"]\ndomains = ["@ac-lyon.fr"]\ncert_san = "a"', "not a domain"),
        ('name = "a"\nroles = ["admin"]\ncert_san = "a"\nrate_per_second = 0', "positive"),
        ('name = "a"\nroles = ["admin"]\ncert_san = "a"\nburst = 1.5', "positive integer"),
    ],
)
def test_callers_file_errors(body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_callers(f"[[callers]]\n{body}\n")
    assert expected in err.value.message


def test_callers_file_refuses_duplicates() -> None:
    one = '[[callers]]\nname = "a"\nroles = ["admin"]\ncert_san = "x.test"\n'
    with pytest.raises(ConfigError, match="named"):
        parse_callers(one + one)
    with pytest.raises(ConfigError, match="same certificate identity"):
        parse_callers(one + one.replace('"a"', '"b"'))


def test_a_certificate_matching_two_callers_is_refused(
    tmp_path: Path, pki: TLSPKI, clients: dict[str, KeyPair]
) -> None:
    overlapping = CALLERS + (
        '\n[[callers]]\nname = "also-webmail"\nroles = ["admin"]\n'
        'cert_san = ["webmail.ac-besancon.fr", "other.test"]\n'
    )
    with running(tmp_path / "data", callers_toml=overlapping, tls=pki.write(tmp_path / "tls")) as run:
        stubs = run.channel(pki=pki, client=clients["webmail"])
        with pytest.raises(grpc.RpcError) as err:
            stubs.messages.Verify(_verify_request("bob@ac-besancon.fr"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- certificate rotation ---------------------------------------------------


def _presented_certificate(port: int, pki: TLSPKI, client: KeyPair, tmp_path: Path) -> bytes:
    (tmp_path / "client.crt").write_bytes(client.cert_pem)
    (tmp_path / "client.key").write_bytes(client.key_pem)
    ctx = ssl.create_default_context(cadata=pki.ca.cert_pem.decode())
    ctx.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_rotated_certificate_is_served_without_restart(
    tmp_path: Path, pki: TLSPKI, clients: dict[str, KeyPair]
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    files = pki.write(tmp_path / "tls")
    with running(tmp_path / "data", callers_toml=CALLERS, tls=files) as run:
        first = _presented_certificate(run.port, pki, clients["admin"], tmp_path)
        assert first == pki.server.cert.public_bytes(Encoding.DER)
        # Half-rotated (new certificate, old key): refused, the old pair stays.
        renewed = pki.new_server_cert()
        files.cert.write_bytes(renewed.cert_pem + pki.ca.cert_pem)
        assert _presented_certificate(run.port, pki, clients["admin"], tmp_path) == first
        files.key.write_bytes(renewed.key_pem)
        assert _presented_certificate(run.port, pki, clients["admin"], tmp_path) == renewed.cert.public_bytes(
            Encoding.DER
        )
        stubs = run.channel(pki=pki, client=clients["admin"])
        stubs.trust.ListTrustAnchors(trust_pb2.ListTrustAnchorsRequest())


# --- the command line, end to end --------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_secmail_serve_with_tls_callers_and_health_port(
    tmp_path: Path, pki: TLSPKI, clients: dict[str, KeyPair], people: People
) -> None:
    files = pki.write(tmp_path / "tls")
    callers = tmp_path / "callers.toml"
    callers.write_text(CALLERS)
    port, health_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "secmail.cli",
            "serve",
            f"--address=127.0.0.1:{port}",
            f"--health-address=127.0.0.1:{health_port}",
            f"--data-dir={tmp_path / 'data'}",
            "--workers=1",
            f"--tls-cert={files.cert}",
            f"--tls-key={files.key}",
            f"--tls-client-ca={files.client_ca}",
            f"--callers={callers}",
            "--no-network-revocation",
            "--harvest-domain=ac-besancon.fr",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
                assert proc.poll() is None, proc.communicate()[0].decode()
                assert time.monotonic() < deadline, "the server did not become healthy"
                time.sleep(0.2)
        # The admin tools: the secmail CLI with the admin's client certificate.
        (tmp_path / "admin.crt").write_bytes(clients["admin"].cert_pem)
        (tmp_path / "admin.key").write_bytes(clients["admin"].key_pem)
        (tmp_path / "bundle.pem").write_bytes(people.pki.bundle_pem)
        tls_args = [
            f"--server=127.0.0.1:{port}",
            f"--tls-ca={files.client_ca}",
            f"--tls-cert={tmp_path / 'admin.crt'}",
            f"--tls-key={tmp_path / 'admin.key'}",
        ]
        cli = [sys.executable, "-m", "secmail.cli"]
        imported = subprocess.run(
            [*cli, "ca", "import", str(tmp_path / "bundle.pem"), "--name=ac", *tls_args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert imported.returncode == 0, imported.stderr
        assert "Test Root CA" in imported.stdout
        # Without the client certificate the same command cannot connect.
        refused = subprocess.run(
            [*cli, "ca", "list", *tls_args[:2]], capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 1
        assert "UNAVAILABLE" in refused.stderr
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, out
    assert "TLS, client certificates required" in out
    assert "--no-network-revocation" in out


def test_cli_never_sends_a_token_in_the_clear_off_loopback() -> None:
    from secmail.service.tls import open_channel

    with pytest.raises(ConfigError, match="without TLS"):
        open_channel("webmail.ac-besancon.fr:50051", token="secret")
    open_channel("127.0.0.1:50051", token="secret").close()
    open_channel("secmail.ac-besancon.fr:50051", tls=True, token="secret").close()


def test_cli_sends_a_bearer_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from secmail.cli import main

    token_file = tmp_path / "token"
    with running(tmp_path / "data", callers_toml=CALLERS) as run:
        base = ["keys", "list", "--user=claire@ac-lyon.fr", f"--server={run.address}"]
        token_file.write_text(LYON_TOKEN + "\n")
        assert main([*base, f"--token-file={token_file}"]) == 0
        token_file.write_text("not-the-token\n")
        assert main([*base, f"--token-file={token_file}"]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        assert main(base) == 1


def test_reflection_needs_an_identified_caller(tmp_path: Path) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with running(tmp_path / "data", callers_toml=CALLERS) as run:
        with grpc.insecure_channel(run.address) as channel:
            anonymous = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                list(anonymous.ServerReflectionInfo(iter([request]), timeout=10))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Health stays open to everyone, probes included.
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            known = reflection_pb2_grpc.ServerReflectionStub(
                grpc.intercept_channel(channel, _Metadata(("authorization", f"Bearer {LYON_TOKEN}")))
            )
            [reply] = list(known.ServerReflectionInfo(iter([request]), timeout=10))
            names = {s.name for s in reply.list_services_response.service}
            assert "secmail.v1.MessageSecurity" in names


class _Metadata(grpc.StreamStreamClientInterceptor):
    def __init__(self, pair: tuple[str, str]) -> None:
        self._pair = pair

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        details = client_call_details._replace(metadata=[*(client_call_details.metadata or ()), self._pair])
        return continuation(details, request_iterator)
