"""The application core behind the gRPC services, free of protobuf.

It turns a request's user and options into keys from the store, a
:class:`~secmail.context.VerifyContext`, and calls into
:mod:`secmail.message`. The servicer (``servicer.py``) only converts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, TypeVar, overload

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_private_key

from secmail.audit import AuditAction, AuditEvent, AuditOutcome, AuditSink, LogAuditSink, current_caller
from secmail.context import PGPCandidate, TrustContext, VerifyContext
from secmail.errors import ErrorReason, InputError, KeyNotFoundError, RecipientKeyMissingError, SecmailError
from secmail.keystore.api import (
    EVERYONE,
    KeyStore,
    StoredCRL,
    StoredKey,
    TrustBundle,
    TrustEntry,
    normalise_trust_scope,
)
from secmail.message import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DecryptionKeys,
    PGPSigningKey,
    Recipients,
    SigningKey,
    SMIMESigningKey,
    decrypt_message,
    encrypt_message,
    parse_headers,
    sign_message,
    verify_message,
)
from secmail.mime.addresses import normalise_addr_spec, read_from, read_recipients
from secmail.policy import DEFAULT_POLICY, RevocationMode, VerificationPolicy
from secmail.verdict import ProcessedMessage, Scheme

if TYPE_CHECKING:
    from secmail.service.harvest import Harvester
    from secmail.trust.revocation import RevocationChecker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settings:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: AuthEnvelopedData (AES-256-GCM) by default; EnvelopedData (AES-256-CBC)
    #: for sites whose correspondents cannot read AuthEnvelopedData yet.
    smime_authenticated_encryption: bool = True
    #: RSA-OAEP key transport (RFC 8551 SHOULD+); PKCS#1 v1.5 for sites whose
    #: correspondents use clients without OAEP (e.g. gpgsm 2.2).
    smime_rsa_oaep: bool = True
    policy: VerificationPolicy = DEFAULT_POLICY
    #: How long a process may reuse its parsed copy of the trust store
    #: (anchors, intermediates, CRLs); 0 reloads it for every message. Each
    #: use first compares a cheap stamp of the store, so a change made
    #: through any replica applies at once; this bounds the one case a
    #: stamp can miss (see SQLKeyStore.trust_stamp).
    trust_cache_seconds: float = 30.0
    #: How long a process may hold a user's unsealed, loaded private keys
    #: (with their certificates) between Sign, Decrypt and signed Encrypt
    #: requests; 0 reads and unseals them on every request. Each use still
    #: checks a cheap stamp of the user's key rows, so an import or a
    #: deletion made through any replica (or the admin CLI) applies at
    #: once; this bounds how long unsealed keys stay in memory. Validity
    #: dates are checked against each request's time, and every use is
    #: audited with its key id.
    key_cache_seconds: float = 2.0
    #: How long a process may reuse what it read of the key store's public
    #: keys (a reader's imported OpenPGP keys, the certificates found for
    #: an address) between Verify, Decrypt and Encrypt requests; 0 reads
    #: them on every request. Each use still checks a cheap stamp of the
    #: key rows involved (:meth:`KeyStore.keys_stamps`), so an import or a
    #: deletion made through any replica (or the admin CLI) applies at
    #: once; this bounds how long a change the stamp cannot see (a row
    #: edited by hand in the database) may go unseen. Validity is judged
    #: at each request's time.
    public_key_cache_seconds: float = 30.0


def _user(user: str) -> str:
    normalised = normalise_addr_spec(user)
    if normalised is None:
        raise InputError("user must be a plain addr-spec such as jean.dupont@ac-besancon.fr")
    return normalised


def _load_sealed_private_key(secret: bytes) -> PrivateKeyTypes:
    # The RSA consistency check costs ~40 ms per RSA-2048 load, on every
    # request. It is skipped only here: the key was validated against its
    # certificate at import, and the sealed copy is authenticated (AES-GCM
    # bound to the owner and key id), so it cannot have changed since.
    return load_der_private_key(secret, None, unsafe_skip_rsa_key_validation=True)


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _usable_now(key: StoredKey, at: datetime) -> bool:
    if key.not_before is not None and at < key.not_before:
        return False
    return key.not_after is None or at <= key.not_after


#: Users x schemes whose private keys a process holds at most (see
#: Secmail._held_keys); the entries loaded first are dropped first.
_KEY_CACHE_MAX = 512


class _HeldKey:
    """One stored private key as the process holds it: its public facts,
    the unsealed secret, and what is parsed from them on first use.

    Parsing once matters beyond the parse itself: a kept RSA key object
    keeps OpenSSL's Montgomery contexts, so each signature with it costs
    about half of one made with a freshly loaded key.
    """

    __slots__ = ("_pgp", "_secret", "_signing", "_smime", "stored")

    def __init__(self, stored: StoredKey, secret: bytes) -> None:
        self.stored = stored
        self._secret = secret
        self._smime: tuple[x509.Certificate, PrivateKeyTypes] | None = None
        self._signing: SigningKey | None = None
        self._pgp: bytes | None = None

    def __repr__(self) -> str:  # never print private material
        return f"_HeldKey(key_id={self.stored.key_id!r})"

    def smime(self) -> tuple[x509.Certificate, PrivateKeyTypes]:
        # Two threads may both parse on first use; either result is kept,
        # both are the same key.
        pair = self._smime
        if pair is None:
            pair = (
                x509.load_der_x509_certificate(self.stored.public_data),
                _load_sealed_private_key(self._secret),
            )
            self._smime = pair
        return pair

    def pgp_tsk(self) -> bytes:
        """The OpenPGP TSK, as a ``HeldTSK``: the same bytes, which keep
        their parse (and the engine's signer, OpenSSL's RSA keys) for as
        long as this key is held. What is judged at a time (bindings,
        expiry, revocation) is still judged at each request's."""
        tsk = self._pgp
        if tsk is None:
            from secmail.pgp.keys import HeldTSK

            tsk = self._pgp = HeldTSK(self._secret)
        return tsk

    def signing_key(self) -> SigningKey:
        key = self._signing
        if key is None:
            if self.stored.scheme is Scheme.OPENPGP:
                key = PGPSigningKey(tsk=self.pgp_tsk(), addresses=self.stored.addresses)
            else:
                cert, private_key = self.smime()
                key = SMIMESigningKey(
                    cert=cert,
                    private_key=private_key,
                    chain=tuple(x509.load_der_x509_certificate(c) for c in self.stored.chain),
                    addresses=self.stored.addresses,
                )
            self._signing = key
        return key


