"""The only module that touches protocol-buffer types.

Domain objects (``secmail.verdict``, ``secmail.keystore.api``) go out as
``secmail.v1`` messages here and nowhere else, so the wire contract and
the domain can evolve separately.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from secmail import i18n
from secmail.keystore.api import StoredCRL, StoredKey, TrustBundle, TrustEntry
from secmail.v1 import keys_pb2, trust_pb2, verdict_pb2
from secmail.verdict import (
    Banner,
    Coverage,
    Reason,
    Scheme,
    SignatureStatus,
    SignerResult,
    Verdict,
)

_SCHEME_OUT = {
    None: verdict_pb2.SCHEME_UNSPECIFIED,
    Scheme.SMIME: verdict_pb2.SCHEME_SMIME,
    Scheme.OPENPGP: verdict_pb2.SCHEME_OPENPGP,
}
_BANNER_OUT = {
    Banner.NONE: verdict_pb2.BANNER_NONE,
    Banner.GREEN: verdict_pb2.BANNER_GREEN,
    Banner.YELLOW: verdict_pb2.BANNER_YELLOW,
    Banner.RED: verdict_pb2.BANNER_RED,
}
_STATUS_OUT = {
    SignatureStatus.UNSIGNED: verdict_pb2.SIGNATURE_STATUS_UNSIGNED,
    SignatureStatus.VALID: verdict_pb2.SIGNATURE_STATUS_VALID,
    SignatureStatus.INVALID: verdict_pb2.SIGNATURE_STATUS_INVALID,
    SignatureStatus.INDETERMINATE: verdict_pb2.SIGNATURE_STATUS_INDETERMINATE,
}
_COVERAGE_OUT = {
    Coverage.NONE: verdict_pb2.COVERAGE_NONE,
    Coverage.BODY: verdict_pb2.COVERAGE_BODY,
    Coverage.BODY_AND_HEADERS: verdict_pb2.COVERAGE_BODY_AND_HEADERS,
}


def reason_out(reason: Reason) -> verdict_pb2.Reason.ValueType:
    return verdict_pb2.Reason.Value("REASON_" + reason.code)


def scheme_in(value: int) -> Scheme:
    """SCHEME_UNSPECIFIED means S/MIME (the contract's default)."""
    if value == verdict_pb2.SCHEME_OPENPGP:
        return Scheme.OPENPGP
    if value in (verdict_pb2.SCHEME_SMIME, verdict_pb2.SCHEME_UNSPECIFIED):
        return Scheme.SMIME
    from secmail.errors import InputError

    raise InputError(f"unknown scheme {value}")


def timestamp_out(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def timestamp_in(ts: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    if not present:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def signer_out(signer: SignerResult) -> verdict_pb2.Signer:
    msg = verdict_pb2.Signer(
        scheme=_SCHEME_OUT[signer.scheme],
        status=_STATUS_OUT[signer.status],
        reasons=[reason_out(r) for r in signer.reasons],
        verified_addresses=list(signer.verified_addresses),
        fingerprint=signer.fingerprint,
        chain=[
            verdict_pb2.ChainCertificate(fingerprint=c.fingerprint, subject=c.subject) for c in signer.chain
        ],
        algorithm=signer.algorithm,
        claimed_key_id=signer.claimed_key_id,
    )
    ts = timestamp_out(signer.claimed_signing_time)
    if ts is not None:
        msg.claimed_signing_time.CopyFrom(ts)
    return msg


def verdict_out(verdict: Verdict, language: str) -> verdict_pb2.Verdict:
    lang = i18n.pick_language(language)
    msg = verdict_pb2.Verdict(
        lock=verdict.lock,
        banner=_BANNER_OUT[verdict.banner],
        signature=_STATUS_OUT[verdict.signature],
        coverage=_COVERAGE_OUT[verdict.coverage],
        signers=[signer_out(s) for s in verdict.signers],
        reasons=[reason_out(r) for r in verdict.reasons],
        reason_texts=[
            verdict_pb2.ReasonText(reason=reason_out(r), text=i18n.sentence(r, lang), language=lang)
            for r in verdict.reasons
        ],
        scheme=_SCHEME_OUT[verdict.scheme],
        policy=verdict.policy,
        from_address=verdict.from_address or "",
        integrity_protected=verdict.integrity_protected,
    )
    ts = timestamp_out(verdict.validation_time)
    if ts is not None:
        msg.validation_time.CopyFrom(ts)
    return msg


def key_out(key: StoredKey) -> keys_pb2.KeyInfo:
    msg = keys_pb2.KeyInfo(
        key_id=key.key_id,
        scheme=_SCHEME_OUT[key.scheme],
        has_private_key=key.has_private_key,
        addresses=list(key.addresses),
        algorithm=key.algorithm,
        user=key.user,
        subject=key.subject,
        issuer=key.issuer,
        problems=list(key.problems),
        usable_for_encryption=key.usable_for_encryption,
        usable_for_signing=key.usable_for_signing,
    )
    for field, value in (("not_before", key.not_before), ("not_after", key.not_after)):
        ts = timestamp_out(value)
        if ts is not None:
            getattr(msg, field).CopyFrom(ts)
    return msg


def trust_out(entry: TrustEntry) -> trust_pb2.TrustAnchor:
    msg = trust_pb2.TrustAnchor(
        anchor_id=entry.anchor_id,
        bundle=entry.bundle,
        subject=entry.subject,
        is_anchor=entry.is_anchor,
        scheme=_SCHEME_OUT[entry.scheme],
        domains=list(entry.domains),
        revocation_policy=entry.revocation_policy,
    )
    for field, value in (("not_before", entry.not_before), ("not_after", entry.not_after)):
        ts = timestamp_out(value)
        if ts is not None:
            getattr(msg, field).CopyFrom(ts)
    return msg


def bundle_out(bundle: TrustBundle) -> trust_pb2.TrustBundle:
    msg = trust_pb2.TrustBundle(
        name=bundle.name,
        domains=list(bundle.domains),
        revocation_policy=bundle.revocation_policy,
        anchor_count=bundle.anchors,
        intermediate_count=bundle.intermediates,
    )
    ts = timestamp_out(bundle.updated_at)
    if ts is not None:
        msg.updated_at.CopyFrom(ts)
    return msg


def crl_out(crl: StoredCRL, revoked_count: int) -> trust_pb2.ImportCRLResponse:
    msg = trust_pb2.ImportCRLResponse(issuer=crl.issuer, revoked_count=revoked_count)
    ts = timestamp_out(crl.this_update)
    if ts is not None:
        msg.this_update.CopyFrom(ts)
    ts = timestamp_out(crl.next_update)
    if ts is not None:
        msg.next_update.CopyFrom(ts)
    return msg
