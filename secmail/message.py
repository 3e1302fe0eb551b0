"""Whole-message operations: the one pipeline both schemes go through.

Incoming: peel the root cryptographic layers (a signature, an encryption,
or a signature inside an encryption, as real clients nest them), collect
facts, and let :func:`secmail.verdict.assemble_verdict` judge. Outgoing:
build the Cryptographic Payload (with RFC 9788 header protection), sign
and/or encrypt it with the scheme's engine, and frame it.

Engines are imported lazily per scheme so that a scheme's failure to
import cannot take the other down.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from secmail.context import VerifyContext
from secmail.errors import (
    EncryptedMessageError,
    InputError,
    MessageTooLargeError,
    SenderMismatchError,
)
from secmail.mime.addresses import read_from
from secmail.mime.entity import (
    CRLF,
    Entity,
    Header,
    base64_lines,
    canonicalize,
    check_structure,
    children,
    parse_entity,
)
from secmail.mime.layers import LayerKind, classify, decode_body, has_crypto_below
from secmail.mime.protect import build_payload, compose_display, read_payload
from secmail.verdict import (
    Coverage,
    FromCheck,
    LayerFacts,
    ProcessedMessage,
    Reason,
    Scheme,
    SignerResult,
    address_matches,
    assemble_verdict,
)

#: The default ceiling for a message handed to the service.
DEFAULT_MAX_MESSAGE_BYTES = 50 * 1024 * 1024
#: Root layers peeled at most (signed, encrypted, signed: RFC 8551 triple wrap).
MAX_ROOT_LAYERS = 4


@dataclass(frozen=True, slots=True)
class SMIMESigningKey:
    cert: x509.Certificate
    private_key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...]
    addresses: tuple[str, ...]

    def __repr__(self) -> str:
        return f"SMIMESigningKey(subject={self.cert.subject.rfc4514_string()!r})"


@dataclass(frozen=True, slots=True)
class PGPSigningKey:
    tsk: bytes
    addresses: tuple[str, ...]

    def __repr__(self) -> str:
        return f"PGPSigningKey(addresses={self.addresses!r})"


SigningKey = SMIMESigningKey | PGPSigningKey


@dataclass(frozen=True)
class DecryptionKeys:
    """Lazily unsealed private keys of the acting user, per scheme."""

    smime: Callable[[], Sequence[tuple[x509.Certificate, PrivateKeyTypes]]]
    pgp: Callable[[], Sequence[bytes]]


@dataclass
class _Peeled:
    scheme: Scheme | None = None
    lock: bool = False
    integrity_protected: bool = False
    signed: bool = False
    signers: list[SignerResult] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    inline: bool = False


def parse_headers(raw: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Entity:
    """The root entity after the size and emptiness checks, without walking
    the MIME tree (enough to read From or the recipients)."""
    if len(raw) > max_bytes:
        raise MessageTooLargeError(
            f"message of {len(raw)} bytes exceeds the limit of {max_bytes}",
            metadata={"limit": str(max_bytes)},
        )
    if not raw.strip():
        raise InputError("empty message")
    root = parse_entity(canonicalize(raw))
    if not root.headers:
        raise InputError("not a MIME message: no header fields")
    return root


def parse_message(raw: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Entity:
    """:func:`parse_headers`, then one bounded walk of the whole structure."""
    root = parse_headers(raw, max_bytes=max_bytes)
    check_structure(root)
    return root


# --- incoming ---------------------------------------------------------------


def verify_message(
    raw: bytes, ctx: VerifyContext, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ProcessedMessage:
    """Verify a message whose root is not encrypted. Never uses a private key."""
    # _process refuses an encrypted root (EncryptedMessageError) when no keys are given.
    return _process(parse_message(raw, max_bytes=max_bytes), ctx, keys=None)


def decrypt_message(
    raw: bytes, ctx: VerifyContext, keys: DecryptionKeys, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ProcessedMessage:
    """Decrypt the root layer (if encrypted) and verify what it wraps."""
    root = parse_message(raw, max_bytes=max_bytes)
    return _process(root, ctx, keys=keys)


def _process(root: Entity, ctx: VerifyContext, keys: DecryptionKeys | None) -> ProcessedMessage:
    peeled = _Peeled()
    current = root
    for _level in range(MAX_ROOT_LAYERS):
        kind = classify(current)
        if kind.encrypted:
            if peeled.lock:
                # An encryption below another one is not peeled automatically
                # (it would be a decryption oracle when quoted in a reply).
                break
            if keys is None:
                # Verify never decrypts. A root signature over an encryption
                # (encrypt-then-sign) still has a root encryption below it:
                # the client must call Decrypt, as for an encrypted root.
                raise EncryptedMessageError("the message is encrypted: use Decrypt")
            current = _decrypt_layer(current, kind, ctx, keys, peeled)
            continue
        if kind.signed:
            # Every layer peeled so far is a root layer (the root, or what a
            # root layer directly wraps), so this signature covers the whole.
            current = _verify_layer(current, kind, ctx, peeled)
            peeled.signed = True
            continue
        break
    else:
        kind = classify(current)
    payload = read_payload(current)
    if has_crypto_below(current) or (kind is not LayerKind.PLAIN and (peeled.signed or peeled.lock)):
        peeled.reasons.append(Reason.ERRANT_CRYPTO_LAYER)

    from_check = read_from(root)
    # The header fields the webmail will show: the protected ones replace the
    # outer ones in display_message (RFC 9788 §4), so they are also the ones
    # judged. Comparing the signer with the outer From while showing the
    # protected one would let a signer vouch for a From it never saw matched.
    shown = root
    if payload.protected is not None and (peeled.signed or peeled.lock):
        shown = Entity(payload.protected, b"", b"")
        protected_from = read_from(shown)
        if protected_from.address != from_check.address:
            peeled.reasons.append(Reason.PROTECTED_HEADER_MISMATCH)
        from_check = protected_from
    coverage = Coverage.NONE
    if peeled.signed:
        # Every signature peeled above sits above the payload, so protected
        # headers found in it are covered, whether the signature was a
        # multipart/signed or inside an OpenPGP encryption (RFC 3156 §6.2).
        coverage = Coverage.BODY_AND_HEADERS if payload.protected is not None else Coverage.BODY
        if peeled.inline:
            peeled.reasons.append(Reason.PARTIAL_COVERAGE)
        _check_signing_times(shown, peeled, ctx)
        _note_sender_header(shown, from_check, peeled)

    if peeled.lock and not peeled.integrity_protected:
        covered = peeled.signed and peeled.signers and all(s.crypto_valid for s in peeled.signers)
        if covered:
            # A valid signature over the whole plaintext makes CBC tampering
            # detectable (RFC 8551 §3.6 / EFAIL countermeasure).
            peeled.integrity_protected = True
        else:
            peeled.reasons.append(Reason.INTEGRITY_NOT_PROTECTED)

    if peeled.signed or peeled.lock:
        display = compose_display(root, payload)
        if peeled.lock and not peeled.integrity_protected:
            display, neutralised = _neutralise(display)
            if neutralised:
                peeled.reasons.append(Reason.CONTENT_NEUTRALISED)
    else:
        # Nothing at the root: the received message is shown as received,
        # never a signed part dressed up as the whole.
        display = root.raw

    facts = LayerFacts(
        scheme=peeled.scheme,
        lock=peeled.lock,
        integrity_protected=peeled.integrity_protected,
        signed_at_root=peeled.signed,
        signers=tuple(peeled.signers),
        coverage=coverage,
        from_check=from_check,
        reasons=tuple(peeled.reasons),
    )
    verdict = assemble_verdict(facts, policy=ctx.policy, evaluated_at=ctx.at)
    return ProcessedMessage(verdict=verdict, display_message=display)


def _neutralise(display: bytes) -> tuple[bytes, bool]:
    from secmail.mime.sanitize import neutralise_message

    return neutralise_message(display)


def _two_parts(entity: Entity) -> tuple[Entity, Entity]:
    kids = children(entity)
    if len(kids) != 2:
        raise InputError("multipart/signed or multipart/encrypted needs exactly two parts")
    return kids[0], kids[1]


def _verify_layer(entity: Entity, kind: LayerKind, ctx: VerifyContext, peeled: _Peeled) -> Entity:
    if kind is LayerKind.SMIME_SIGNED:
        from secmail.smime.verify import verify_signed_data

        signed_part, sig_part = _two_parts(entity)
        if sig_part.content_type.mime_type not in (
            "application/pkcs7-signature",
            "application/x-pkcs7-signature",
        ):
            raise InputError("multipart/signed whose second part is not a PKCS#7 signature")
        result = verify_signed_data(decode_body(sig_part), detached_content=signed_part.raw, ctx=ctx)
        peeled.signers.extend(result.signers)
        peeled.scheme = peeled.scheme or Scheme.SMIME
        return signed_part
    if kind is LayerKind.SMIME_OPAQUE_SIGNED:
        from secmail.smime.verify import verify_signed_data

        result = verify_signed_data(decode_body(entity), detached_content=None, ctx=ctx)
        peeled.signers.extend(result.signers)
        peeled.scheme = peeled.scheme or Scheme.SMIME
        if result.encap_content is None:
            raise InputError("opaque signed-data without content")
        return parse_entity(canonicalize(result.encap_content))
    if kind is LayerKind.PGP_SIGNED:
        from secmail.pgp.verify import verify_detached

        signed_part, sig_part = _two_parts(entity)
        if sig_part.content_type.mime_type != "application/pgp-signature":
            raise InputError("multipart/signed whose second part is not an OpenPGP signature")
        signers = verify_detached(signed_part.raw, decode_body(sig_part), ctx)
        peeled.signers.extend(signers)
        peeled.scheme = peeled.scheme or Scheme.OPENPGP
        return signed_part
    if kind is LayerKind.PGP_INLINE_SIGNED:
        from secmail.pgp.verify import verify_inline

        signers, content = verify_inline(decode_body(entity), ctx)
        peeled.signers.extend(signers)
        peeled.scheme = peeled.scheme or Scheme.OPENPGP
        peeled.inline = True
        return _text_entity(entity, content)
    raise AssertionError(kind)


def _text_entity(original: Entity, text: bytes) -> Entity:
    """A text/plain entity holding inline-PGP content (charset kept)."""
    charset = original.content_type.param("charset") or "utf-8"
    head = f'Content-Type: text/plain; charset="{charset}"'.encode() + CRLF
    head += b"Content-Transfer-Encoding: 8bit" + CRLF
    return parse_entity(head + CRLF + canonicalize(text))


def _decrypt_layer(
    entity: Entity, kind: LayerKind, ctx: VerifyContext, keys: DecryptionKeys, peeled: _Peeled
) -> Entity:
    if kind is LayerKind.SMIME_ENCRYPTED:
        from secmail.smime.envelope import decrypt_content

        decrypted = decrypt_content(decode_body(entity), keys.smime())
        peeled.lock = True
        peeled.integrity_protected = decrypted.integrity_protected
        peeled.scheme = peeled.scheme or Scheme.SMIME
        if decrypted.weak_cipher:
            peeled.reasons.append(Reason.WEAK_ALGORITHM)
        return parse_entity(canonicalize(decrypted.content))
    from secmail.pgp.decrypt import decrypt

    if kind is LayerKind.PGP_ENCRYPTED:
        control, data = _two_parts(entity)
        if control.content_type.mime_type != "application/pgp-encrypted":
            raise InputError("multipart/encrypted without an application/pgp-encrypted part")
        ciphertext = decode_body(data)
        inline = False
    else:
        ciphertext = decode_body(entity)
        inline = True
    result = decrypt(ciphertext, keys.pgp(), ctx)
    peeled.lock = True
    peeled.integrity_protected = result.integrity_protected
    peeled.scheme = peeled.scheme or Scheme.OPENPGP
    if _pgp_cipher_is_weak(result.algorithm, ctx):
        peeled.reasons.append(Reason.WEAK_ALGORITHM)
    if result.signers:
        # RFC 3156 §6.2 combined form: the signature is inside the single
        # OpenPGP message and covers the whole decrypted content.
        peeled.signed = True
        peeled.signers.extend(result.signers)
    if inline:
        peeled.inline = peeled.inline or bool(result.signers)
        return _text_entity(entity, result.content)
    return parse_entity(canonicalize(result.content))


def _pgp_cipher_is_weak(algorithm: str, ctx: VerifyContext) -> bool:
    """Whether the symmetric cipher of an OpenPGP message is in the policy's
    weak set, as S/MIME reports RC2/DES/3DES. ``algorithm`` is the engine's
    name, e.g. "seipdv1-3des" or "seipdv2-ocb-aes256"; the cipher is last."""
    cipher = algorithm.rsplit("-", 1)[-1].lower()
    return cipher in ctx.policy.algorithms.weak_ciphers


def _check_signing_times(root: Entity, peeled: _Peeled, ctx: VerifyContext) -> None:
    tolerance = ctx.policy.signing_time_tolerance
    date_value = root.get("date")
    date: datetime | None = None
    if date_value:
        try:
            date = email.utils.parsedate_to_datetime(date_value)
            if date.tzinfo is None:
                date = date.replace(tzinfo=UTC)
        except (TypeError, ValueError):
            date = None
    for signer in peeled.signers:
        t = signer.claimed_signing_time
        if t is None:
            continue
        if t > ctx.at + tolerance or (date is not None and abs(t - date) > tolerance):
            peeled.reasons.append(Reason.SIGNING_TIME_SUSPICIOUS)
            return


def _note_sender_header(root: Entity, from_check: FromCheck, peeled: _Peeled) -> None:
    sender = root.get_all("sender")
    if sender and from_check.address is not None:
        sender_check = read_from(
            Entity(tuple(Header("From", b"From:" + h.raw.split(b":", 1)[1]) for h in sender), b"", b"")
        )
        if sender_check.address != from_check.address:
            # Only From is ever compared with the signer (RFC 8551 §3.1, and
            # "Johnny, you are fired" §4.3): a Sender header confers nothing.
            peeled.reasons.append(Reason.SENDER_HEADER_IGNORED)


# --- outgoing ---------------------------------------------------------------


def _outer_with_entity(outer: list[Header], entity: bytes) -> bytes:
    head = b"".join(h.raw + CRLF for h in outer)
    return head + b"MIME-Version: 1.0" + CRLF + entity


def check_sender(root: Entity, addresses: Sequence[str]) -> str:
    check = read_from(root)
    if check.address is None:
        raise SenderMismatchError("the message needs exactly one well-formed From mailbox to be signed")
    if not address_matches(check.address, addresses):
        raise SenderMismatchError(
            "the From address is not an address of the signing key",
            metadata={"from": check.address},
        )
    return check.address


def _ensure_transport_safe(payload: bytes, source: Entity) -> bytes:
    """8-bit single-part bodies become base64 before signing (RFC 8551 §3.1.2).

    Transports may re-encode 8-bit content, which would break a signature;
    multipart bodies are left as composed (webmails encode their parts).
    ``payload`` is ``build_payload(source)``: ``source``'s body under its
    content fields, so the usual case (7-bit, or multipart) is told from
    ``source`` without parsing the payload again.
    """
    if source.content_type.maintype == "multipart" or source.body.isascii():
        return payload
    entity = parse_entity(payload)
    if entity.content_type.maintype == "multipart" or entity.body.isascii():
        return payload
    cte = (entity.get("content-transfer-encoding") or "").lower()
    if cte in ("base64", "quoted-printable"):
        return payload
    headers = [h for h in entity.headers if h.lname != "content-transfer-encoding"]
    encoded = base64_lines(entity.body)
    head = b"".join(h.raw + CRLF for h in headers) + b"Content-Transfer-Encoding: base64" + CRLF
    return head + CRLF + encoded


def _sign_payload(payload: bytes, key: SigningKey, *, opaque: bool, at: datetime) -> bytes:
    if isinstance(key, SMIMESigningKey):
        from secmail.smime.mime import build_multipart_signed as smime_multipart_signed
        from secmail.smime.mime import build_pkcs7_mime
        from secmail.smime.sign import micalg_for, sign_content

        der = sign_content(
            payload,
            private_key=key.private_key,
            cert=key.cert,
            chain=key.chain,
            detached=not opaque,
            signing_time=at,
        )
        if opaque:
            return build_pkcs7_mime(der, "signed-data")
        return smime_multipart_signed(payload, der, micalg_for(key.private_key, "sha256"))
    from secmail.pgp.mime import build_multipart_signed as pgp_multipart_signed
    from secmail.pgp.sign import sign_detached

    sig, micalg = sign_detached(payload, key.tsk, at=at)
    return pgp_multipart_signed(payload, sig, micalg)


def sign_message(
    raw: bytes,
    key: SigningKey,
    *,
    opaque: bool = False,
    header_protection: bool = True,
    at: datetime,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> bytes:
    root = parse_message(raw, max_bytes=max_bytes)
    check_sender(root, key.addresses)
    payload, outer = build_payload(root, hp="clear" if header_protection else None)
    payload = _ensure_transport_safe(payload, root)
    return _outer_with_entity(outer, _sign_payload(payload, key, opaque=opaque, at=at))


@dataclass(frozen=True, slots=True)
class Recipients:
    """Public keys to encrypt to, already checked for usability."""

    smime: tuple[x509.Certificate, ...] = ()
    pgp: tuple[bytes, ...] = ()


def encrypt_message(
    raw: bytes,
    scheme: Scheme,
    recipients: Recipients,
    *,
    signer: SigningKey | None,
    header_protection: bool = True,
    authenticated: bool = True,
    rsa_oaep: bool = True,
    at: datetime,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> bytes:
    root = parse_message(raw, max_bytes=max_bytes)
    if signer is not None:
        check_sender(root, signer.addresses)
    payload, outer = build_payload(root, hp="cipher" if header_protection else None)
    if scheme is Scheme.SMIME:
        from secmail.smime.envelope import encrypt_content
        from secmail.smime.mime import build_pkcs7_mime

        if signer is not None:
            payload = _sign_payload(_ensure_transport_safe(payload, root), signer, opaque=False, at=at)
        der = encrypt_content(payload, recipients.smime, authenticated=authenticated, rsa_oaep=rsa_oaep)
        smime_type = "authEnveloped-data" if authenticated else "enveloped-data"
        return _outer_with_entity(outer, build_pkcs7_mime(der, smime_type))
    from secmail.pgp.encrypt import encrypt
    from secmail.pgp.mime import build_multipart_encrypted

    signer_tsk = signer.tsk if isinstance(signer, PGPSigningKey) else None
    armored = encrypt(payload, recipients.pgp, signer_tsk=signer_tsk, at=at)
    return _outer_with_entity(outer, build_multipart_encrypted(armored))