_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class _Stamped(Generic[_V]):
    #: time.monotonic() before the stamp was read.
    loaded: float
    #: The owners whose local key changes drop the entry (_StampedCache.changed).
    owners: tuple[str, ...]
    #: The store's stamp of the rows ``value`` came from, read before them.
    stamp: object
    value: _V


class _StampedCache(Generic[_V]):
    """Values read from the store, reused between requests while the store's
    stamp of the rows they came from is unchanged, for at most a TTL.

    The stamp is read before the value, so a change between the two reads
    only costs the next request a re-read. A change made through this
    process drops the entries of its owner at once (:meth:`changed`), and
    a read that raced with it is used once but not kept. Bounded
    (``max_entries``); the entries loaded first are dropped first, and
    expired ones as new ones come in (and by :meth:`purge`).
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Stamped[_V]] = OrderedDict()
        self._generation = 0

    def get(
        self,
        slot: Hashable,
        owners: tuple[str, ...],
        ttl: float,
        stamp: Callable[[], object],
        load: Callable[[], _V],
        *,
        started: float | None = None,
    ) -> _V:
        """The value for ``slot``: held, or ``load()`` (and kept) when the
        ``stamp()`` read now differs, the entry is older than ``ttl``, or
        there is none. ``started``: the request's start (default now)."""
        if started is None:
            started = time.monotonic()
        with self._lock:
            entry = self._entries.get(slot)
            generation = self._generation
        # The store is read outside the lock: other requests must not wait.
        current = stamp()
        if entry is not None and started - entry.loaded < ttl and entry.stamp == current:
            return entry.value
        value = load()
        with self._lock:
            if generation != self._generation:
                return value  # changed here meanwhile: used once, not kept
            entries = self._entries
            entries.pop(slot, None)
            entries[slot] = _Stamped(started, owners, current, value)
            while len(entries) > self.max_entries or started - next(iter(entries.values())).loaded >= ttl:
                entries.popitem(last=False)
        return value

    def changed(self, owner: str) -> None:
        """Drop every entry made of ``owner``'s keys, at once."""
        with self._lock:
            self._generation += 1
            for slot in [s for s, e in self._entries.items() if owner in e.owners]:
                del self._entries[slot]

    def purge(self, ttl: float) -> bool:
        """Drop the entries older than ``ttl``; whether any is left."""
        with self._lock:
            now = time.monotonic()
            entries = self._entries
            while entries and now - next(iter(entries.values())).loaded >= ttl:
                entries.popitem(last=False)
            return bool(entries)


@dataclass
class _Used:
    """Keys or anchors an audited operation touched (filled as it runs)."""

    ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _TrustSnapshot:
    #: time.monotonic() before the stamp was read.
    loaded: float
    #: KeyStore.trust_stamp, read before the store.
    stamp: object
    entries: tuple[TrustEntry, ...]
    certificates: dict[str, x509.Certificate]
    crls: tuple[x509.CertificateRevocationList, ...]


