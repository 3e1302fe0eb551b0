"""The ``secmail`` command: run the server, and talk to a running one.

Everything but ``serve``, ``db``, ``admin`` and ``audit`` is a gRPC client
of ``--server`` (default the local server), so admins use exactly the API
the webmails use; those four work on the database directly, on a host that
can reach it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_SERVER = os.environ.get("SECMAIL_SERVER", "127.0.0.1:50051")


def _channel(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from secmail.service.tls import open_channel

    token = Path(args.token_file).read_text().strip() if args.token_file else None
    return open_channel(
        args.server,
        tls=args.tls,
        ca=Path(args.tls_ca) if args.tls_ca else None,
        cert=Path(args.tls_cert) if args.tls_cert else None,
        key=Path(args.tls_key) if args.tls_key else None,
        token=token,
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
    )


def _scheme(name: str) -> Any:
    from secmail.v1 import verdict_pb2

    return verdict_pb2.SCHEME_OPENPGP if name == "openpgp" else verdict_pb2.SCHEME_SMIME


def _error_text(exc: Exception) -> str:
    import grpc
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    if not isinstance(exc, grpc.RpcError):
        return str(exc)
    status = rpc_status.from_call(exc)
    reason = ""
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason = info.reason
                if info.metadata:
                    reason += " " + ", ".join(f"{k}={v}" for k, v in sorted(info.metadata.items()))
    return f"{exc.code().name}: {exc.details()} [{reason}]"


def _print_verdict(verdict, *, json_out: bool) -> None:  # type: ignore[no-untyped-def]
    from google.protobuf import json_format

    if json_out:
        print(json_format.MessageToJson(verdict))
        return
    from secmail.v1 import verdict_pb2

    print(f"banner:    {verdict_pb2.Banner.Name(verdict.banner).removeprefix('BANNER_')}")
    print(f"lock:      {'yes' if verdict.lock else 'no'}")
    print(
        f"signature: {verdict_pb2.SignatureStatus.Name(verdict.signature).removeprefix('SIGNATURE_STATUS_')}"
    )
    print(f"coverage:  {verdict_pb2.Coverage.Name(verdict.coverage).removeprefix('COVERAGE_')}")
    if verdict.from_address:
        print(f"from:      {verdict.from_address}")
    for signer in verdict.signers:
        status = verdict_pb2.SignatureStatus.Name(signer.status).removeprefix("SIGNATURE_STATUS_")
        addrs = ", ".join(signer.verified_addresses) or "-"
        print(f"signer:    {status} {addrs} {signer.fingerprint[:16]} {signer.algorithm}")
    for text in verdict.reason_texts:
        print(f"reason:    {verdict_pb2.Reason.Name(text.reason).removeprefix('REASON_')}: {text.text}")
    print(f"policy:    {verdict.policy}")


def cmd_serve(args: argparse.Namespace) -> int:
    from secmail.service.app import Settings
    from secmail.service.server import ServerConfig, serve

    settings = Settings(
        max_message_bytes=args.max_message_mb * 1024 * 1024,
        smime_authenticated_encryption=not args.smime_cbc,
        smime_rsa_oaep=not args.smime_rsa_pkcs1v15,
    )
    config = ServerConfig(
        address=args.address,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        database_url=args.database_url,
        master_key_file=Path(args.master_key_file) if args.master_key_file else None,
        workers=args.workers or os.cpu_count() or 1,
        threads=args.threads,
        worker_affinity=args.worker_affinity,
        settings=settings,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        tls_client_ca=Path(args.tls_client_ca) if args.tls_client_ca else None,
        health_address=args.health_address,
        callers_file=Path(args.callers) if args.callers else None,
        network_revocation=not args.no_network_revocation,
        harvest_domains=tuple(args.harvest_domain or ()),
        master_key_pkcs11=_pkcs11_master_key(args),
        previous_master_key_files=tuple(Path(f) for f in args.previous_master_key_file or ()),
    )
    return serve(config)


def _pkcs11_master_key(args: argparse.Namespace) -> Any:
    if not args.master_key_pkcs11:
        return None
    if not args.pkcs11_module or not args.pkcs11_token:
        raise SystemExit("secmail serve: --master-key-pkcs11 needs --pkcs11-module and --pkcs11-token")
    from secmail.keystore.admin import pkcs11_config

    return pkcs11_config(args)


def cmd_ca_import(args: argparse.Namespace) -> int:
    from secmail.v1 import trust_pb2, trust_pb2_grpc

    stub = trust_pb2_grpc.TrustServiceStub(_channel(args))
    data = Path(args.file).read_bytes()
    resp = stub.ImportTrustBundle(
        trust_pb2.ImportTrustBundleRequest(
            name=args.name, data=data, domains=args.domain or [], revocation_policy=args.revocation or ""
        )
    )
    for a in resp.anchors:
        kind = "anchor" if a.is_anchor else "intermediate"
        print(f"{a.anchor_id}  {kind:12}  {a.bundle}  {a.subject}")
    return 0


def cmd_ca_list(args: argparse.Namespace) -> int:
    from secmail.v1 import trust_pb2, trust_pb2_grpc

    stub = trust_pb2_grpc.TrustServiceStub(_channel(args))
    resp = stub.ListTrustAnchors(trust_pb2.ListTrustAnchorsRequest(bundle=args.bundle or ""))
    for a in resp.anchors:
        kind = "anchor" if a.is_anchor else "intermediate"
        print(f"{a.anchor_id}  {kind:12}  {a.bundle}  {a.subject}")
    return 0


def cmd_ca_remove(args: argparse.Namespace) -> int:
    from secmail.v1 import trust_pb2, trust_pb2_grpc

    stub = trust_pb2_grpc.TrustServiceStub(_channel(args))
    stub.RemoveTrustAnchor(trust_pb2.RemoveTrustAnchorRequest(anchor_id=args.anchor_id))
    return 0


def cmd_ca_bundles(args: argparse.Namespace) -> int:
    from secmail.v1 import trust_pb2, trust_pb2_grpc

    stub = trust_pb2_grpc.TrustServiceStub(_channel(args))
    for b in stub.ListTrustBundles(trust_pb2.ListTrustBundlesRequest()).bundles:
        scope = ",".join(b.domains) or "all readers"
        policy = b.revocation_policy or "service policy"
        print(
            f"{b.name}  anchors={b.anchor_count} intermediates={b.intermediate_count}  "
            f"domains={scope}  revocation={policy}"
        )
    return 0


def cmd_ca_remove_bundle(args: argparse.Namespace) -> int:
    from secmail.v1 import trust_pb2, trust_pb2_grpc

    stub = trust_pb2_grpc.TrustServiceStub(_channel(args))
    resp = stub.RemoveTrustBundle(trust_pb2.RemoveTrustBundleRequest(name=args.name))
    for a in resp.removed:
        print(f"removed {a.anchor_id}  {a.subject}")
    return 0


def cmd_ca_import_crl(args: argparse.Namespace) -> int:
    from secmail.v1 import trust_pb2, trust_pb2_grpc

    stub = trust_pb2_grpc.TrustServiceStub(_channel(args))
    resp = stub.ImportCRL(trust_pb2.ImportCRLRequest(data=Path(args.file).read_bytes()))
    print(f"{resp.issuer}: {resp.revoked_count} revoked")
    return 0


def _print_keys(keys) -> None:  # type: ignore[no-untyped-def]
    from secmail.v1 import verdict_pb2

    for k in keys:
        scheme = verdict_pb2.Scheme.Name(k.scheme).removeprefix("SCHEME_").lower()
        private = "private" if k.has_private_key else "public"
        addrs = ",".join(k.addresses)
        problems = f"  problems: {'; '.join(k.problems)}" if k.problems else ""
        print(f"{k.key_id}  {scheme:7}  {private:7}  {k.algorithm:12}  {addrs}{problems}")


def cmd_keys_import(args: argparse.Namespace) -> int:
    from secmail.v1 import keys_pb2, keys_pb2_grpc

    passphrase = ""
    if args.passphrase_file:
        passphrase = Path(args.passphrase_file).read_text().rstrip("\r\n")
    stub = keys_pb2_grpc.KeyServiceStub(_channel(args))
    resp = stub.ImportKey(
        keys_pb2.ImportKeyRequest(user=args.user, data=Path(args.file).read_bytes(), passphrase=passphrase)
    )
    _print_keys(resp.keys)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from secmail.v1 import keys_pb2, keys_pb2_grpc

    stub = keys_pb2_grpc.KeyServiceStub(_channel(args))
    _print_keys(stub.ListKeys(keys_pb2.ListKeysRequest(user=args.user)).keys)
    return 0


def cmd_keys_delete(args: argparse.Namespace) -> int:
    from secmail.v1 import keys_pb2, keys_pb2_grpc

    stub = keys_pb2_grpc.KeyServiceStub(_channel(args))
    stub.DeleteKey(keys_pb2.DeleteKeyRequest(user=args.user, key_id=args.key_id))
    return 0


def cmd_keys_export_public(args: argparse.Namespace) -> int:
    from secmail.v1 import keys_pb2, keys_pb2_grpc

    stub = keys_pb2_grpc.KeyServiceStub(_channel(args))
    resp = stub.ExportPublicKey(keys_pb2.ExportPublicKeyRequest(user=args.user, key_id=args.key_id))
    if args.output:
        Path(args.output).write_bytes(resp.data)
    else:
        sys.stdout.buffer.write(resp.data)
    return 0


def _timestamp(value: str | None):  # type: ignore[no-untyped-def]
    if not value:
        return None
    from datetime import UTC, datetime

    from google.protobuf import timestamp_pb2

    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def _write_display(args: argparse.Namespace, data: bytes) -> None:
    if args.output:
        Path(args.output).write_bytes(data)


def cmd_verify(args: argparse.Namespace) -> int:
    from secmail.v1 import message_security_pb2, message_security_pb2_grpc

    stub = message_security_pb2_grpc.MessageSecurityStub(_channel(args))
    req = message_security_pb2.VerifyRequest(
        user=args.user, message=Path(args.file).read_bytes(), language=args.lang
    )
    ts = _timestamp(args.at)
    if ts is not None:
        req.validation_time.CopyFrom(ts)
    resp = stub.Verify(req)
    _print_verdict(resp.verdict, json_out=args.json)
    _write_display(args, resp.display_message)
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    from secmail.v1 import message_security_pb2, message_security_pb2_grpc

    stub = message_security_pb2_grpc.MessageSecurityStub(_channel(args))
    req = message_security_pb2.DecryptRequest(
        user=args.user, message=Path(args.file).read_bytes(), language=args.lang
    )
    ts = _timestamp(args.at)
    if ts is not None:
        req.validation_time.CopyFrom(ts)
    resp = stub.Decrypt(req)
    _print_verdict(resp.verdict, json_out=args.json)
    _write_display(args, resp.display_message)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from secmail.v1 import message_security_pb2, message_security_pb2_grpc

    stub = message_security_pb2_grpc.MessageSecurityStub(_channel(args))
    resp = stub.Sign(
        message_security_pb2.SignRequest(
            user=args.user,
            message=Path(args.file).read_bytes(),
            scheme=_scheme(args.scheme),
            opaque=args.opaque,
        )
    )
    sys.stdout.buffer.write(resp.message)
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    from secmail.v1 import message_security_pb2, message_security_pb2_grpc

    stub = message_security_pb2_grpc.MessageSecurityStub(_channel(args))
    resp = stub.Encrypt(
        message_security_pb2.EncryptRequest(
            user=args.user,
            message=Path(args.file).read_bytes(),
            scheme=_scheme(args.scheme),
            recipients=args.recipient or [],
            sign=args.sign,
        )
    )
    sys.stdout.buffer.write(resp.message)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secmail", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--address", default="127.0.0.1:50051")
    serve.add_argument("--data-dir", help="state directory (default: the per-user data directory)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the data directory)")
    serve.add_argument("--master-key-file", help="32-byte master key file (default: <data-dir>/master.key)")
    serve.add_argument(
        "--previous-master-key-file",
        action="append",
        metavar="FILE",
        help="another master key, to unseal only (rotations: see `secmail admin rotate-master-key -h`)",
    )
    serve.add_argument(
        "--master-key-pkcs11",
        action="store_true",
        help="the master key is an AES key on a PKCS#11 token (PIN in $SECMAIL_PKCS11_PIN)",
    )
    from secmail.keystore.admin import add_pkcs11_arguments
    from secmail.service.server import DEFAULT_THREADS

    add_pkcs11_arguments(serve)
    serve.add_argument("--workers", type=int, default=0, help="server processes (default: number of cores)")
    serve.add_argument(
        "--worker-affinity",
        action="store_true",
        help="run each worker process on a CPU of its own (dedicated hosts: warmer caches, less CPU a call)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"calls handled at once by each process (default: {DEFAULT_THREADS})",
    )
    serve.add_argument("--max-message-mb", type=int, default=50)
    serve.add_argument(
        "--smime-cbc", action="store_true", help="encrypt S/MIME with AES-256-CBC EnvelopedData"
    )
    serve.add_argument(
        "--smime-rsa-pkcs1v15",
        action="store_true",
        help="RSA PKCS#1 v1.5 key transport instead of RSA-OAEP (for clients without OAEP)",
    )
    # Production listener (secmail/service/server.py, README "Production listener").
    serve.add_argument("--tls-cert", help="PEM server certificate (and chain): the listener uses TLS")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", help="PEM CA of the clients' certificates: one is then required")
    serve.add_argument("--health-address", help="HOST:PORT of a plaintext listener for grpc.health.v1 only")
    serve.add_argument(
        "--callers", help="TOML file of callers, roles, domains and limits (required off loopback)"
    )
    serve.add_argument(
        "--no-network-revocation",
        action="store_true",
        help="never fetch OCSP or CRLs; only CRLs imported with `secmail ca import-crl` are used",
    )
    serve.add_argument(
        "--harvest-domain",
        action="append",
        metavar="DOMAIN",
        help="keep GREEN signers' certificates for readers of DOMAIN (repeatable)",
    )
    serve.set_defaults(func=cmd_serve)

    def client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--server", default=DEFAULT_SERVER, help="server address (default %(default)s)")
        env = os.environ.get
        p.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CAs")
        p.add_argument("--tls-ca", default=env("SECMAIL_TLS_CA"), help="use TLS, trusting this CA (PEM)")
        p.add_argument("--tls-cert", default=env("SECMAIL_TLS_CERT"), help="client certificate (PEM)")
        p.add_argument("--tls-key", default=env("SECMAIL_TLS_KEY"), help="key of --tls-cert (PEM)")
        p.add_argument("--token-file", default=env("SECMAIL_TOKEN_FILE"), help="file holding a bearer token")
        return p

    ca = sub.add_parser("ca", help="trust anchors (admins)").add_subparsers(dest="ca_command", required=True)
    p = client(ca.add_parser("import", help="import a CA bundle (PEM, DER, .p7b, OpenPGP)"))
    p.add_argument("file")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--domain",
        action="append",
        help="use the bundle only for readers of this mail domain (repeatable; default: every reader)",
    )
    p.add_argument(
        "--revocation",
        choices=("soft-fail", "hard-fail"),
        help="hard-fail: unknown revocation status keeps this bundle's readers from GREEN",
    )
    p.set_defaults(func=cmd_ca_import)
    p = client(ca.add_parser("list"))
    p.add_argument("--bundle")
    p.set_defaults(func=cmd_ca_list)
    p = client(ca.add_parser("remove"))
    p.add_argument("anchor_id")
    p.set_defaults(func=cmd_ca_remove)
    p = client(ca.add_parser("bundles", help="list trust bundles with their scope"))
    p.set_defaults(func=cmd_ca_bundles)
    p = client(ca.add_parser("remove-bundle", help="remove a bundle and all its certificates"))
    p.add_argument("name")
    p.set_defaults(func=cmd_ca_remove_bundle)
    p = client(ca.add_parser("import-crl"))
    p.add_argument("file")
    p.set_defaults(func=cmd_ca_import_crl)

    keys = sub.add_parser("keys", help="per-user keys").add_subparsers(dest="keys_command", required=True)
    p = client(keys.add_parser("import", help="import a .p12/.pfx, PEM/DER certificate, or .asc key"))
    p.add_argument("file")
    p.add_argument("--user", required=True)
    p.add_argument("--passphrase-file")
    p.set_defaults(func=cmd_keys_import)
    p = client(keys.add_parser("list"))
    p.add_argument("--user", required=True)
    p.set_defaults(func=cmd_keys_list)
    p = client(keys.add_parser("export-public", help="print a key's certificate (PEM) or OpenPGP cert"))
    p.add_argument("--user", required=True)
    p.add_argument("--key-id", required=True)
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_keys_export_public)
    p = client(keys.add_parser("delete"))
    p.add_argument("key_id")
    p.add_argument("--user", required=True)
    p.set_defaults(func=cmd_keys_delete)

    for name, func, needs_user in (("verify", cmd_verify, False), ("decrypt", cmd_decrypt, True)):
        p = client(sub.add_parser(name, help=f"{name} a message and print the verdict"))
        p.add_argument("file")
        p.add_argument("--user", required=needs_user, default="reader@localhost.localdomain")
        p.add_argument("--lang", default="", help='"en" or "fr"')
        p.add_argument("--at", help="validation time, ISO 8601 (default now)")
        p.add_argument("--json", action="store_true")
        p.add_argument("--output", "-o", help="write display_message to this file")
        p.set_defaults(func=func)

    for name, func in (("sign", cmd_sign), ("encrypt", cmd_encrypt)):
        p = client(sub.add_parser(name, help=f"{name} a message, write it to stdout"))
        p.add_argument("file")
        p.add_argument("--user", required=True)
        p.add_argument("--scheme", choices=("smime", "openpgp"), default="smime")
        if name == "sign":
            p.add_argument("--opaque", action="store_true")
        else:
            p.add_argument("--recipient", action="append")
            p.add_argument("--sign", action="store_true")
        p.set_defaults(func=func)
    from secmail.keystore.admin import add_admin_commands

    add_admin_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return int(args.func(args))
    try:
        return int(args.func(args))
    except Exception as exc:  # a client error is a message, not a traceback
        print(f"secmail: {_error_text(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
