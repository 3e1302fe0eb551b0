"""Correspondents' certificates, kept from messages that verified GREEN.

When a reader of an opted-in domain gets a GREEN verdict (Verify or
Decrypt), the S/MIME certificate of each signer is stored as a
correspondent certificate of that reader, so the reader can answer
encrypted without importing anything — what mail clients have always done
with the certificates in signed mail (RFC 8551 §2.5: the signer's
certificate travels in the SignedData for this purpose).

Only GREEN counts: the certificate chains to an imported anchor, is not
revoked, signs for the From address and the signature covers the message.
A YELLOW or RED message never adds a certificate, which would otherwise be
the way to plant an attacker's key as "alice". Only the public
certificate is stored, never anything from the message content, and only
one that can encrypt (a signing-only certificate is useless for replies).

The verification engine reports a signer by fingerprint, not by
certificate. :class:`SignerCertificates` recovers the certificate: it sits
among the revocation checkers of the request's trust context, which path
validation asks about every certificate of each chain it accepted (end
entity first), and it always answers UNKNOWN, which changes no verdict
(:func:`secmail.trust.revocation.chain_revocation_statuses` lets any other
checker's GOOD or REVOKED win). A certificate is harvested only when its
SHA-256 fingerprint is the GREEN signer's.

OpenPGP certificates are not harvested: a PGP/MIME message does not carry
the signer's certificate.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from secmail.audit import AuditAction, AuditEvent, AuditOutcome, AuditSink
from secmail.context import VerifyContext
from secmail.keystore.api import KeyStore, ParsedKey, StoredKey
from secmail.trust.revocation import RevocationStatus
from secmail.verdict import Banner, ProcessedMessage, Scheme, SignatureStatus, Verdict

__all__ = ["Harvester", "SignerCertificates"]

log = logging.getLogger(__name__)


class SignerCertificates:
    """A revocation checker that knows nothing and remembers every
    certificate it is asked about, by SHA-256 fingerprint (hex)."""

    def __init__(self) -> None:
        self._seen: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def status(self, cert: x509.Certificate, issuer: x509.Certificate, *, at: datetime) -> RevocationStatus:
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        with self._lock:
            if len(self._seen) < 64:
                self._seen.setdefault(fingerprint, cert)
        return RevocationStatus.UNKNOWN

    def get(self, fingerprint: str) -> x509.Certificate | None:
        with self._lock:
            return self._seen.get(fingerprint.lower())


class Harvester:
    def __init__(
        self,
        store: KeyStore,
        domains: Iterable[str],
        *,
        audit: Callable[[], AuditSink | None] = lambda: None,
    ) -> None:
        self._store = store
        self.domains = frozenset(d.lower() for d in domains)
        self._audit = audit

    def wants(self, reader: str) -> bool:
        return reader.rpartition("@")[2].lower() in self.domains

    def run(
        self,
        reader: str,
        ctx: VerifyContext,
        operation: Callable[[VerifyContext], ProcessedMessage],
    ) -> ProcessedMessage:
        """``operation(ctx)``, then harvest from its verdict for ``reader``
        (a normalised addr-spec). A failure to store is logged, never
        passed on: the verdict is what the reader asked for."""
        if not self.wants(reader):
            return operation(ctx)
        seen = SignerCertificates()
        trust = dataclasses.replace(ctx.trust, checkers=(seen, *ctx.trust.checkers))
        result = operation(dataclasses.replace(ctx, trust=trust))
        try:
            self.harvest(reader, result.verdict, seen)
        except Exception:
            log.exception("could not store a correspondent certificate for %s", reader)
        return result

    def harvest(self, reader: str, verdict: Verdict, seen: SignerCertificates) -> list[StoredKey]:
        """Store the GREEN signers' certificates for ``reader``; the stored keys."""
        if verdict.banner is not Banner.GREEN:
            return []
        wanted: list[ParsedKey] = []
        for signer in verdict.signers:
            if (
                signer.scheme is not Scheme.SMIME
                or not signer.crypto_valid
                or signer.status is not SignatureStatus.VALID
            ):
                continue
            cert = seen.get(signer.fingerprint)
            if cert is None:
                continue
            parsed = _certificate_key(cert)
            if parsed is None or reader in parsed.addresses:
                # Unusable for encryption, or the reader's own certificate
                # (already held, with its private key).
                continue
            if self._known(reader, parsed):
                continue
            wanted.append(parsed)
        if not wanted:
            return []
        stored = self._store.add_keys(reader, wanted)
        sink = self._audit()
        for key in stored:
            log.info(
                "stored the certificate %s of %s for %s", key.key_id[:16], ",".join(key.addresses), reader
            )
            if sink is not None:
                sink.record(
                    AuditEvent(
                        action=AuditAction.KEY_IMPORT,
                        outcome=AuditOutcome.OK,
                        caller="harvest",
                        user=reader,
                        key_id=key.key_id,
                    )
                )
        return stored

    def _known(self, reader: str, parsed: ParsedKey) -> bool:
        # Already visible to the reader (its own imports, the owner's own
        # key on this server, keys for everyone): nothing to write.
        for address in parsed.addresses:
            if any(
                k.key_id == parsed.key_id
                for k in self._store.find_public(address, Scheme.SMIME, for_user=reader)
            ):
                return True
        return any(k.key_id == parsed.key_id for k in self._store.list_keys(reader))


def _certificate_key(cert: x509.Certificate) -> ParsedKey | None:
    from secmail.errors import SecmailError
    from secmail.keystore.importer import parse_key_file

    try:
        keys = parse_key_file(cert.public_bytes(Encoding.DER), None)
    except SecmailError:
        return None
    for key in keys:
        if key.private_data is None and key.usable_for_encryption and key.addresses:
            return key
    return None
