"""OpenPGP certificates and secret keys: import, validity, trust anchors.

Sequoia (through pysequoia) does not expose subkeys, bindings or
third-party certifications, so this module judges certificate structure
itself, following RFC 9580 §5.2 and §10.1:

* every self-signature (User ID certification, direct-key signature,
  subkey binding, primary-key back-signature, revocation) is verified
  cryptographically here, with ``cryptography``; a signature that does
  not verify is ignored, so a forged binding can never make a subkey
  usable;
* validity is judged at an explicit time ``at``;
* a subkey is usable only with a valid binding, its back-signature when it
  signs, the right key flags, not revoked, not expired, and its
  certificate valid, not revoked and not expired.

What is memoised (``_cache``): the parse of a public certificate, keyed
by its full bytes (:func:`_skeletons`), and whether one signature over
key material verifies, keyed by the signature packet, the signer's
public key body and the hashed data (:func:`_self_sig_verifies`). Both
are pure functions of those bytes. Whether a signature is current, a key
revoked or expired, a binding valid *at* ``at`` is judged again on every
call (:func:`_judge`), so a memo can neither outlive a revocation nor
make other bytes valid. TSKs are never memoised, only their public
projection; a TSK the service holds between requests (:class:`HeldTSK`)
carries its own parse, for as long as the service holds it.

Only public-key *verification* is done here; secret-key operations happen
in Sequoia (Ed25519, ECDSA signatures...) or OpenSSL (RSA signatures in
``sign.py`` and session-key unwrapping in ``decrypt.py``, both with
:func:`rsa_private_key`). Removing the passphrase of an imported secret
key (symmetric S2K decryption) is done here because pysequoia cannot
export an unlocked key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import TypeVar, cast

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESOCB3
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secmail.errors import (
    InputError,
    InvalidKeyError,
    UnsupportedAlgorithmError,
    WrongPassphraseError,
)
from secmail.keystore.api import ParsedKey, TrustEntry
from secmail.pgp import _backend
from secmail.pgp import packets as pk
from secmail.pgp._cache import BoundedMemo
from secmail.verdict import Scheme, address_matches

_T = TypeVar("_T")

#: SHA-1 self-signatures made after this date are ignored (Sequoia's
#: StandardPolicy cut-off for SHA-1 where second-preimage resistance is
#: needed). MD5 is never accepted.
SHA1_SELF_SIG_CUTOFF = datetime(2023, 2, 1, tzinfo=UTC)

#: Largest Argon2 memory parameter accepted when unlocking a key (KiB, log2).
ARGON2_MAX_MEMORY_EXPONENT = 21

#: Keys shorter than this are never used for encryption or signing.
MIN_RSA_BITS = 2048

_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    1: hashes.MD5,
    2: hashes.SHA1,
    8: hashes.SHA256,
    9: hashes.SHA384,
    10: hashes.SHA512,
    11: hashes.SHA224,
    12: hashes.SHA3_256,
    14: hashes.SHA3_512,
}

_CURVES: dict[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
    "brainpoolp256r1": ec.BrainpoolP256R1(),
    "brainpoolp384r1": ec.BrainpoolP384R1(),
    "brainpoolp512r1": ec.BrainpoolP512R1(),
}

_SIGNING_ALGOS = frozenset(
    {pk.PK_RSA, pk.PK_RSA_S, pk.PK_ECDSA, pk.PK_EDDSA_LEGACY, pk.PK_ED25519, pk.PK_ED448}
)
_ENCRYPTION_ALGOS = frozenset({pk.PK_RSA, pk.PK_RSA_E, pk.PK_ECDH, pk.PK_X25519, pk.PK_X448})


def _legacy_25519(key: pk.KeyPacket) -> bool:
    # RFC 9580 §9.2: v6 keys MUST NOT use the legacy EdDSA/Curve25519 OIDs.
    return key.algorithm == pk.PK_EDDSA_LEGACY or (key.algorithm == pk.PK_ECDH and key.curve == "cv25519")


_HARD_REVOCATION_REASONS = frozenset({None, 0, 2})


def now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------
# Signature verification (public-key only)


def signature_digest(sig: pk.SignaturePacket, data: bytes) -> bytes | None:
    name = pk.HASH_NAMES.get(sig.hash_algorithm)
    if name is None:
        return None
    try:
        h = hashlib.new(name)
    except ValueError:
        return None
    if sig.version == 6:
        h.update(sig.salt)
    h.update(data)
    h.update(sig.trailer())
    return h.digest()


def verify_signature(sig: pk.SignaturePacket, key: pk.KeyPacket, data: bytes) -> bool:
    """Does ``key`` verify ``sig`` over ``data`` (the hashed prefix)?"""
    if sig.pk_algorithm != key.algorithm and not (
        key.algorithm in pk.RSA_ALGOS and sig.pk_algorithm in pk.RSA_ALGOS
    ):
        return False
    if (sig.version == 6) != (key.version == 6):
        return False
    digest = signature_digest(sig, data)
    if digest is None or not hmac.compare_digest(digest[:2], sig.left16):
        return False
    hash_cls = _HASHES.get(sig.hash_algorithm)
    try:
        a = key.algorithm
        if a in pk.RSA_ALGOS:
            if hash_cls is None:
                return False
            n, e = key.params
            pub = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
            s = sig.values[0].rjust(len(n), b"\0")
            pub.verify(s, digest, padding.PKCS1v15(), Prehashed(hash_cls()))
            return True
        if a == pk.PK_DSA:
            if hash_cls is None:
                return False
            p, q, g, y = (int.from_bytes(v, "big") for v in key.params)
            dpub = dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
            r_, s_ = (int.from_bytes(v, "big") for v in sig.values)
            dpub.verify(encode_dss_signature(r_, s_), digest, Prehashed(hash_cls()))
            return True
        if a == pk.PK_ECDSA:
            curve = _CURVES.get(key.curve or "")
            if curve is None or hash_cls is None:
                return False
            epub = ec.EllipticCurvePublicKey.from_encoded_point(curve, key.params[1])
            r_, s_ = (int.from_bytes(v, "big") for v in sig.values)
            epub.verify(encode_dss_signature(r_, s_), digest, ec.ECDSA(Prehashed(hash_cls())))
            return True
        if a == pk.PK_EDDSA_LEGACY:
            point = key.params[1]
            if key.curve != "ed25519" or len(point) != 33 or point[0] != 0x40:
                return False
            r_b, s_b = sig.values
            if len(r_b) > 32 or len(s_b) > 32:
                return False
            ed25519.Ed25519PublicKey.from_public_bytes(point[1:]).verify(
                r_b.rjust(32, b"\0") + s_b.rjust(32, b"\0"), digest
            )
            return True
        if a == pk.PK_ED25519:
            ed25519.Ed25519PublicKey.from_public_bytes(key.params[0]).verify(sig.values[0], digest)
            return True
        if a == pk.PK_ED448:
            ed448.Ed448PublicKey.from_public_bytes(key.params[0]).verify(sig.values[0], digest)
            return True
    except (InvalidSignature, ValueError, UnsupportedAlgorithm, TypeError):
        return False
    return False


#: (signature packet, signer's public key body, hashed key material) ->
#: does the signature verify. Public bytes only: never message content.
_SELF_SIGS: BoundedMemo[tuple[bytes, bytes, bytes], bool] = BoundedMemo(16384, 16 * 2**20)


def _self_sig_verifies(sig: pk.SignaturePacket, signer: pk.KeyPacket, data: bytes) -> bool:
    """:func:`verify_signature` for signatures over key material (self-
    signatures, bindings, back-signatures, certifications), memoised.

    The answer is a pure function of the signature packet, the signer's
    public key packet body and ``data``, all three of which are the memo's
    key in full: a different byte anywhere is a different entry. Whether
    the signature is *current* (its dates against ``at``) is never stored;
    :func:`_self_sig_ok` judges that on every call. The signer's secret
    material (a TSK's) is no part of the key: only ``public_body`` is.
    """
    key = (sig.raw, signer.public_body, data)
    known = _SELF_SIGS.get(key)
    if known is not None:
        return known
    ok = verify_signature(sig, signer, data)
    _SELF_SIGS.put(key, ok, len(sig.raw) + len(signer.public_body) + len(data))
    return ok


#: Signature packet -> its parsed embedded signatures (back-signatures).
_EMBEDDED: BoundedMemo[bytes, tuple[pk.SignaturePacket, ...]] = BoundedMemo(4096, 8 * 2**20)


def _embedded_signatures(sig: pk.SignaturePacket) -> tuple[pk.SignaturePacket, ...]:
    """``sig.embedded_signatures``, parsed once per signature packet (a
    pure function of ``sig.raw``, the memo's whole key)."""
    known = _EMBEDDED.get(sig.raw)
    if known is None:
        known = tuple(sig.embedded_signatures)
        _EMBEDDED.put(sig.raw, known, len(sig.raw))
    return known


def hash_acceptable_for_self_sig(sig: pk.SignaturePacket) -> bool:
    if sig.hash_algorithm not in _HASHES or sig.hash_algorithm == 1:
        return False
    if sig.hash_algorithm == 2:
        created = sig.created
        return created is not None and created < SHA1_SELF_SIG_CUTOFF
    return True


# --------------------------------------------------------------------------
# Certificate structure


@dataclass(slots=True)
class UserIDInfo:
    tag: int
    body: bytes
    packets: list[pk.Packet]
    signatures: list[pk.SignaturePacket]
    binding: pk.SignaturePacket | None = None
    revoked: bool = False

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def valid(self) -> bool:
        return self.binding is not None and not self.revoked

    @property
    def address(self) -> str | None:
        return uid_address(self.text) if self.tag == pk.TAG_USER_ID else None


@dataclass(slots=True)
class KeyInfo:
    key: pk.KeyPacket
    packets: list[pk.Packet]
    signatures: list[pk.SignaturePacket]
    binding: pk.SignaturePacket | None = None
    revoked: bool = False
    expires: datetime | None = None
    flags: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def bound(self) -> bool:
        return self.binding is not None


@dataclass(slots=True)
class CertInfo:
    """One certificate as judged at ``at``."""

    at: datetime
    primary: KeyInfo
    uids: list[UserIDInfo]
    subkeys: list[KeyInfo]
    revoked: bool = False
    features: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return self.primary.key.fingerprint

    @property
    def has_secret(self) -> bool:
        return any(k.key.is_secret and _has_secret_material(k.key) for k in self.all_keys)

    @property
    def all_keys(self) -> list[KeyInfo]:
        return [self.primary, *self.subkeys]

    @property
    def primary_valid(self) -> bool:
        return self.primary.bound

    @property
    def expired(self) -> bool:
        return self.primary.expires is not None and self.primary.expires <= self.at

    @property
    def not_yet_valid(self) -> bool:
        return self.primary.key.created > self.at

    @property
    def cert_usable(self) -> bool:
        return self.primary_valid and not self.revoked and not self.expired and not self.not_yet_valid

    def valid_uids(self) -> list[UserIDInfo]:
        return [u for u in self.uids if u.valid and u.tag == pk.TAG_USER_ID]

    def addresses(self) -> tuple[str, ...]:
        out: list[str] = []
        for u in self.valid_uids():
            a = u.address
            if a is not None and a not in out:
                out.append(a)
        return tuple(out)

    def key_usable(self, k: KeyInfo, purpose: int) -> bool:
        if not self.cert_usable or not k.bound or k.revoked:
            return False
        if k.expires is not None and k.expires <= self.at:
            return False
        if k.key.created > self.at or not k.flags & purpose:
            return False
        algos = _SIGNING_ALGOS if purpose & pk.KF_SIGN else _ENCRYPTION_ALGOS
        if k.key.algorithm not in algos:
            return False
        if k.key.algorithm in pk.RSA_ALGOS and k.key.bits < MIN_RSA_BITS:
            return False
        if k.key.algorithm in (pk.PK_ECDH, pk.PK_ECDSA) and k.key.curve == "unknown":
            return False
        return True

    def encryption_keys(self) -> list[KeyInfo]:
        return [k for k in self.all_keys if self.key_usable(k, pk.KF_ENCRYPT)]

    def signing_keys(self) -> list[KeyInfo]:
        return [k for k in self.all_keys if self.key_usable(k, pk.KF_SIGN)]

    def find_key(self, handle: str) -> KeyInfo | None:
        h = handle.lower()
        for k in self.all_keys:
            if h in (k.key.fingerprint, k.key.key_id):
                return k
        return None

    def public_packets(self, keep_subkeys: Sequence[KeyInfo] | None = None) -> bytes:
        """The public certificate, optionally with only some subkeys."""
        out = [self.primary.key.public_packet()]
        out += [p.raw for p in self.primary.packets[1:]]
        for u in self.uids:
            out += [p.raw for p in u.packets]
        for s in self.subkeys:
            if keep_subkeys is not None and s not in keep_subkeys:
                continue
            out.append(s.key.public_packet())
            out += [p.raw for p in s.packets[1:]]
        return b"".join(out)

    def secret_packets(self, signing_key: KeyInfo) -> bytes:
        """A TSK holding the secret of ``signing_key`` only.

        Other secret keys are reduced to public packets so that the
        engine cannot pick another key than the one secmail validated.
        """
        out: list[bytes] = []
        primary_is_signer = signing_key is self.primary
        out.append(self.primary.packets[0].raw if primary_is_signer else self.primary.key.public_packet())
        out += [p.raw for p in self.primary.packets[1:]]
        for u in self.uids:
            out += [p.raw for p in u.packets]
        if not primary_is_signer:
            out.append(signing_key.packets[0].raw)
            out += [p.raw for p in signing_key.packets[1:]]
        return b"".join(out)


def uid_address(uid: str) -> str | None:
    """The normalised addr-spec of a User ID (domain lower-cased)."""
    # A pure function of the string, memoised (email.utils.parseaddr costs
    # ~15 us, and every verified signature asks it twice per User ID);
    # bounded in count and, through the length cut, in size.
    return _uid_address_memo(uid) if len(uid) <= 1024 else _uid_address(uid)


@functools.lru_cache(maxsize=4096)
def _uid_address_memo(uid: str) -> str | None:
    return _uid_address(uid)


def _uid_address(uid: str) -> str | None:
    _, addr = parseaddr(uid)
    if "@" not in addr:
        if "<" not in uid and "@" in uid and " " not in uid.strip():
            addr = uid.strip()
        else:
            return None
    local, _, domain = addr.rpartition("@")
    if not local or not domain:
        return None
    return f"{local}@{domain.lower()}"


def split_certs(packets: Sequence[pk.Packet]) -> list[list[pk.Packet]]:
    certs: list[list[pk.Packet]] = []
    for p in packets:
        if p.tag in (pk.TAG_PUBLIC_KEY, pk.TAG_SECRET_KEY):
            certs.append([p])
        elif p.tag in (pk.TAG_TRUST, pk.TAG_MARKER, pk.TAG_PADDING):
            continue
        elif not certs:
            raise InvalidKeyError("OpenPGP data does not start with a primary key")
        else:
            certs[-1].append(p)
    if not certs:
        raise InvalidKeyError("no OpenPGP key found")
    return certs


def _parse_sig_or_none(p: pk.Packet) -> pk.SignaturePacket | None:
    try:
        return pk.parse_signature(p)
    except InputError:
        return None


@dataclass(frozen=True, slots=True)
class _Part:
    """One component's packets (its own packet first, for keys and User
    IDs) and the signatures among them that parsed, in order."""

    packets: tuple[pk.Packet, ...]
    signatures: tuple[pk.SignaturePacket, ...]


@dataclass(frozen=True, slots=True)
class _Skeleton:
    """A certificate parsed and canonicalised, nothing judged: a pure
    function of its bytes, so a public certificate's skeleton is memoised
    (see :func:`_skeletons`). Validity at a time is :func:`_judge`'s."""

    primary: pk.KeyPacket
    primary_part: _Part
    uids: tuple[tuple[int, bytes, _Part], ...]
    subkeys: tuple[tuple[pk.KeyPacket, _Part], ...]
    problems: tuple[str, ...]


def analyse_cert(packets: Sequence[pk.Packet], at: datetime) -> CertInfo:
    """Judge one certificate (primary key packet first) at ``at``."""
    return _judge(_skeleton(packets), at)


def _skeleton(packets: Sequence[pk.Packet]) -> _Skeleton:
    try:
        primary_key = pk.parse_key(packets[0])
    except InputError as exc:
        raise InvalidKeyError("unreadable OpenPGP primary key") from exc
    primary = KeyInfo(primary_key, [packets[0]], [])
    uids: list[UserIDInfo] = []
    subkeys: list[KeyInfo] = []
    problems: list[str] = []
    current: KeyInfo | UserIDInfo = primary
    for p in packets[1:]:
        if p.tag == pk.TAG_SIGNATURE:
            sig = _parse_sig_or_none(p)
            # Key revocations and direct-key signatures always belong to the
            # primary, wherever they were appended (a revocation published
            # later is commonly concatenated at the end of the certificate).
            target = (
                primary
                if sig is not None and sig.sig_type in (pk.SIG_DIRECT_KEY, pk.SIG_KEY_REVOCATION)
                else current
            )
            target.packets.append(p)
            if sig is not None:
                target.signatures.append(sig)
        elif p.tag in (pk.TAG_USER_ID, pk.TAG_USER_ATTRIBUTE):
            current = UserIDInfo(p.tag, p.body, [p], [])
            uids.append(current)
        elif p.tag in (pk.TAG_PUBLIC_SUBKEY, pk.TAG_SECRET_SUBKEY):
            try:
                subkey = pk.parse_key(p)
            except InputError:
                problems.append("unreadable subkey ignored")
                current = KeyInfo(primary_key, [], [])  # a sink, not kept
                continue
            current = KeyInfo(subkey, [p], [])
            subkeys.append(current)
        else:
            raise InvalidKeyError(f"unexpected packet type {p.tag} in an OpenPGP key")

    _reattach_misplaced(primary_key, uids, subkeys)
    if primary_key.version == 6 and _legacy_25519(primary_key):
        raise InvalidKeyError("v6 key with a deprecated Curve25519/Ed25519 legacy algorithm")
    for sk in subkeys:
        if sk.key.version == 6 and _legacy_25519(sk.key):
            raise InvalidKeyError("v6 subkey with a deprecated Curve25519/Ed25519 legacy algorithm")

    def part(c: KeyInfo | UserIDInfo) -> _Part:
        return _Part(tuple(c.packets), tuple(c.signatures))

    return _Skeleton(
        primary=primary_key,
        primary_part=part(primary),
        uids=tuple((u.tag, u.body, part(u)) for u in uids),
        subkeys=tuple((k.key, part(k)) for k in subkeys),
        problems=tuple(problems),
    )


def _judge(skel: _Skeleton, at: datetime) -> CertInfo:
    """Everything that depends on ``at``, recomputed on every call on
    fresh objects: bindings current at ``at``, revocations, expiry."""
    primary = KeyInfo(skel.primary, list(skel.primary_part.packets), list(skel.primary_part.signatures))
    uids = [UserIDInfo(tag, body, list(p.packets), list(p.signatures)) for tag, body, p in skel.uids]
    subkeys = [KeyInfo(key, list(p.packets), list(p.signatures)) for key, p in skel.subkeys]
    info = CertInfo(at=at, primary=primary, uids=uids, subkeys=subkeys, problems=list(skel.problems))
    _judge_primary(info)
    for sk in subkeys:
        _judge_subkey(info, sk)
    return info


_UID_SIG_TYPES = pk.CERTIFICATION_TYPES | {pk.SIG_CERT_REVOCATION}
_SUBKEY_SIG_TYPES = frozenset({pk.SIG_SUBKEY_BINDING, pk.SIG_SUBKEY_REVOCATION})


def _reattach_misplaced(primary: pk.KeyPacket, uids: list[UserIDInfo], subkeys: list[KeyInfo]) -> None:
    """Move self-signatures found under the wrong component (typically a
    User ID revocation appended at the end of a certificate) to the
    component they verify over, as Sequoia's canonicalisation does."""
    material = primary.hash_material()
    moves: list[tuple[UserIDInfo | KeyInfo, pk.Packet, pk.SignaturePacket]] = []
    components: list[UserIDInfo | KeyInfo] = [*uids, *subkeys]
    for comp in components:
        wrong = _SUBKEY_SIG_TYPES if isinstance(comp, UserIDInfo) else _UID_SIG_TYPES
        if not any(sig.sig_type in wrong for sig in comp.signatures):
            continue  # the common case: nothing misplaced, nothing re-parsed
        for pkt, sig in zip(_sig_packets(comp), comp.signatures, strict=True):
            if sig.sig_type in wrong:
                moves.append((comp, pkt, sig))
    for comp, pkt, sig in moves:
        targets: list[UserIDInfo | KeyInfo] = list(subkeys if sig.sig_type in _SUBKEY_SIG_TYPES else uids)
        for t in targets:
            if isinstance(t, UserIDInfo):
                data = material + pk.uid_hash_material(t.tag, t.body)
            else:
                data = material + t.key.hash_material()
            if _self_sig_verifies(sig, primary, data):
                comp.packets.remove(pkt)
                comp.signatures.remove(sig)
                t.packets.append(pkt)
                t.signatures.append(sig)
                break


def _sig_packets(comp: UserIDInfo | KeyInfo) -> list[pk.Packet]:
    # Packets that parsed as signatures, in the order of comp.signatures.
    out: list[pk.Packet] = []
    for p in comp.packets:
        if p.tag == pk.TAG_SIGNATURE and _parse_sig_or_none(p) is not None:
            out.append(p)
    return out


def _self_sig_ok(sig: pk.SignaturePacket, signer: pk.KeyPacket, data: bytes, at: datetime) -> bool:
    created = sig.created
    if created is None or created > at or created < signer.created:
        return False
    if sig.has_unknown_critical or not hash_acceptable_for_self_sig(sig):
        return False
    exp = sig.expiration_seconds
    if exp is not None and created.timestamp() + exp <= at.timestamp():
        return False
    issuer = sig.issuer_fingerprint or sig.issuer_key_id
    if issuer is not None and issuer not in (signer.fingerprint, signer.key_id):
        return False
    return _self_sig_verifies(sig, signer, data)


def _revoked(
    sigs: Sequence[pk.SignaturePacket],
    sig_type: int,
    signer: pk.KeyPacket,
    data: bytes,
    at: datetime,
) -> bool:
    for s in sigs:
        if s.sig_type != sig_type:
            continue
        created = s.created
        if created is None:
            continue
        hard = s.revocation_reason in _HARD_REVOCATION_REASONS
        # A hard revocation (compromise, or no reason) takes effect
        # whatever its date (RFC 9580 §5.2.3.31); a soft one from its date.
        check_at = max(at, created) if hard else at
        if _self_sig_ok(s, signer, data, check_at):
            return True
    return False


def _newest(sigs: Sequence[pk.SignaturePacket]) -> pk.SignaturePacket | None:
    best: pk.SignaturePacket | None = None
    for s in sigs:
        c = s.created
        if c is not None and (best is None or c >= (best.created or c)):
            best = s
    return best


def _default_flags(algo: int) -> int:
    flags = 0
    if algo in _SIGNING_ALGOS or algo == pk.PK_DSA:
        flags |= pk.KF_SIGN | pk.KF_CERTIFY
    if algo in _ENCRYPTION_ALGOS:
        flags |= pk.KF_ENCRYPT
    return flags


def _expiry(key: pk.KeyPacket, sig: pk.SignaturePacket | None) -> datetime | None:
    if sig is None:
        return None
    secs = sig.key_expiration_seconds
    if secs is None:
        return None
    return datetime.fromtimestamp(key.created.timestamp() + secs, UTC)


def _judge_primary(info: CertInfo) -> None:
    at = info.at
    key = info.primary.key
    material = key.hash_material()
    direct = [
        s
        for s in info.primary.signatures
        if s.sig_type == pk.SIG_DIRECT_KEY and _self_sig_ok(s, key, material, at)
    ]
    info.revoked = _revoked(info.primary.signatures, pk.SIG_KEY_REVOCATION, key, material, at)
    primary_uid_sig: pk.SignaturePacket | None = None
    for u in info.uids:
        data = material + pk.uid_hash_material(u.tag, u.body)
        certs = [
            s for s in u.signatures if s.sig_type in pk.CERTIFICATION_TYPES and _self_sig_ok(s, key, data, at)
        ]
        u.binding = _newest(certs)
        if u.binding is not None:
            revs = [
                s
                for s in u.signatures
                if s.sig_type == pk.SIG_CERT_REVOCATION and (s.created or at) >= (u.binding.created or at)
            ]
            u.revoked = _revoked(revs, pk.SIG_CERT_REVOCATION, key, data, at)
            if not u.revoked and (
                primary_uid_sig is None
                or (u.binding.primary_uid and not primary_uid_sig.primary_uid)
                or (
                    u.binding.primary_uid == primary_uid_sig.primary_uid
                    and (u.binding.created or at) > (primary_uid_sig.created or at)
                )
            ):
                primary_uid_sig = u.binding
        elif u.tag == pk.TAG_USER_ID:
            info.problems.append(f"user ID {u.text!r}: no valid self-signature")
    for u in info.uids:
        if u.binding is not None and u.revoked and u.tag == pk.TAG_USER_ID:
            info.problems.append(f"user ID {u.text!r}: revoked")
    newest_direct = _newest(direct)
    # RFC 9580 §5.2.3.10: a v6 key's expiration and flags live in the
    # direct-key signature; v4 keys usually carry them on the primary
    # User ID's self-signature.
    if key.version == 6:
        effective = newest_direct or primary_uid_sig
    else:
        effective = primary_uid_sig or newest_direct
    info.primary.binding = effective
    if effective is None:
        info.problems.append("primary key: no valid self-signature")
        return
    flags = effective.key_flags
    info.primary.flags = _default_flags(key.algorithm) if flags is None else flags
    info.primary.expires = _expiry(key, effective)
    if newest_direct is not None and newest_direct.key_expiration_seconds is not None:
        direct_exp = _expiry(key, newest_direct)
        if direct_exp is not None and (info.primary.expires is None or direct_exp < info.primary.expires):
            info.primary.expires = direct_exp
    info.features = effective.features or (newest_direct.features if newest_direct else 0)
    if info.revoked:
        info.problems.append("certificate revoked")
    if info.primary.expires is not None and info.primary.expires <= at:
        info.problems.append(f"certificate expired {info.primary.expires.isoformat()}")
    if key.created > at:
        info.problems.append("certificate created in the future")


def _judge_subkey(info: CertInfo, sk: KeyInfo) -> None:
    at = info.at
    primary = info.primary.key
    data = primary.hash_material() + sk.key.hash_material()
    label = f"subkey {sk.key.fingerprint}"
    bindings = [
        s for s in sk.signatures if s.sig_type == pk.SIG_SUBKEY_BINDING and _self_sig_ok(s, primary, data, at)
    ]
    good: list[pk.SignaturePacket] = []
    for b in bindings:
        flags = b.key_flags if b.key_flags is not None else _default_flags(sk.key.algorithm)
        if flags & pk.KF_SIGN:
            # A signing subkey must cross-certify its primary (RFC 9580
            # §5.2.3.34), or anyone could claim someone else's key.
            back = [
                e
                for e in _embedded_signatures(b)
                if e.sig_type == pk.SIG_PRIMARY_BINDING and _self_sig_ok(e, sk.key, data, at)
            ]
            if not back:
                continue
        good.append(b)
    sk.binding = _newest(good)
    if sk.binding is None:
        sk.problems.append(f"{label}: no valid binding signature (unbound or forged)")
        info.problems.extend(sk.problems)
        return
    sub_flags = sk.binding.key_flags
    sk.flags = _default_flags(sk.key.algorithm) if sub_flags is None else sub_flags
    sk.expires = _expiry(sk.key, sk.binding)
    sk.revoked = _revoked(sk.signatures, pk.SIG_SUBKEY_REVOCATION, primary, data, at)
    if sk.revoked:
        sk.problems.append(f"{label}: revoked")
    if sk.expires is not None and sk.expires <= at:
        sk.problems.append(f"{label}: expired {sk.expires.isoformat()}")
    if sk.key.created > at:
        sk.problems.append(f"{label}: created in the future")
    if sk.key.algorithm in pk.RSA_ALGOS and sk.key.bits < MIN_RSA_BITS:
        sk.problems.append(f"{label}: RSA key shorter than {MIN_RSA_BITS} bits")
    info.problems.extend(sk.problems)


def load_certs(data: bytes, at: datetime) -> list[CertInfo]:
    """Every certificate in armored or binary ``data``, judged at ``at``."""
    try:
        binary = pk.to_binary(data)
    except InputError as exc:
        raise InvalidKeyError("unreadable OpenPGP key data") from exc
    return [_judge(skel, at) for skel in _skeletons(binary)]


#: Certificate bytes (binary, public only) -> their parsed skeletons.
_SKELETONS: BoundedMemo[bytes, tuple[_Skeleton, ...]] = BoundedMemo(4096, 32 * 2**20)


def _skeletons(binary: bytes) -> tuple[_Skeleton, ...]:
    """The parsed certificates of ``binary``, memoised by its full bytes
    when it holds no secret-key packet. A TSK is not memoised (unsealed
    secrets never outlive the request): its public projection is, and the
    secret key packets are put back into a copy (:func:`_tsk_skeletons`)."""
    if isinstance(binary, HeldTSK):
        return binary.skeletons()
    cached = _SKELETONS.get(binary)
    if cached is not None:
        return cached
    try:
        packets = pk.read_packets(binary)
    except InputError as exc:
        raise InvalidKeyError("unreadable OpenPGP key data") from exc
    if any(p.tag in (pk.TAG_SECRET_KEY, pk.TAG_SECRET_SUBKEY) for p in packets):
        return _tsk_skeletons(packets)
    skeletons = tuple(_skeleton(c) for c in split_certs(packets))
    _SKELETONS.put(binary, skeletons, len(binary))
    return skeletons


def _tsk_skeletons(packets: Sequence[pk.Packet]) -> tuple[_Skeleton, ...]:
    """A TSK's skeletons, from the memoised skeletons of its public
    projection (every secret key packet replaced by its public packet),
    with the secret key packets swapped back in.

    Secret-key packets differ from public ones only by the secret area
    after the public part (RFC 9580 §5.5.3), and a skeleton depends on
    the public part alone; anything unusual (a secret packet that does
    not parse, a projection that does not) takes the direct, unmemoised
    path, so the result is always what :func:`_skeleton` gives the TSK.
    """
    secrets: dict[tuple[bool, bytes], tuple[pk.KeyPacket, pk.Packet]] = {}
    public: list[bytes] = []
    try:
        for p in packets:
            if p.tag in (pk.TAG_SECRET_KEY, pk.TAG_SECRET_SUBKEY):
                key = pk.parse_key(p)
                secrets[(key.is_primary, key.public_body)] = (key, p)
                public.append(key.public_packet())
            else:
                public.append(p.raw)
        projected = _skeletons(b"".join(public))
    except InputError:
        return tuple(_skeleton(c) for c in split_certs(packets))

    def swap(key: pk.KeyPacket, part: _Part) -> tuple[pk.KeyPacket, _Part]:
        found = secrets.get((key.is_primary, key.public_body))
        if found is None:
            return key, part
        secret_key, secret_packet = found
        return secret_key, _Part((secret_packet, *part.packets[1:]), part.signatures)

    out: list[_Skeleton] = []
    for skel in projected:
        primary, primary_part = swap(skel.primary, skel.primary_part)
        subkeys = tuple(swap(k, part) for k, part in skel.subkeys)
        out.append(_Skeleton(primary, primary_part, skel.uids, subkeys, skel.problems))
    return tuple(out)


def load_cert(data: bytes, at: datetime) -> CertInfo:
    certs = load_certs(data, at)
    if len(certs) != 1:
        raise InvalidKeyError("expected exactly one OpenPGP certificate")
    return certs[0]


def has_key(data: bytes, handle: str) -> bool:
    """Is ``data`` one certificate with a (sub)key whose fingerprint or key
    ID is ``handle``?

    :meth:`CertInfo.find_key` of :func:`load_cert` asks the same, but
    after judging the whole certificate at a time; the answer depends on
    the key packets alone (a pure function of the bytes, read from the
    memoised parse), so a verifier asks this first and judges only the
    certificates that can hold the signer's key.
    """
    try:
        skeletons = _skeletons(pk.to_binary(data))
    except InputError:
        return False
    if len(skeletons) != 1:
        return False
    h = handle.lower()
    skel = skeletons[0]
    if h in (skel.primary.fingerprint, skel.primary.key_id):
        return True
    return any(h in (key.fingerprint, key.key_id) for key, _ in skel.subkeys)


class HeldTSK(bytes):
    """An unprotected TSK that its holder keeps across requests (the
    service's held private keys, ``Settings.key_cache_seconds``), with what
    is derived from it on first use.

    It *is* the TSK's bytes: every function that takes a TSK takes one,
    and gives exactly what it gives for the plain bytes. What it keeps is
    a pure function of its bytes, computed once instead of on every Sign
    or Decrypt: the packet parse (:meth:`skeletons`), the engine's
    prepared signer for a given reduced TSK (:meth:`engine_signer`), and
    OpenSSL's key objects (:func:`private_key_object`; a kept key also
    keeps its Montgomery contexts, so each operation costs less). Nothing
    judged at a time is kept: which keys are bound, revoked, expired or
    usable is judged again at each request's time (:func:`_judge`).

    The secrets live as long as the object does, that is as long as its
    holder keeps it: no module-level memo ever holds one (the ``_cache``
    rules), and its ``repr`` never shows the bytes.
    """

    _parsed: tuple[_Skeleton, ...] | None = None
    _signers: dict[bytes, _backend.EngineSigner] | None = None
    _objects: dict[tuple[str, bytes, bytes], object] | None = None

    def __repr__(self) -> str:  # never print private material
        return f"HeldTSK(<{len(self)} bytes>)"

    __str__ = __repr__

    def skeletons(self) -> tuple[_Skeleton, ...]:
        """What :func:`_skeletons` gives for these bytes (kept, shared:
        skeletons are never mutated)."""
        # Two threads may both parse on first use: the results are equal.
        found = self._parsed
        if found is None:
            found = self._parsed = _skeletons(bytes(self))
        return found

    def engine_signer(self, reduced: bytes) -> _backend.EngineSigner:
        """The engine's signer for ``reduced``, a TSK derived from this one
        (:meth:`CertInfo.secret_packets`), kept by its exact bytes."""
        signers = self._signers
        if signers is None:
            signers = self._signers = {}
        found = signers.get(reduced)
        if found is None:
            found = signers[reduced] = _backend.engine_signer(reduced)
        return found

    def key_object(self, kind: str, key: pk.KeyPacket, make: Callable[[], _T]) -> _T:
        """See :func:`private_key_object`."""
        objects = self._objects
        if objects is None:
            objects = self._objects = {}
        slot = (kind, key.public_body, key.secret_area or b"")
        if slot in objects:
            return cast(_T, objects[slot])
        found = objects[slot] = make()
        return found


def private_key_object(tsk: bytes, kind: str, key: pk.KeyPacket, make: Callable[[], _T]) -> _T:
    """``make()``: a ``kind`` of object (an OpenSSL key) made from the secret
    key packet ``key`` of ``tsk`` alone. A :class:`HeldTSK` keeps it, by
    ``kind`` and the packet's exact public and secret bytes; ``make`` must
    depend on nothing else. Building one costs ~45 us for X25519, more
    for RSA and NIST curves, and a kept RSA key also keeps its Montgomery
    contexts. A failure is raised, never kept."""
    if isinstance(tsk, HeldTSK):
        return tsk.key_object(kind, key, make)
    return make()


def rsa_private_key_of(tsk: bytes, key: pk.KeyPacket) -> rsa.RSAPrivateKey:
    """:func:`rsa_private_key` of ``key``, a packet of ``tsk``; kept on a
    :class:`HeldTSK`."""
    return private_key_object(tsk, "rsa", key, lambda: rsa_private_key(key))


# --------------------------------------------------------------------------
# Symmetric helpers shared with decryption (RFC 9580 §9.3, §5.13)

#: cipher id -> (key size, block size)
CIPHERS: dict[int, tuple[int, int]] = {
    1: (16, 8),  # IDEA
    2: (24, 8),  # TripleDES
    3: (16, 8),  # CAST5
    4: (16, 8),  # Blowfish
    7: (16, 16),  # AES-128
    8: (24, 16),  # AES-192
    9: (32, 16),  # AES-256
    11: (16, 16),  # Camellia-128
    12: (24, 16),  # Camellia-192
    13: (32, 16),  # Camellia-256
}
CIPHER_NAMES = {
    1: "idea",
    2: "3des",
    3: "cast5",
    4: "blowfish",
    7: "aes128",
    8: "aes192",
    9: "aes256",
    10: "twofish",
    11: "camellia128",
    12: "camellia192",
    13: "camellia256",
}
AEAD_NAMES = {1: "eax", 2: "ocb", 3: "gcm"}
AEAD_NONCE = {1: 16, 2: 15, 3: 12}


def block_cipher(cipher_id: int, key: bytes) -> algorithms.BlockCipherAlgorithm:
    if cipher_id in (7, 8, 9):
        return algorithms.AES(key)
    if cipher_id in (11, 12, 13):
        return decrepit.Camellia(key)
    if cipher_id == 3:
        return decrepit.CAST5(key)
    if cipher_id == 2:
        return decrepit.TripleDES(key)
    if cipher_id == 1:
        return decrepit.IDEA(key)
    if cipher_id == 4:
        return decrepit.Blowfish(key)
    raise UnsupportedAlgorithmError(f"unsupported symmetric cipher {cipher_id}")


def cfb_decrypt(cipher_id: int, key: bytes, iv: bytes, data: bytes) -> bytes:
    d = Cipher(block_cipher(cipher_id, key), CFB(iv)).decryptor()
    return d.update(data) + d.finalize()


def _eax_decrypt(key: bytes, nonce: bytes, data: bytes, ad: bytes) -> bytes:
    # EAX (Bellare, Rogaway, Wagner) from AES-CTR and OMAC (= CMAC), which
    # is all RFC 9580 §5.13.4 needs; cryptography has no EAX mode.
    if len(data) < 16:
        raise InvalidTag()

    def omac(t: int, m: bytes) -> bytes:
        c = cmac.CMAC(algorithms.AES(key))
        c.update(bytes(15) + bytes([t]) + m)
        return c.finalize()

    ct, tag = data[:-16], data[-16:]
    n = omac(0, nonce)
    h = omac(1, ad)
    c = omac(2, ct)
    expected = bytes(a ^ b ^ d for a, b, d in zip(n, c, h, strict=True))
    if not hmac.compare_digest(expected, tag):
        raise InvalidTag()
    dec = Cipher(algorithms.AES(key), modes.CTR(n)).decryptor()
    return dec.update(ct) + dec.finalize()


def aead_decrypt(aead: int, cipher_id: int, key: bytes, nonce: bytes, data: bytes, ad: bytes) -> bytes:
    """Raises InvalidTag when the tag does not verify."""
    if cipher_id not in (7, 8, 9):
        raise UnsupportedAlgorithmError("AEAD is supported with AES only")
    if aead == 2:
        return AESOCB3(key).decrypt(nonce, data, ad)
    if aead == 3:
        return AESGCM(key).decrypt(nonce, data, ad)
    if aead == 1:
        return _eax_decrypt(key, nonce, data, ad)
    raise UnsupportedAlgorithmError(f"unsupported AEAD mode {aead}")


@dataclass(frozen=True, slots=True)
class S2K:
    type: int
    hash_algorithm: int = 0
    salt: bytes = b""
    count: int = 0
    argon2: tuple[int, int, int] = (0, 0, 0)


def parse_s2k(r: pk._Reader) -> S2K:
    t = r.u8()
    if t == 0:
        return S2K(0, r.u8())
    if t == 1:
        return S2K(1, r.u8(), r.take(8))
    if t == 3:
        h = r.u8()
        salt = r.take(8)
        c = r.u8()
        return S2K(3, h, salt, (16 + (c & 15)) << ((c >> 4) + 6))
    if t == 4:
        salt = r.take(16)
        return S2K(4, 0, salt, 0, (r.u8(), r.u8(), r.u8()))
    if t == 101:
        # GNU extension: no secret (dummy) or secret on a smartcard.
        r.u8()
        return S2K(101, 0, r.rest())
    raise UnsupportedAlgorithmError(f"unsupported S2K type {t}")


def s2k_derive(s2k: S2K, passphrase: bytes, size: int) -> bytes:
    if s2k.type == 4:
        t, p, m = s2k.argon2
        # Bounded so that an imported key cannot make secmail allocate or
        # spin without limit: 2^21 KiB (2 GiB) is RFC 9580 A.5's own vector.
        if not 3 <= m <= ARGON2_MAX_MEMORY_EXPONENT or not 1 <= p <= 16 or not 1 <= t <= 16:
            raise UnsupportedAlgorithmError("Argon2 parameters outside secmail's limits")
        return Argon2id(salt=s2k.salt, length=size, iterations=t, lanes=p, memory_cost=1 << m).derive(
            passphrase
        )
    name = pk.HASH_NAMES.get(s2k.hash_algorithm)
    if name is None or s2k.hash_algorithm == 1:
        raise UnsupportedAlgorithmError("unsupported S2K hash")
    out = b""
    i = 0
    while len(out) < size:
        h = hashlib.new(name)
        h.update(b"\0" * i)
        seed = s2k.salt + passphrase
        if s2k.type == 3:
            count = max(s2k.count, len(seed))
            full, rem = divmod(count, len(seed)) if seed else (0, 0)
            h.update(seed * full + seed[:rem])
        else:
            h.update(seed)
        out += h.digest()
        i += 1
    return out[:size]


# --------------------------------------------------------------------------
# Unlocking secret keys (RFC 9580 §5.5.3)


def _has_secret_material(key: pk.KeyPacket) -> bool:
    area = key.secret_area
    if not area:
        return False
    if area[0] == 0:
        return True
    try:
        _, s2k, *_ = _parse_protection(key)
    except (InputError, UnsupportedAlgorithmError):
        return True
    return s2k is None or s2k.type != 101


def rsa_private_key(key: pk.KeyPacket) -> rsa.RSAPrivateKey:
    """OpenSSL's RSA private key for an *unprotected* RSA secret-key packet.

    Every RSA secret-key operation of secmail runs on this key, in OpenSSL
    (``cryptography``), which blinds RSA private operations; never in
    Sequoia (RUSTSEC-2023-0071). Raises InvalidKeyError.
    """
    area = key.secret_area or b""
    if key.algorithm not in pk.RSA_ALGOS or area[:1] != b"\x00":
        raise InvalidKeyError("not an unprotected RSA secret key")
    n, e = (int.from_bytes(v, "big") for v in key.params[:2])
    r = pk._Reader(area[1:])
    d, p, q = (int.from_bytes(r.mpi(), "big") for _ in range(3))
    # OpenSSL's own key check (primality tests) costs ~130 ms for RSA-3072
    # on every use; the key is our own, unsealed from authenticated
    # storage, so only its consistency is checked here (a CRT computation
    # with mismatched parameters would produce garbage, RFC 8017 §5.1.2).
    # These checks depend on the key alone, never on the input.
    if p < 3 or q < 3 or p * q != n or (e * d) % (p - 1) != 1 or (e * d) % (q - 1) != 1:
        raise InvalidKeyError("the RSA secret key is inconsistent")
    try:
        # q^-1 mod p by the built-in pow (ValueError if p and q share a
        # factor): cryptography's rsa_crt_iqmp is the same value by a
        # pure-Python Euclid, ~0.5 ms for RSA-3072.
        numbers = rsa.RSAPrivateNumbers(
            p=p,
            q=q,
            d=d,
            dmp1=rsa.rsa_crt_dmp1(d, p),
            dmq1=rsa.rsa_crt_dmq1(d, q),
            iqmp=pow(q, -1, p),
            public_numbers=rsa.RSAPublicNumbers(e, n),
        )
        return numbers.private_key(unsafe_skip_rsa_key_validation=True)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidKeyError("unusable RSA secret key") from exc


def _parse_protection(
    key: pk.KeyPacket,
) -> tuple[int, S2K | None, int, int, bytes, bytes]:
    """(usage, s2k, cipher, aead, iv_or_nonce, encrypted material)."""
    assert key.secret_area is not None
    r = pk._Reader(key.secret_area)
    usage = r.u8()
    if usage == 0:
        return 0, None, 0, 0, b"", r.rest()
    if usage not in (253, 254, 255):
        raise UnsupportedAlgorithmError("legacy secret-key protection is not supported")
    if key.version == 6:
        r.u8()  # count of the following fields
    cipher = r.u8()
    aead = r.u8() if usage == 253 else 0
    if key.version == 6:
        r.u8()  # S2K specifier length
    s2k = parse_s2k(r)
    if s2k.type == 101:
        return usage, s2k, cipher, aead, b"", b""
    if usage == 253:
        iv = r.take(AEAD_NONCE.get(aead, 0) or _fail_aead(aead))
    else:
        if cipher not in CIPHERS:
            raise UnsupportedAlgorithmError(f"unsupported key protection cipher {cipher}")
        iv = r.take(CIPHERS[cipher][1])
    return usage, s2k, cipher, aead, iv, r.rest()


def _fail_aead(aead: int) -> int:
    raise UnsupportedAlgorithmError(f"unsupported AEAD mode {aead}")


def _checksum(data: bytes) -> bytes:
    return struct.pack(">H", sum(data) & 0xFFFF)


_SECRET_MPIS = {
    pk.PK_RSA: 4,
    pk.PK_RSA_E: 4,
    pk.PK_RSA_S: 4,
    pk.PK_DSA: 1,
    pk.PK_ELGAMAL: 1,
    pk.PK_ECDSA: 1,
    pk.PK_ECDH: 1,
    pk.PK_EDDSA_LEGACY: 1,
}


def _canonical_secret(key: pk.KeyPacket, secret: bytes) -> bytes:
    """Re-encode secret MPIs minimally: some producers (GnuPG 2.1) wrote
    MPIs whose bit count includes leading zeros, which Sequoia refuses."""
    count = _SECRET_MPIS.get(key.algorithm)
    if count is None:
        return secret
    r = pk._Reader(secret)
    values = [r.mpi() for _ in range(count)]
    if r.remaining:
        raise InvalidKeyError("trailing data in OpenPGP secret key material")
    return b"".join(pk.mpi_encode(v) for v in values)


def unlock_key(key: pk.KeyPacket, passphrase: str | None) -> bytes | None:
    """The body of an unprotected secret key packet, or None if the packet
    carries no secret (GNU dummy). Raises WrongPassphraseError."""
    usage, s2k, cipher, aead, iv, material = _parse_protection(key)
    if usage == 0:
        if key.version == 6:
            return key.public_body + b"\x00" + _canonical_secret(key, material)
        canon = _canonical_secret(key, material[:-2])
        return key.public_body + b"\x00" + canon + _checksum(canon)
    assert s2k is not None
    if s2k.type == 101:
        return None
    if passphrase is None:
        raise WrongPassphraseError("the OpenPGP secret key is protected by a passphrase")
    pw = passphrase.encode("utf-8")
    if cipher not in CIPHERS:
        raise UnsupportedAlgorithmError(f"unsupported key protection cipher {cipher}")
    size = CIPHERS[cipher][0]
    kek = s2k_derive(s2k, pw, size)
    if usage == 253:
        tag_octet = bytes([0xC0 | key.tag])
        info = tag_octet + bytes([key.version, cipher, aead])
        k = HKDF(algorithm=hashes.SHA256(), length=size, salt=None, info=info).derive(kek)
        try:
            plain = aead_decrypt(aead, cipher, k, iv, material, tag_octet + key.public_body)
        except InvalidTag:
            raise WrongPassphraseError("wrong passphrase for the OpenPGP secret key") from None
        secret = plain
    else:
        plain = cfb_decrypt(cipher, kek, iv, material)
        if usage == 254:
            secret, check = plain[:-20], plain[-20:]
            ok = len(plain) > 20 and hmac.compare_digest(hashlib.sha1(secret).digest(), check)
        else:
            secret, check = plain[:-2], plain[-2:]
            ok = len(plain) > 2 and hmac.compare_digest(_checksum(secret), check)
        if not ok:
            raise WrongPassphraseError("wrong passphrase for the OpenPGP secret key")
    secret = _canonical_secret(key, secret)
    body = key.public_body + b"\x00" + secret
    if key.version != 6:
        body += _checksum(secret)
    return body


def unlock_cert(packets: Sequence[pk.Packet], passphrase: str | None) -> list[pk.Packet] | None:
    """The packets with every secret key unprotected; None when no
    packet holds secret material."""
    out: list[pk.Packet] = []
    any_secret = False
    for p in packets:
        if p.tag in (pk.TAG_SECRET_KEY, pk.TAG_SECRET_SUBKEY):
            key = pk.parse_key(p)
            body = unlock_key(key, passphrase)
            if body is None:
                # No secret here (e.g. gpg --export-secret-subkeys): keep
                # it as a public key.
                tag = pk.TAG_PUBLIC_KEY if key.is_primary else pk.TAG_PUBLIC_SUBKEY
                out.append(pk.Packet(tag, key.public_body, key.public_packet()))
                continue
            any_secret = True
            out.append(pk.Packet(p.tag, body, pk.encode_packet(p.tag, body)))
        else:
            out.append(p)
    if not any_secret:
        return None
    # A public primary with secret subkeys is a valid TSK too: Sequoia wants
    # a secret-key packet first only when the primary has one.
    return out


# --------------------------------------------------------------------------
# Public API


def parse_openpgp_keys(data: bytes, passphrase: str | None) -> list[ParsedKey]:
    """Read certificates and transferable secret keys (armored or binary).

    Secret keys are returned *unprotected*: the passphrase is used once,
    here, and the keystore seals the result under its master key.
    """
    at = now()
    try:
        binary = pk.to_binary(data)
        packets = pk.read_packets(binary)
    except InputError as exc:
        raise InvalidKeyError("unreadable OpenPGP key data") from exc
    result: list[ParsedKey] = []
    for cert_packets in split_certs(packets):
        info = analyse_cert(cert_packets, at)
        private: bytes | None = None
        if any(p.tag in (pk.TAG_SECRET_KEY, pk.TAG_SECRET_SUBKEY) for p in cert_packets):
            try:
                unlocked = unlock_cert(cert_packets, passphrase)
            except InputError as exc:
                raise InvalidKeyError("unreadable OpenPGP secret key") from exc
            if unlocked is not None:
                private = b"".join(p.raw for p in unlocked)
                if _backend.check_tsk(private) != info.fingerprint:
                    raise InvalidKeyError("OpenPGP secret key does not match its certificate")
                info = analyse_cert(unlocked, at)
        public = info.public_packets()
        view = _backend.cert_view(public)
        if view.fingerprint != info.fingerprint:
            raise InvalidKeyError("OpenPGP certificate fingerprint mismatch")
        has_secret = private is not None
        signing = [k for k in info.signing_keys() if _has_secret_material(k.key)]
        problems = list(dict.fromkeys(info.problems))
        result.append(
            ParsedKey(
                scheme=Scheme.OPENPGP,
                key_id=info.fingerprint,
                public_data=public,
                private_data=private,
                addresses=_engine_confirmed_addresses(info, view),
                not_before=info.primary.key.created,
                not_after=info.primary.expires,
                algorithm=info.primary.key.algorithm_name,
                subject=_subject(info),
                problems=tuple(problems),
                usable_for_encryption=bool(info.encryption_keys()),
                usable_for_signing=has_secret and bool(signing),
            )
        )
    return result


def _engine_confirmed_addresses(info: CertInfo, view: _backend.EngineCertView) -> tuple[str, ...]:
    # Both secmail and Sequoia must accept a User ID before its address is
    # trusted: a disagreement can only remove an address, never add one.
    engine = {uid_address(u) for u in view.user_ids}
    return tuple(a for a in info.addresses() if a in engine)


def engine_addresses(info: CertInfo) -> tuple[str, ...]:
    try:
        view = _backend.cert_view(info.public_packets())
    except InvalidKeyError:
        return ()
    return _engine_confirmed_addresses(info, view)


def _subject(info: CertInfo) -> str:
    uids = info.valid_uids()
    return uids[0].text if uids else ""


def parse_openpgp_trust(data: bytes, bundle: str) -> list[TrustEntry]:
    """OpenPGP trust-anchor keys (CA keys such as an académie's)."""
    entries: list[TrustEntry] = []
    for info in load_certs(data, now()):
        if not info.primary_valid:
            raise InvalidKeyError("OpenPGP trust anchor without a valid self-signature")
        entries.append(
            TrustEntry(
                anchor_id=info.fingerprint,
                bundle=bundle,
                scheme=Scheme.OPENPGP,
                data=info.public_packets(),
                is_anchor=True,
                subject=_subject(info),
                not_before=info.primary.key.created,
                not_after=info.primary.expires,
            )
        )
    return entries


def is_certified_by(
    cert: bytes, anchors: Sequence[bytes], at: datetime, *, address: str | None = None
) -> bool:
    """Is a valid User ID of ``cert`` (with ``address``, if given) certified
    by one of ``anchors``?

    The certification (RFC 9580 §5.2.1, types 0x10-0x13) must be made by
    the anchor's primary key, verify, be current at ``at`` and not be
    revoked by the anchor; the anchor itself must be valid at ``at``.
    A certification binds the key to *that* User ID only: the holder can
    add others to the certificate, which no anchor vouched for, hence
    ``address`` when the question is about one sender.
    """
    try:
        info = load_cert(cert, at)
    except InputError:
        return False
    if not info.cert_usable:
        return False
    anchor_keys: list[pk.KeyPacket] = []
    for a in anchors:
        try:
            ai = load_cert(a, at)
        except InputError:
            continue
        if ai.cert_usable and ai.primary.flags & pk.KF_CERTIFY:
            anchor_keys.append(ai.primary.key)
    material = info.primary.key.hash_material()
    for u in info.valid_uids():
        if address is not None and (u.address is None or not address_matches(address, [u.address])):
            continue
        data = material + pk.uid_hash_material(u.tag, u.body)
        for ak in anchor_keys:
            if ak.fingerprint == info.fingerprint:
                continue
            certs = [
                s
                for s in u.signatures
                if s.sig_type in pk.CERTIFICATION_TYPES and _self_sig_ok(s, ak, data, at)
            ]
            if not certs:
                continue
            newest = _newest(certs)
            later_revs = [
                s
                for s in u.signatures
                if s.sig_type == pk.SIG_CERT_REVOCATION
                and newest is not None
                and (s.created or at) >= (newest.created or at)
            ]
            if not _revoked(later_revs, pk.SIG_CERT_REVOCATION, ak, data, at):
                return True
    return False


def usable_encryption_cert(cert: bytes, at: datetime) -> bool:
    """Not revoked or expired at ``at`` and with a usable encryption key."""
    try:
        return bool(load_cert(cert, at).encryption_keys())
    except InputError:
        return False
