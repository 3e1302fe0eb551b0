"""OpenPGP signature verification: one SignerResult per signature packet.

The mathematics is Sequoia's (``_backend.verify_detached``, one signature
and one candidate certificate at a time). pysequoia reports only that a
signature verified or that it did not; *why* it did not is established
here from structure: is the issuing key in the candidate certificate,
bound, revoked, expired, weak? Nothing is read from any text output.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from secmail.context import PGPCandidate, VerifyContext
from secmail.errors import InputError, MessageTooLargeError
from secmail.pgp import _backend, keys
from secmail.pgp import packets as pk
from secmail.verdict import Reason, Scheme, SignerResult

#: Decompression limit for signed (not encrypted) messages.
DEFAULT_MAX_OUTPUT = 64 * 2**20
#: Room for packet headers and signatures around the literal content when
#: bounding a decompressed packet stream.
STREAM_SLACK = 2**20
_WEAK_HASHES = frozenset({1, 2, 3})


def _unique(reasons: Sequence[Reason]) -> tuple[Reason, ...]:
    return tuple(dict.fromkeys(reasons))


def _candidates(ctx: VerifyContext, sig: pk.SignaturePacket) -> Iterator[PGPCandidate]:
    # A generator, so that a lookup that fetches its candidates lazily
    # (the service's: the sender's keys cost a database query) is only
    # asked for as many as judge_signature needs.
    found = False
    seen: set[bytes] = set()
    for handle in (sig.issuer_fingerprint, sig.issuer_key_id):
        if not handle:
            continue
        for cand in ctx.pgp_lookup(handle):
            if cand.cert not in seen:
                seen.add(cand.cert)
                found = True
                yield cand
        if found:
            break


def _weak(sig: pk.SignaturePacket, key: pk.KeyPacket, ctx: VerifyContext) -> bool:
    name = pk.HASH_NAMES.get(sig.hash_algorithm)
    algos = ctx.policy.algorithms
    if sig.hash_algorithm in _WEAK_HASHES or name not in algos.signature_digests:
        return True
    return key.algorithm in pk.RSA_ALGOS and key.bits < algos.min_rsa_bits


def _algorithm(sig: pk.SignaturePacket, key: pk.KeyPacket | None) -> str:
    hash_name = pk.HASH_NAMES.get(sig.hash_algorithm, f"hash-{sig.hash_algorithm}")
    key_name = key.algorithm_name if key is not None else f"algo-{sig.pk_algorithm}"
    return f"{key_name}-{hash_name}"


#: The rank of a valid signature with no reason against it (the best).
_RANK_CLEAN = 3


@dataclass(frozen=True, slots=True)
class _Judged:
    result: SignerResult
    rank: int


def _judge_with(
    sig: pk.SignaturePacket,
    data: bytes,
    cand: PGPCandidate,
    ctx: VerifyContext,
    claimed: str,
) -> _Judged | None:
    handle = sig.issuer_fingerprint or sig.issuer_key_id or ""
    if not keys.has_key(cand.cert, handle):
        # What find_key below would say (or load_cert, by failing), without
        # judging a certificate that cannot hold the signer's key.
        return None
    try:
        info = keys.load_cert(cand.cert, ctx.at)
    except InputError:
        return None
    key = info.find_key(handle)
    if key is None:
        return None
    created = sig.created
    common = {
        "scheme": Scheme.OPENPGP,
        "claimed_key_id": claimed,
        "claimed_signing_time": created,
        "algorithm": _algorithm(sig, key.key),
    }
    reasons: list[Reason] = []
    if not cand.authenticated:
        reasons.append(Reason.UNTRUSTED_CHAIN)
    if info.revoked or key.revoked:
        reasons.append(Reason.CERT_REVOKED)
    if info.expired or (key.expires is not None and key.expires <= ctx.at):
        reasons.append(Reason.CERT_EXPIRED)
    if info.not_yet_valid or key.key.created > ctx.at:
        reasons.append(Reason.CERT_NOT_YET_VALID)
    if _weak(sig, key.key, ctx):
        reasons.append(Reason.WEAK_ALGORITHM)
    if created is not None and created > ctx.at + ctx.policy.signing_time_tolerance:
        reasons.append(Reason.SIGNING_TIME_SUSPICIOUS)
    if not info.primary_valid or not key.bound:
        # The key is not (validly) part of this certificate: whoever made
        # the signature, it is not the certificate's owner.
        reasons.append(Reason.SIGNER_KEY_MISSING)
    elif not key.flags & pk.KF_SIGN:
        reasons.append(Reason.KEY_USAGE)

    good = None
    if sig.sig_type in (pk.SIG_BINARY, pk.SIG_TEXT) and not sig.has_unknown_critical:
        good = _backend.verify_detached(data, sig.raw, cand.cert)
        if good is None and created is not None and created > keys.now():
            good = _future_signature(sig, data, info, key)
    if good is not None and good.signing_key == key.key.fingerprint and key.bound and info.primary_valid:
        addresses = keys.engine_addresses(info)
        result = SignerResult(
            crypto_valid=True,
            reasons=_unique(reasons),
            verified_addresses=addresses,
            fingerprint=info.fingerprint,
            **common,  # type: ignore[arg-type]
        )
        rank = _RANK_CLEAN if not reasons else 2
        return _Judged(result, rank)
    # Sequoia did not accept the signature. If nothing structural explains
    # it, the mathematics failed (or the signed bytes differ): BAD_SIGNATURE.
    explained = {
        Reason.CERT_REVOKED,
        Reason.CERT_EXPIRED,
        Reason.CERT_NOT_YET_VALID,
        Reason.WEAK_ALGORITHM,
        Reason.SIGNER_KEY_MISSING,
        Reason.KEY_USAGE,
    }
    if sig.sig_type not in (pk.SIG_BINARY, pk.SIG_TEXT) or sig.has_unknown_critical:
        reasons.append(Reason.MALFORMED_SIGNATURE)
    elif not explained.intersection(reasons):
        reasons.append(Reason.BAD_SIGNATURE)
    result = SignerResult(
        crypto_valid=False,
        reasons=_unique(reasons),
        fingerprint=info.fingerprint,
        **common,  # type: ignore[arg-type]
    )
    return _Judged(result, 1 if Reason.BAD_SIGNATURE not in reasons else 0)


def _future_signature(
    sig: pk.SignaturePacket, data: bytes, info: keys.CertInfo, key: keys.KeyInfo
) -> _backend.EngineGoodSignature | None:
    """The mathematics of a signature dated after the wall clock.

    Sequoia judges at the wall clock and refuses a signature from its
    future, whereas secmail judges at ``ctx.at`` and reports a claimed
    signing time in the future as SIGNING_TIME_SUSPICIOUS, informational,
    as for S/MIME (a sender's clock running fast does not forge anything).
    Only for that case is the signature checked here, with the same
    verification that decides certificate bindings (``keys.verify_signature``).
    """
    if sig.sig_type == pk.SIG_TEXT:
        # RFC 9580 §5.2.1.2: text signatures hash CRLF line ends.
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not keys.verify_signature(sig, key.key, data):
        return None
    return _backend.EngineGoodSignature(info.fingerprint, key.key.fingerprint)


def judge_signature(sig: pk.SignaturePacket, data: bytes, ctx: VerifyContext) -> SignerResult:
    """Facts about one signature over ``data`` (the literal content)."""
    claimed = sig.issuer_fingerprint or sig.issuer_key_id or ""
    best: _Judged | None = None
    for cand in _candidates(ctx, sig):
        judged = _judge_with(sig, data, cand, ctx, claimed)
        if judged is not None and (best is None or judged.rank > best.rank):
            best = judged
            if best.rank == _RANK_CLEAN:
                # Nothing ranks higher and a tie keeps the first: no later
                # candidate can change the result, so none is fetched.
                break
    if best is not None:
        return best.result
    return SignerResult(
        scheme=Scheme.OPENPGP,
        crypto_valid=False,
        reasons=(Reason.SIGNER_KEY_MISSING,),
        claimed_key_id=claimed,
        claimed_signing_time=sig.created,
        algorithm=_algorithm(sig, None),
    )


def _malformed(claimed: str = "") -> SignerResult:
    return SignerResult(
        scheme=Scheme.OPENPGP,
        crypto_valid=False,
        reasons=(Reason.MALFORMED_SIGNATURE,),
        claimed_key_id=claimed,
    )


def judge_signature_packets(
    packets: Sequence[pk.Packet], data: bytes, ctx: VerifyContext
) -> tuple[SignerResult, ...]:
    out: list[SignerResult] = []
    for p in packets:
        try:
            sig = pk.parse_signature(p)
        except InputError:
            out.append(_malformed())
            continue
        out.append(judge_signature(sig, data, ctx))
    return tuple(out)


def verify_detached(data: bytes, signature: bytes, ctx: VerifyContext) -> tuple[SignerResult, ...]:
    """Every signature in a detached ``signature`` block over ``data``.

    An empty tuple means the block held no signature packet (the verdict
    assembler reports that as MALFORMED_SIGNATURE).
    """
    binary = pk.to_binary(signature)
    packets = pk.read_packets(binary)
    if any(p.tag not in (pk.TAG_SIGNATURE, pk.TAG_MARKER, pk.TAG_PADDING) for p in packets):
        raise InputError("a detached OpenPGP signature may only contain signature packets")
    return judge_signature_packets([p for p in packets if p.tag == pk.TAG_SIGNATURE], data, ctx)


# --------------------------------------------------------------------------
# Inline-signed messages (RFC 9580 §10.3)


def inflate(algo: int, data: bytes, limit: int) -> bytes:
    """Decompress a Compressed Data body, never producing more than
    ``limit`` bytes (raises MessageTooLargeError beyond)."""
    if algo == 0:
        out = data
    elif algo in (1, 2):
        d = zlib.decompressobj(-15 if algo == 1 else 15)
        try:
            out = d.decompress(data, limit + 1)
        except zlib.error as exc:
            raise InputError("corrupt compressed OpenPGP data") from exc
    elif algo == 3:
        import bz2

        b = bz2.BZ2Decompressor()
        try:
            out = b.decompress(data, max_length=limit + 1)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError("corrupt compressed OpenPGP data") from exc
    else:
        raise InputError(f"unknown compression algorithm {algo}")
    if len(out) > limit:
        raise MessageTooLargeError("the decompressed OpenPGP message exceeds the size limit")
    return out


@dataclass(frozen=True, slots=True)
class SignedContent:
    literal: pk.Literal
    signatures: tuple[pk.Packet, ...]


def unwrap_message(data: bytes, limit: int, *, depth: int = 0) -> SignedContent:
    """Find the one Literal Data packet and the signatures of a message
    (the inside of an encryption layer, or an inline-signed message).

    Compression is undone here, bounded by ``limit``; anything that is not
    the RFC 9580 §10.3 grammar of a signed or literal message is refused.
    """
    if depth > 2:
        raise InputError("OpenPGP message nested too deeply")
    packets = pk.read_packets(data)
    literal: pk.Literal | None = None
    sigs: list[pk.Packet] = []
    ops = 0
    for p in packets:
        if p.tag in (pk.TAG_MARKER, pk.TAG_PADDING):
            continue
        if p.tag == pk.TAG_COMPRESSED:
            if literal is not None or len(p.body) < 1:
                raise InputError("unexpected compressed packet in OpenPGP message")
            stream = inflate(p.body[0], p.body[1:], limit + STREAM_SLACK)
            inner = unwrap_message(stream, limit, depth=depth + 1)
            literal = inner.literal
            sigs.extend(inner.signatures)
        elif p.tag == pk.TAG_LITERAL:
            if literal is not None:
                raise InputError("more than one literal data packet in an OpenPGP message")
            literal = pk.parse_literal(p)
        elif p.tag == pk.TAG_OPS:
            ops += 1
        elif p.tag == pk.TAG_SIGNATURE:
            sigs.append(p)
        else:
            raise InputError(f"unexpected packet type {p.tag} in an OpenPGP message")
    if literal is None:
        raise InputError("no literal data in the OpenPGP message")
    if len(literal.content) > limit:
        raise MessageTooLargeError("the OpenPGP message exceeds the size limit")
    if ops > len(sigs):
        # A one-pass header without its signature: report it as a signer
        # whose signature is missing rather than silently dropping it.
        sigs.extend(pk.Packet(pk.TAG_SIGNATURE, b"", b"") for _ in range(ops - len(sigs)))
    return SignedContent(literal, tuple(sigs))


def verify_inline(data: bytes, ctx: VerifyContext) -> tuple[tuple[SignerResult, ...], bytes]:
    """A cleartext-signed (RFC 9580 §7) or inline-signed message:
    (one SignerResult per signature, the signed content).

    For the cleartext framework the content is the signed text exactly as
    hashed (dash-unescaped, trailing whitespace removed, CRLF line ends).
    """
    if b"-----BEGIN PGP SIGNED MESSAGE-----" in data[:1024]:
        clear = pk.parse_cleartext(data)
        packets = [p for p in pk.read_packets(clear.signatures) if p.tag == pk.TAG_SIGNATURE]
        signers = judge_signature_packets(packets, clear.signed_text, ctx)
        # Only text signatures belong in the cleartext framework.
        fixed: list[SignerResult] = []
        for p, s in zip(packets, signers, strict=True):
            try:
                is_text = pk.parse_signature(p).sig_type == pk.SIG_TEXT
            except InputError:
                is_text = True
            fixed.append(s if is_text or not s.crypto_valid else _malformed(s.claimed_key_id))
        return tuple(fixed), clear.signed_text
    binary = pk.to_binary(data)
    content = unwrap_message(binary, DEFAULT_MAX_OUTPUT)
    return (
        judge_signature_packets(content.signatures, content.literal.content, ctx),
        content.literal.content,
    )