class Secmail:
    def __init__(
        self, store: KeyStore, settings: Settings | None = None, *, audit: AuditSink | None = None
    ) -> None:
        self.store = store
        self.settings = settings or Settings()
        #: Where private-key uses, key and trust changes are recorded (the
        #: SQL audit table in the server; the log by default). Others record
        #: through it too (permission denials).
        self.audit: AuditSink = audit or LogAuditSink()
        #: Online revocation sources (OCSP, fetched CRLs), shared by the
        #: process (server.build_app); empty: imported CRLs only.
        self.revocation_checkers: tuple[RevocationChecker, ...] = ()
        #: Keeps GREEN signers' certificates for readers of opted-in domains.
        self.harvester: Harvester | None = None
        # Private keys held between requests (_held_keys): (user, scheme)
        # -> keys, oldest load first. A change made here bumps the
        # generation, so a read that started before it is not kept.
        self._held: _StampedCache[tuple[_HeldKey, ...]] = _StampedCache(_KEY_CACHE_MAX)
        self._sweeper_lock = threading.Lock()
        #: Drops held keys once they are older than key_cache_seconds, also
        #: when no further request comes (started with the first held key).
        self._key_sweeper: threading.Thread | None = None
        # Public keys read from the store, reused between requests.
        self._public = _PublicKeys(store)
        self._trust_lock = threading.Lock()
        self._trust_snapshot: _TrustSnapshot | None = None

    def _trust(self) -> _TrustSnapshot:
        """The parsed trust store, reloaded when the store's trust stamp
        changes (any replica's import or removal, at once) and at least
        every ``trust_cache_seconds``.

        Reading and parsing it costs ~1-2 ms; the stamp, one cheap row,
        keeps that off the per-message path without letting a replica use
        a CA another one removed.
        """
        ttl = self.settings.trust_cache_seconds
        started = time.monotonic()
        # Read before the trust store (as KeyStore.trust_stamp asks): a
        # change in between only makes the next request reload.
        stamp = self.store.trust_stamp() if ttl > 0 else None
        snap = self._trust_snapshot
        if snap is not None and started - snap.loaded < ttl and snap.stamp == stamp:
            return snap
        with self._trust_lock:
            snap = self._trust_snapshot
            if snap is not None and started - snap.loaded < ttl and snap.stamp == stamp:
                return snap  # another thread reloaded it while this one waited
            from secmail.trust import interned

            entries = self.store.list_trust()
            # Interned: an unchanged store yields the very same objects at
            # every reload, which the path-validation caches key on.
            certs = {e.anchor_id: interned.certificate(e.data) for e in entries if e.scheme is Scheme.SMIME}
            crls = tuple(interned.crl(c.data) for c in self.store.list_crls())
            snap = _TrustSnapshot(started, stamp, tuple(entries), certs, crls)
            self._trust_snapshot = snap
            return snap

    def _trust_changed(self) -> None:
        self._trust_snapshot = None

    # --- audit --------------------------------------------------------------

    @contextmanager
    def _audited(
        self,
        action: AuditAction,
        user: str = "",
        *,
        key_id: str = "",
        only_if_used: bool = False,
        enabled: bool = True,
    ) -> Iterator[_Used]:
        """Record one event per id in the yielded list (or one without an id)
        when the block ends: OK, or FAILED with the error's stable reason.

        Recorded before the result goes back, and a failure to record fails
        the operation: nothing is done unaudited. ``only_if_used``: nothing
        is recorded for a success that used no key (decrypting a message
        that was not encrypted).
        """
        used = _Used([key_id] if key_id else [])
        if not enabled:
            yield used
            return
        try:
            yield used
        except Exception as exc:
            reason = exc.reason.value if isinstance(exc, SecmailError) else ErrorReason.INTERNAL.value
            try:
                self._record(action, AuditOutcome.FAILED, user, used.ids, reason)
            except Exception:
                log.exception("could not record a failed %s in the audit log", action.value)
            raise
        if used.ids or not only_if_used:
            self._record(action, AuditOutcome.OK, user, used.ids, "")

    def _record(
        self, action: AuditAction, outcome: AuditOutcome, user: str, ids: Sequence[str], reason: str
    ) -> None:
        caller = current_caller.get()
        for key_id in dict.fromkeys(ids or [""]):
            self.audit.record(AuditEvent(action, outcome, caller, user=user, key_id=key_id, reason=reason))

    # --- keys ---------------------------------------------------------------

    def import_key(self, user: str, data: bytes, passphrase: str | None) -> list[StoredKey]:
        from secmail.keystore.importer import parse_key_file

        owner = user if user == EVERYONE else _user(user)
        try:
            with self._audited(AuditAction.KEY_IMPORT, owner) as used:
                parsed = parse_key_file(data, passphrase or None)
                stored = self.store.add_keys(owner, parsed)
                used.ids.extend(k.key_id for k in stored)
        finally:
            # Even on failure: the write may have committed before the
            # audit record failed.
            self._keys_changed(owner)
        return stored

    def list_keys(self, user: str) -> list[StoredKey]:
        return self.store.list_keys(user if user == EVERYONE else _user(user))

    def delete_key(self, user: str, key_id: str) -> None:
        owner = user if user == EVERYONE else _user(user)
        try:
            with self._audited(AuditAction.KEY_DELETE, owner, key_id=key_id.lower()[:128]):
                self.store.delete_key(owner, key_id.lower())
        finally:
            self._keys_changed(owner)  # as in import_key

    def export_public(self, user: str, key_id: str) -> tuple[StoredKey, bytes, str]:
        """The public half of one stored key: (key, data, media type), the
        certificate as PEM or the OpenPGP certificate armored. Built from
        ``public_data`` only; the sealed private key is never read."""
        owner = user if user == EVERYONE else _user(user)
        wanted = key_id.strip().lower()
        found = [k for k in self.store.list_keys(owner) if k.key_id.lower() == wanted]
        if not found:
            raise KeyNotFoundError(f"no key {key_id[:128]} for this user", metadata={"key_id": key_id[:128]})
        key = found[0]
        if key.scheme is Scheme.SMIME:
            from cryptography.hazmat.primitives.serialization import Encoding

            pem = x509.load_der_x509_certificate(key.public_data).public_bytes(Encoding.PEM)
            return key, pem, "application/pem-certificate-chain"
        from secmail.pgp import _backend
        from secmail.pgp import packets as pgp_packets

        secret_tags = (pgp_packets.TAG_SECRET_KEY, pgp_packets.TAG_SECRET_SUBKEY)
        if any(p.tag in secret_tags for p in pgp_packets.read_packets(key.public_data)):
            # public_data never holds secret packets (the importer strips
            # them); refuse rather than trust that here.
            raise SecmailError("the stored OpenPGP certificate holds secret key packets")
        return key, _backend.armor(key.public_data, "public-key"), "application/pgp-keys"

    # --- trust --------------------------------------------------------------

    def import_trust(
        self, name: str, data: bytes, *, domains: Sequence[str] = (), revocation_policy: str = ""
    ) -> list[TrustEntry]:
        """Import a bundle, scoped to readers of ``domains`` (none: every
        reader), with its revocation policy; see :meth:`trust_context`."""
        from dataclasses import replace

        from secmail.keystore.importer import parse_trust_bundle

        try:
            with self._audited(AuditAction.TRUST_IMPORT) as used:
                if not name.strip():
                    raise InputError("a trust bundle needs a name")
                scope, policy = normalise_trust_scope(domains, revocation_policy)
                entries = [
                    replace(e, domains=scope, revocation_policy=policy)
                    for e in parse_trust_bundle(name.strip(), data)
                ]
                stored = self.store.add_trust(entries)
                used.ids.extend(e.anchor_id for e in stored)
        finally:
            # Even on failure: the write may have committed before the audit
            # record failed (as in import_key).
            self._trust_changed()
        return stored

    def list_trust(self, bundle: str | None = None) -> list[TrustEntry]:
        return self.store.list_trust(bundle or None)

    def list_trust_bundles(self) -> list[TrustBundle]:
        return self.store.list_trust_bundles()

    def remove_trust(self, anchor_id: str) -> None:
        try:
            with self._audited(AuditAction.TRUST_REMOVE, key_id=anchor_id.lower()[:128]):
                self.store.remove_trust(anchor_id.lower())
        finally:
            # Even on failure: the write may have committed before the audit
            # record failed (as in import_key).
            self._trust_changed()

    def remove_trust_bundle(self, name: str) -> list[TrustEntry]:
        try:
            with self._audited(AuditAction.TRUST_REMOVE) as used:
                removed = self.store.remove_trust_bundle(name.strip())
                used.ids.extend(e.anchor_id for e in removed)
        finally:
            # Even on failure: the write may have committed before the audit
            # record failed (as in import_key).
            self._trust_changed()
        return removed

    def import_crl(self, data: bytes) -> StoredCRL:
        from secmail.keystore.importer import parse_crl

        try:
            with self._audited(AuditAction.CRL_IMPORT) as used:
                crl = parse_crl(data)
                # Only a CRL signed by a CA of the trust store is kept: the store
                # keeps the newest CRL per issuer, so an unsigned one with a
                # far-future thisUpdate would otherwise displace the real one.
                parsed = x509.load_der_x509_crl(crl.data)
                issuers = [
                    (e.anchor_id, x509.load_der_x509_certificate(e.data))
                    for e in self.store.list_trust()
                    if e.scheme is Scheme.SMIME
                ]
                signers = [i for i, c in issuers if c.subject == parsed.issuer and _crl_signed_by(parsed, c)]
                if not signers:
                    raise InputError(
                        "the CRL is not signed by a CA of the trust store: import its CA bundle first",
                        reason=ErrorReason.INVALID_CERTIFICATE,
                    )
                # The audit names the CRL by the trust-store CA that signed it.
                used.ids.append(signers[0])
                self.store.add_crl(crl)
        finally:
            # Even on failure: the write may have committed before the audit
            # record failed (as in import_key).
            self._trust_changed()
        return crl

    def trust_entries_for(self, reader: str | None, snap: _TrustSnapshot | None = None) -> list[TrustEntry]:
        """The trust entries that apply to ``reader``: those of bundles with
        no domains, and of bundles whose domains include the reader's (exact
        match, no subdomains). None (no reader): unscoped bundles only.
        ``snap``: the snapshot to read (default: the current one)."""
        domain = reader.rpartition("@")[2].lower() if reader else None
        entries = (snap or self._trust()).entries
        return [e for e in entries if not e.domains or (domain is not None and domain in e.domains)]

    def trust_context(self, reader: str | None = None) -> TrustContext:
        """The S/MIME trust for ``reader`` (see :meth:`trust_entries_for`).

        Revocation is hard-fail when the service policy says so or when any
        bundle that applies to the reader says "hard-fail" (whether or not
        the path at hand runs through it: one TrustContext serves the whole
        message). A bundle's "soft-fail" never weakens the service policy.
        """
        anchors: list[x509.Certificate] = []
        intermediates: list[x509.Certificate] = []
        revocation = self.settings.policy.revocation
        snap = self._trust()
        # The same snapshot for the entries and their parsed certificates.
        for entry in self.trust_entries_for(reader, snap):
            if entry.revocation_policy == RevocationMode.HARD_FAIL.value:
                revocation = RevocationMode.HARD_FAIL
            if entry.scheme is not Scheme.SMIME:
                continue
            cert = snap.certificates[entry.anchor_id]
            (anchors if entry.is_anchor else intermediates).append(cert)
        crls = snap.crls
        return TrustContext(
            anchors=tuple(anchors),
            intermediates=tuple(intermediates),
            crls=crls,
            revocation=revocation,
            checkers=self.revocation_checkers,
        )

    # --- verification -------------------------------------------------------

    def _context(self, user: str, message: bytes, at: datetime | None) -> VerifyContext:
        when = at or datetime.now(UTC)
        return VerifyContext(
            at=when,
            policy=self.settings.policy,
            trust=self.trust_context(user),
            pgp_lookup=_PGPLookup(self, user, message, when),
        )

    def verify(self, user: str, message: bytes, at: datetime | None) -> ProcessedMessage:
        reader = _user(user)
        ctx = self._context(reader, message, at)
        if self.harvester is not None:
            return self.harvester.run(
                reader, ctx, lambda c: verify_message(message, c, max_bytes=self.settings.max_message_bytes)
            )
        return verify_message(message, ctx, max_bytes=self.settings.max_message_bytes)

    def decrypt(self, user: str, message: bytes, at: datetime | None) -> ProcessedMessage:
        reader = _user(user)
        ctx = self._context(reader, message, at)
        # Every private key unsealed for this message is a use, recorded
        # by key id (the engines try the reader's keys in turn).
        with self._audited(AuditAction.DECRYPT, reader, only_if_used=True) as used:

            def pgp_keys() -> list[bytes]:
                # Held between requests as the S/MIME keys are (_held_keys),
                # each parsed once (_HeldKey.pgp_tsk); every key handed
                # over is still audited as used.
                held = self._held_keys(reader, Scheme.OPENPGP)
                used.ids.extend(h.stored.key_id for h in held)
                return [h.pgp_tsk() for h in held]

            keys = DecryptionKeys(smime=lambda: self._smime_private_keys(reader, used), pgp=pgp_keys)
            if self.harvester is not None:
                return self.harvester.run(
                    reader,
                    ctx,
                    lambda c: decrypt_message(message, c, keys, max_bytes=self.settings.max_message_bytes),
                )
            return decrypt_message(message, ctx, keys, max_bytes=self.settings.max_message_bytes)

    def _smime_private_keys(
        self, user: str, used: _Used | None = None
    ) -> list[tuple[x509.Certificate, PrivateKeyTypes]]:
        out: list[tuple[x509.Certificate, PrivateKeyTypes]] = []
        for held in self._held_keys(user, Scheme.SMIME):
            if used is not None:
                used.ids.append(held.stored.key_id)
            out.append(held.smime())
        if not out:
            raise KeyNotFoundError(f"no S/MIME private key for {user}")
        return out

    # --- signing and encryption ---------------------------------------------

    def signing_key(self, user: str, scheme: Scheme, at: datetime) -> SigningKey:
        return self._signing_key(user, scheme, at)[1]

    def _signing_key(self, user: str, scheme: Scheme, at: datetime) -> tuple[str, SigningKey]:
        # The validity dates are checked here, against this request's time,
        # never when the keys were read (they may be held for a while).
        candidates = [
            h
            for h in self._held_keys(user, scheme)
            if h.stored.usable_for_signing and _usable_now(h.stored, at)
        ]
        if not candidates:
            raise KeyNotFoundError(
                f"no usable {scheme.value} signing key for {user}",
                metadata={"user": user, "scheme": scheme.value},
            )
        held = max(candidates, key=lambda h: h.stored.created_at)
        return held.stored.key_id, held.signing_key()

    def _held_keys(self, user: str, scheme: Scheme) -> tuple[_HeldKey, ...]:
        """The user's private keys of ``scheme``, newest first, unsealed;
        held for up to ``Settings.key_cache_seconds``.

        Reading and unsealing them, and loading the private key, cost
        ~1.5 ms per Sign; held, a Sign pays for a one-row stamp query and
        the signature (and a kept RSA key signs twice as fast as a fresh
        one). Safe because the held keys are used only while the store's
        stamp of the user's key rows (read before the keys were) is
        unchanged: any import, re-import or delete, through any replica,
        changes it, and the keys are read again. import_key/delete_key
        through this process also drop the entry at once, and a read that
        raced with them is not kept. What depends on the request (validity
        dates against its time, the audit record of the key id used) is
        still done per request. The cache is bounded (``_KEY_CACHE_MAX``)
        and expired entries are dropped as new ones come in, so unsealed
        keys do not linger in memory for idle users.
        """
        ttl = self.settings.key_cache_seconds

        def load() -> tuple[_HeldKey, ...]:
            return tuple(_HeldKey(k, s) for k, s in self.store.private_keys(user, scheme))

        if ttl <= 0:
            return load()
        keys = self._held.get(
            (user, scheme), (user,), ttl, lambda: self.store.private_keys_stamp(user, scheme), load
        )
        with self._sweeper_lock:
            if self._key_sweeper is None:
                self._key_sweeper = threading.Thread(
                    target=self._sweep_held_keys, args=(ttl,), name="secmail-key-sweeper", daemon=True
                )
                self._key_sweeper.start()
        return keys

    @property
    def _key_cache(self) -> OrderedDict[Hashable, _Stamped[tuple[_HeldKey, ...]]]:
        """The held keys by (user, scheme), oldest load first (for tests)."""
        return self._held._entries

    def _sweep_held_keys(self, ttl: float) -> None:
        """Drop held keys past ``ttl``, every ``ttl`` seconds, until none is
        held: unsealed keys must not outlive their time in an idle process."""
        pause = threading.Event()  # waits in real time, whatever clock the cache reads
        while True:
            pause.wait(ttl)
            with self._sweeper_lock:
                if not self._held.purge(ttl):
                    self._key_sweeper = None
                    return

    def _keys_changed(self, owner: str) -> None:
        """Drop the keys held for ``owner`` (all schemes), at once."""
        self._held.changed(owner)
        self._public.changed(owner)

    def sign(
        self, user: str, message: bytes, scheme: Scheme, *, opaque: bool, header_protection: bool
    ) -> bytes:
        signer = _user(user)
        at = datetime.now(UTC)
        with self._audited(AuditAction.SIGN, signer) as used:
            key_id, key = self._signing_key(signer, scheme, at)
            used.ids.append(key_id)
            return sign_message(
                message,
                key,
                opaque=opaque and scheme is Scheme.SMIME,
                header_protection=header_protection,
                at=at,
                max_bytes=self.settings.max_message_bytes,
            )

    def encrypt(
        self,
        user: str,
        message: bytes,
        scheme: Scheme,
        recipients: Sequence[str],
        *,
        sign: bool,
        header_protection: bool,
    ) -> bytes:
        sender = _user(user)
        at = datetime.now(UTC)
        # encrypt_message parses (and checks) the whole message; the header
        # section is enough to read its recipients.
        root = parse_headers(message, max_bytes=self.settings.max_message_bytes)
        wanted = list(recipients) or read_recipients(root)
        if not wanted:
            raise InputError("the message has no recipients (To, Cc, Bcc) and none were given")
        addresses = [normalise_addr_spec(a) or a for a in wanted]
        if sender not in addresses:
            addresses.append(sender)
        resolved = self.recipient_keys(sender, scheme, addresses, at)
        # Encrypting uses public keys only; signing it too is a private-key
        # use, audited as a signature.
        with self._audited(AuditAction.SIGN, sender, enabled=sign) as used:
            signer: SigningKey | None = None
            if sign:
                key_id, signer = self._signing_key(sender, scheme, at)
                used.ids.append(key_id)
            return encrypt_message(
                message,
                scheme,
                resolved,
                signer=signer,
                header_protection=header_protection,
                authenticated=self.settings.smime_authenticated_encryption,
                rsa_oaep=self.settings.smime_rsa_oaep,
                at=at,
                max_bytes=self.settings.max_message_bytes,
            )

    def recipient_keys(
        self, sender: str, scheme: Scheme, addresses: Sequence[str], at: datetime
    ) -> Recipients:
        missing: list[str] = []
        smime: list[x509.Certificate] = []
        pgp: list[bytes] = []
        ttl = self.settings.public_key_cache_seconds
        for address in dict.fromkeys(addresses):
            found = [
                k
                for k in self._public.find(address, scheme, for_user=sender, ttl=ttl)
                if k.usable_for_encryption and _usable_now(k, at)
            ]
            if scheme is Scheme.OPENPGP:
                from secmail.pgp.keys import usable_encryption_cert

                found = [k for k in found if usable_encryption_cert(k.public_data, at)]
            if not found:
                missing.append(address)
                continue
            best = max(found, key=lambda k: k.created_at)
            if scheme is Scheme.SMIME:
                smime.append(x509.load_der_x509_certificate(best.public_data))
            else:
                pgp.append(best.public_data)
        if missing:
            raise RecipientKeyMissingError(missing)
        return Recipients(smime=tuple(smime), pgp=tuple(pgp))


