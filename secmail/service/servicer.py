"""Thin gRPC handlers: decode, call the application core, encode.

Every handler runs under :func:`_rpc`, which turns any exception into the
rich status of ``status.py``; nothing else here decides an error code.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from secmail.service import convert
from secmail.service.app import Secmail
from secmail.service.status import to_status
from secmail.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    message_security_pb2,
    message_security_pb2_grpc,
    trust_pb2,
    trust_pb2_grpc,
)

log = logging.getLogger(__name__)
R = TypeVar("R")


def _rpc(method: Callable[..., R]) -> Callable[..., R]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return method(self, request, context)
        except Exception as exc:
            status = to_status(exc)
            log.info("%s failed: %s", method.__name__, status.code)
            context.abort_with_status(status)
            raise  # unreachable: abort_with_status raises

    return wrapper


def _language(request_language: str, context: grpc.ServicerContext) -> str:
    if request_language:
        return request_language
    for key, value in context.invocation_metadata() or ():
        if key == "accept-language" and isinstance(value, str):
            return value
    return ""


class MessageSecurityServicer(message_security_pb2_grpc.MessageSecurityServicer):
    def __init__(self, app: Secmail) -> None:
        self.app = app

    @_rpc
    def Sign(  # noqa: N802 - gRPC method names
        self, request: message_security_pb2.SignRequest, context: grpc.ServicerContext
    ) -> message_security_pb2.SignResponse:
        signed = self.app.sign(
            request.user,
            request.message,
            convert.scheme_in(request.scheme),
            opaque=request.opaque,
            header_protection=not request.no_header_protection,
        )
        return message_security_pb2.SignResponse(message=signed)

    @_rpc
    def Encrypt(  # noqa: N802
        self, request: message_security_pb2.EncryptRequest, context: grpc.ServicerContext
    ) -> message_security_pb2.EncryptResponse:
        encrypted = self.app.encrypt(
            request.user,
            request.message,
            convert.scheme_in(request.scheme),
            list(request.recipients),
            sign=request.sign,
            header_protection=not request.no_header_protection,
        )
        return message_security_pb2.EncryptResponse(message=encrypted)

    @_rpc
    def Verify(  # noqa: N802
        self, request: message_security_pb2.VerifyRequest, context: grpc.ServicerContext
    ) -> message_security_pb2.VerifyResponse:
        at = convert.timestamp_in(request.validation_time, request.HasField("validation_time"))
        result = self.app.verify(request.user, request.message, at)
        return message_security_pb2.VerifyResponse(
            verdict=convert.verdict_out(result.verdict, _language(request.language, context)),
            display_message=result.display_message,
        )

    @_rpc
    def Decrypt(  # noqa: N802
        self, request: message_security_pb2.DecryptRequest, context: grpc.ServicerContext
    ) -> message_security_pb2.DecryptResponse:
        at = convert.timestamp_in(request.validation_time, request.HasField("validation_time"))
        result = self.app.decrypt(request.user, request.message, at)
        return message_security_pb2.DecryptResponse(
            verdict=convert.verdict_out(result.verdict, _language(request.language, context)),
            display_message=result.display_message,
        )


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    def __init__(self, app: Secmail) -> None:
        self.app = app

    @_rpc
    def ImportKey(  # noqa: N802
        self, request: keys_pb2.ImportKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ImportKeyResponse:
        keys = self.app.import_key(request.user, request.data, request.passphrase)
        return keys_pb2.ImportKeyResponse(keys=[convert.key_out(k) for k in keys])

    @_rpc
    def ListKeys(  # noqa: N802
        self, request: keys_pb2.ListKeysRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ListKeysResponse:
        return keys_pb2.ListKeysResponse(keys=[convert.key_out(k) for k in self.app.list_keys(request.user)])

    @_rpc
    def DeleteKey(  # noqa: N802
        self, request: keys_pb2.DeleteKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.DeleteKeyResponse:
        self.app.delete_key(request.user, request.key_id)
        return keys_pb2.DeleteKeyResponse()

    @_rpc
    def ExportPublicKey(  # noqa: N802
        self, request: keys_pb2.ExportPublicKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ExportPublicKeyResponse:
        key, data, media_type = self.app.export_public(request.user, request.key_id)
        return keys_pb2.ExportPublicKeyResponse(data=data, media_type=media_type, key=convert.key_out(key))


class TrustServicer(trust_pb2_grpc.TrustServiceServicer):
    def __init__(self, app: Secmail) -> None:
        self.app = app

    @_rpc
    def ImportTrustBundle(  # noqa: N802
        self, request: trust_pb2.ImportTrustBundleRequest, context: grpc.ServicerContext
    ) -> trust_pb2.ImportTrustBundleResponse:
        entries = self.app.import_trust(
            request.name,
            request.data,
            domains=list(request.domains),
            revocation_policy=request.revocation_policy,
        )
        return trust_pb2.ImportTrustBundleResponse(anchors=[convert.trust_out(e) for e in entries])

    @_rpc
    def ListTrustBundles(  # noqa: N802
        self, request: trust_pb2.ListTrustBundlesRequest, context: grpc.ServicerContext
    ) -> trust_pb2.ListTrustBundlesResponse:
        bundles = self.app.list_trust_bundles()
        return trust_pb2.ListTrustBundlesResponse(bundles=[convert.bundle_out(b) for b in bundles])

    @_rpc
    def RemoveTrustBundle(  # noqa: N802
        self, request: trust_pb2.RemoveTrustBundleRequest, context: grpc.ServicerContext
    ) -> trust_pb2.RemoveTrustBundleResponse:
        removed = self.app.remove_trust_bundle(request.name)
        return trust_pb2.RemoveTrustBundleResponse(removed=[convert.trust_out(e) for e in removed])

    @_rpc
    def ListTrustAnchors(  # noqa: N802
        self, request: trust_pb2.ListTrustAnchorsRequest, context: grpc.ServicerContext
    ) -> trust_pb2.ListTrustAnchorsResponse:
        entries = self.app.list_trust(request.bundle or None)
        return trust_pb2.ListTrustAnchorsResponse(anchors=[convert.trust_out(e) for e in entries])

    @_rpc
    def RemoveTrustAnchor(  # noqa: N802
        self, request: trust_pb2.RemoveTrustAnchorRequest, context: grpc.ServicerContext
    ) -> trust_pb2.RemoveTrustAnchorResponse:
        self.app.remove_trust(request.anchor_id)
        return trust_pb2.RemoveTrustAnchorResponse()

    @_rpc
    def ImportCRL(  # noqa: N802
        self, request: trust_pb2.ImportCRLRequest, context: grpc.ServicerContext
    ) -> trust_pb2.ImportCRLResponse:
        from cryptography import x509

        crl = self.app.import_crl(request.data)
        count = len(list(x509.load_der_x509_crl(crl.data)))
        return convert.crl_out(crl, count)
