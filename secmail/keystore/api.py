"""The key and trust store interface, shared by both schemes.

Public material (certificates, OpenPGP certs) is stored as is; private
material is sealed (see ``secmail/keystore/seal.py``) and only unsealed in
memory to sign or decrypt (the service holds a user's unsealed keys for at
most ``Settings.key_cache_seconds`` between such requests). Nothing here
ever returns private material except :meth:`KeyStore.private_keys`, which
the service calls only to sign or decrypt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from secmail.errors import ErrorReason, InputError
from secmail.mime.addresses import normalise_addr_spec
from secmail.policy import RevocationMode
from secmail.verdict import Scheme

#: The pseudo-user under which an admin imports correspondent keys for
#: everyone.
EVERYONE = "*"

#: What a trust bundle may say about revocation ("" defers to the policy).
REVOCATION_POLICIES = ("", *(mode.value for mode in RevocationMode))


def normalise_trust_scope(domains: Sequence[str], revocation_policy: str) -> tuple[tuple[str, ...], str]:
    """A bundle's scope as stored: domains lower-cased, checked, de-duplicated
    and sorted; the policy one of :data:`REVOCATION_POLICIES`."""
    out: set[str] = set()
    for domain in domains:
        norm = normalise_addr_spec(f"postmaster@{domain.strip().rstrip('.')}") if domain.strip() else None
        if norm is None:
            raise InputError(
                f"not a mail domain: {domain[:80]!r} (IDNs in their xn-- form)",
                reason=ErrorReason.INVALID_ARGUMENT,
            )
        out.add(norm.split("@", 1)[1])
    policy = revocation_policy.strip().lower()
    if policy not in REVOCATION_POLICIES:
        raise InputError(
            f"revocation policy must be one of {', '.join(p for p in REVOCATION_POLICIES if p)}",
            reason=ErrorReason.INVALID_ARGUMENT,
        )
    return tuple(sorted(out)), policy


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """One key or certificate read from an imported file, before storage.

    ``private_data`` is unencrypted PKCS#8 DER (S/MIME) or an unprotected
    binary transferable secret key (OpenPGP); the store seals it at once.
    """

    scheme: Scheme
    key_id: str
    public_data: bytes
    private_data: bytes | None
    addresses: tuple[str, ...]
    not_before: datetime | None
    not_after: datetime | None
    algorithm: str
    subject: str
    issuer: str = ""
    #: DER certificates that came with it (PKCS#12 chain), S/MIME only.
    chain: tuple[bytes, ...] = ()
    problems: tuple[str, ...] = ()
    usable_for_encryption: bool = True
    usable_for_signing: bool = False

    def __repr__(self) -> str:  # never print private material
        return (
            f"ParsedKey(scheme={self.scheme}, key_id={self.key_id!r}, "
            f"has_private_key={self.private_data is not None})"
        )


@dataclass(frozen=True, slots=True)
class StoredKey:
    """Public facts about a stored key (the KeyInfo of the API)."""

    user: str
    scheme: Scheme
    key_id: str
    public_data: bytes
    has_private_key: bool
    addresses: tuple[str, ...]
    not_before: datetime | None
    not_after: datetime | None
    algorithm: str
    subject: str
    issuer: str
    chain: tuple[bytes, ...]
    problems: tuple[str, ...]
    usable_for_encryption: bool
    usable_for_signing: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TrustEntry:
    """A trust anchor, an intermediate, or an OpenPGP trust-anchor key."""

    anchor_id: str
    bundle: str
    scheme: Scheme
    data: bytes
    is_anchor: bool
    subject: str
    not_before: datetime | None
    not_after: datetime | None
    #: The bundle's scope: lower-cased mail domains whose readers use it;
    #: empty for every reader. Set per bundle (see :class:`TrustBundle`).
    domains: tuple[str, ...] = ()
    #: The bundle's revocation policy: "soft-fail", "hard-fail", or "" for
    #: the service policy's.
    revocation_policy: str = ""


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """A named set of trust entries with one scope and revocation policy.

    Importing into a bundle sets its scope and policy to the import's: the
    last import describes the bundle.
    """

    name: str
    domains: tuple[str, ...]
    revocation_policy: str
    anchors: int
    intermediates: int
    created_at: datetime
    updated_at: datetime

    def applies_to(self, reader_domain: str) -> bool:
        return not self.domains or reader_domain.lower() in self.domains


@dataclass(frozen=True, slots=True)
class StoredCRL:
    issuer: str
    data: bytes
    this_update: datetime
    next_update: datetime | None


class KeyStore(Protocol):
    """Per-user keys, trust anchors and CRLs."""

    def add_keys(self, user: str, keys: Sequence[ParsedKey]) -> list[StoredKey]:
        """Store all keys atomically (all or none); re-import replaces."""
        ...

    def list_keys(self, user: str) -> list[StoredKey]: ...

    def delete_key(self, user: str, key_id: str) -> None:
        """Raises KeyNotFoundError when the user has no such key."""
        ...

    def find_public(self, address: str, scheme: Scheme, *, for_user: str) -> list[StoredKey]:
        """Certificates for ``address`` visible to ``for_user``: its own
        imports, the address owner's own keys, and keys imported for
        EVERYONE. Matching is on the normalised addr-spec."""
        ...

    def private_keys(self, user: str, scheme: Scheme) -> list[tuple[StoredKey, bytes]]:
        """The user's keys with private material, unsealed."""
        ...

    def private_keys_stamp(self, user: str, scheme: Scheme) -> object:
        """A value, compared with ``==``, that changes whenever what
        :meth:`private_keys` returns for the same arguments changes
        (import, re-import, delete, through any replica). Cheap: nothing is
        unsealed. Read it *before* :meth:`private_keys` to pair the two: a
        change in between then only costs a needless re-read."""
        ...

    def find_public_stamp(self, address: str, scheme: Scheme, *, for_user: str) -> object:
        """A value, compared with ``==``, that changes whenever what
        :meth:`find_public` returns for the same arguments changes (through
        any replica). Cheap, and independent of how many keys others hold.
        Read it *before* :meth:`find_public`, as :meth:`private_keys_stamp`."""
        ...

    def keys_stamps(self, owners: Iterable[str], scheme: Scheme) -> dict[str, object]:
        """Per owner, a value, compared with ``==``, that changes whenever
        the owner's keys of ``scheme`` change (import, re-import, delete,
        through any replica): what :meth:`list_keys` shows of them, and
        what :meth:`find_public` finds among them. Cheap: no key data is
        read. Read it *before* the keys it vouches for, as
        :meth:`private_keys_stamp`."""
        ...

    def add_trust(self, entries: Sequence[TrustEntry]) -> list[TrustEntry]: ...

    def trust_stamp(self) -> object:
        """A value, compared with ``==``, that changes whenever the trust
        store (entries, bundles' scopes and policies, CRLs) changes,
        through any replica. Cheap: one row. Read it *before* the trust
        store it vouches for, as :meth:`private_keys_stamp`."""
        ...

    def list_trust(self, bundle: str | None = None) -> list[TrustEntry]: ...

    def remove_trust(self, anchor_id: str) -> None:
        """Raises NotFoundError when no such entry."""
        ...

    def list_trust_bundles(self) -> list[TrustBundle]: ...

    def remove_trust_bundle(self, name: str) -> list[TrustEntry]:
        """Remove a bundle and all its entries (returned). Raises
        NotFoundError when no such bundle."""
        ...

    def add_crl(self, crl: StoredCRL) -> None:
        """Keeps the newest CRL per issuer."""
        ...

    def list_crls(self) -> list[StoredCRL]: ...