class _PGPLookup:
    """Candidate OpenPGP certificates for a signature, authenticated or not.

    A key is *authenticated* for the reader (its signatures can be GREEN)
    when someone answerable for the reader vouched for it:

    * the reader imported it (their own key pairs and the correspondent
      certificates they checked and added to their address book), or an
      admin imported it for everyone (``*``);
    * or its valid User ID with the From address is certified by an
      OpenPGP trust anchor an admin imported through TrustService (e.g.
      the académie's CA key). Another User ID the holder added, which the
      anchor did not certify, confers nothing.

    Other keys that the store shows for the From address (the sender's own
    key held by this service) are *candidates* only: the signature is
    checked and its signer named, but the verdict says UNTRUSTED_CHAIN
    (YELLOW). The sender's own upload is not a certification: it shows only
    that someone logged in as that mailbox (a delegate, a shared mailbox, a
    hijacked session) put a key there, which the admin never vouched for.
    It is also what S/MIME does with a certificate that no imported anchor
    issued, and both schemes must give the same verdict. An académie that
    wants colleagues' keys GREEN without address-book imports certifies
    them with its CA key and imports that key as a trust anchor.

    The engine matches the signature's issuer against every candidate's
    (sub)keys itself.

    The candidates come in that order, and the sender's keys (a database
    query, and a parse of the message for its From address) are fetched
    only when iteration reaches them: a verifier that stops at a clean
    verdict from an imported key (``secmail.pgp.verify.judge_signature``)
    never pays for them, and could not have used them.
    """

    def __init__(self, app: Secmail, user: str, message: bytes, at: datetime) -> None:
        self._app = app
        self._user = user
        self._message = message
        self._at = at
        self._imported: dict[str, PGPCandidate] | None = None
        self._from_sender: list[PGPCandidate] | None = None
        self._view: _PublicView | None = None

    def _public(self) -> _PublicView:
        # Made on first use: a message without OpenPGP signatures reads no
        # stamp. The imported keys' owners are stamped together; the
        # sender's, only if iteration gets that far.
        view = self._view
        if view is None:
            app = self._app
            view = self._view = app._public.view(
                Scheme.OPENPGP, app.settings.public_key_cache_seconds, (self._user, EVERYONE)
            )
        return view

    def __call__(self, key_id: str) -> Sequence[PGPCandidate]:
        return _LazyCandidates(self)

    def candidates(self) -> Iterator[PGPCandidate]:
        yield from self._imported_keys().values()
        if self._from_sender is None:
            self._from_sender = self._sender_keys()
        yield from self._from_sender

    def _imported_keys(self) -> dict[str, PGPCandidate]:
        if self._imported is None:
            public = self._public()
            seen: dict[str, PGPCandidate] = {}
            for owner in (self._user, EVERYONE):
                for k in public.owned(owner):
                    seen[k.key_id] = PGPCandidate(k.public_data, authenticated=True)
            self._imported = seen
        return self._imported

    def _sender_keys(self) -> list[PGPCandidate]:
        imported = self._imported_keys()
        out: dict[str, PGPCandidate] = {}
        try:
            # The header section is all the From check needs: the pipeline
            # already parsed (and size-checked) the whole message.
            sender = read_from(parse_headers(self._message, max_bytes=len(self._message))).address
        except SecmailError:
            sender = None
        anchors = [
            e.data
            for e in self._app.trust_entries_for(self._user)
            if e.scheme is Scheme.OPENPGP and e.is_anchor
        ]
        if sender is not None:
            from secmail.pgp.keys import is_certified_by

            ttl = self._app.settings.public_key_cache_seconds
            for k in self._app._public.find(sender, Scheme.OPENPGP, for_user=self._user, ttl=ttl):
                if k.key_id in imported or k.key_id in out:
                    continue
                # The anchor must have certified the User ID of *this*
                # sender, not just any User ID of the key.
                certified = bool(anchors) and is_certified_by(
                    k.public_data, anchors, self._at, address=sender
                )
                out[k.key_id] = PGPCandidate(k.public_data, authenticated=certified)
        return list(out.values())


class _LazyCandidates(Sequence[PGPCandidate]):
    """A lookup's candidates, fetched as iteration reaches them."""

    def __init__(self, lookup: _PGPLookup) -> None:
        self._lookup = lookup

    def __iter__(self) -> Iterator[PGPCandidate]:
        return self._lookup.candidates()

    def __len__(self) -> int:
        return len(list(self._lookup.candidates()))

    @overload
    def __getitem__(self, index: int) -> PGPCandidate: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[PGPCandidate]: ...
    def __getitem__(self, index: int | slice) -> PGPCandidate | Sequence[PGPCandidate]:
        return list(self._lookup.candidates())[index]


#: Public-key lookups a process keeps at most (see _PublicKeys); the
#: entries loaded first are dropped first.
_PUBLIC_CACHE_MAX = 2048


class _PublicKeys(_StampedCache[tuple[StoredKey, ...]]):
    """What a process read of the store's public keys, reused between
    requests: an owner's keys of a scheme (``list_keys``: the reader's and
    everyone's imported OpenPGP keys, on every OpenPGP Verify), checked
    against the owners' stamps (``keys_stamps``), and the keys found for
    an address (``find_public``: recipients on every Encrypt, a signer's
    From address), checked against a stamp of exactly the rows that lookup
    reads (``find_public_stamp``), so that its cost does not grow with the
    keys imported for everyone.

    Reading them costs ~0.5-0.8 ms per lookup (ORM queries, and a row per
    key), more than the rest of a Verify. Safe because an entry is used
    only while the store's stamps of every owner whose rows make it
    (read before the entry was) are unchanged: an import, re-import or
    delete of any of those owners' keys, through any replica, the admin
    CLI or the harvester, changes a stamp, and the entry is read again.
    A change made through this process also drops the entries at once,
    and a read that raced with it is not kept. Entries hold public facts
    only, never judged at a time: what depends on the request (validity
    at its time, trust anchors, the verdict) is computed per request. The
    cache is bounded (``_PUBLIC_CACHE_MAX``) and entries older than
    ``Settings.public_key_cache_seconds`` are read again, and dropped as
    new ones come in.
    """

    def __init__(self, store: KeyStore) -> None:
        super().__init__(_PUBLIC_CACHE_MAX)
        self._store = store

    def view(self, scheme: Scheme, ttl: float, owners: Iterable[str]) -> _PublicView:
        """One request's view, with the stamps of ``owners`` read now (in
        one statement); others are read when a lookup needs them."""
        return _PublicView(self, scheme, ttl, owners)

    def find(self, address: str, scheme: Scheme, *, for_user: str, ttl: float) -> tuple[StoredKey, ...]:
        """``KeyStore.find_public(address, scheme, for_user=for_user)``,
        reused while its own stamp (``find_public_stamp``: the rows of
        exactly the keys it reads) is unchanged and for at most ``ttl``."""
        store = self._store
        if ttl <= 0:
            return tuple(store.find_public(address, scheme, for_user=for_user))
        norm = normalise_addr_spec(address)
        if norm is None:
            return ()  # what find_public answers, without a query
        return self.get(
            ("find", scheme.value, norm, for_user),
            # The owners whose local changes drop the entry at once.
            (for_user, norm, EVERYONE),
            ttl,
            lambda: store.find_public_stamp(norm, scheme, for_user=for_user),
            lambda: tuple(store.find_public(norm, scheme, for_user=for_user)),
        )


class _PublicView:
    """The public keys one request looks up (see :class:`_PublicKeys`)."""

    def __init__(self, cache: _PublicKeys, scheme: Scheme, ttl: float, owners: Iterable[str]) -> None:
        self._cache = cache
        self._scheme = scheme
        self._ttl = ttl
        self._started = time.monotonic()
        self._stamps: dict[str, object] = {}
        if ttl > 0:
            self._stamp(owners)

    def _stamp(self, owners: Iterable[str]) -> None:
        missing = [o for o in dict.fromkeys(owners) if o not in self._stamps]
        if missing:
            self._stamps.update(self._cache._store.keys_stamps(missing, self._scheme))

    def owned(self, owner: str) -> tuple[StoredKey, ...]:
        """``owner``'s keys of the scheme, as ``KeyStore.list_keys`` lists them."""
        store, scheme = self._cache._store, self._scheme
        return self._lookup(
            ("owned", scheme.value, owner),
            (owner,),
            lambda: tuple(k for k in store.list_keys(owner) if k.scheme is scheme),
        )

    def _lookup(
        self, slot: tuple[str, ...], owners: tuple[str, ...], load: Callable[[], tuple[StoredKey, ...]]
    ) -> tuple[StoredKey, ...]:
        ttl = self._ttl
        if ttl <= 0:
            return load()

        def stamps() -> tuple[object, ...]:
            # The owners not stamped when the view was made, in one statement.
            self._stamp(owners)
            return tuple(self._stamps[o] for o in owners)

        return self._cache.get(slot, owners, ttl, stamps, load, started=self._started)
