"""Checks on certificates that cryptography's verifier does not make.

Each function looks at a chain (end entity first, anchor last) or a pair
of certificates and never raises for malformed input: what it cannot read
counts against the certificate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PSS, PKCS1v15
from cryptography.x509.oid import NameOID

from secmail.policy import AlgorithmPolicy
from secmail.verdict import Reason

#: Digests cryptography's verifier never accepts in a certificate signature;
#: a chain it refused that uses one of them failed for its algorithm.
ENGINE_REFUSED_DIGESTS = frozenset({"md5", "sha1"})
#: The verifier's floor for RSA issuer keys (CA/B Forum BR §6.1.5).
ENGINE_MIN_RSA_BITS = 2048


def validity_reasons(chain: Sequence[x509.Certificate], at: datetime) -> tuple[Reason, ...]:
    """CERT_EXPIRED / CERT_NOT_YET_VALID for certificates outside validity.

    RFC 5280 §6.1.3 (a)(2): every certificate of the path must be valid at
    the validation time. cryptography also holds the anchor to its
    validity, so the anchor counts too.
    """
    reasons: list[Reason] = []
    for cert in chain:
        if at > cert.not_valid_after_utc and Reason.CERT_EXPIRED not in reasons:
            reasons.append(Reason.CERT_EXPIRED)
        if at < cert.not_valid_before_utc and Reason.CERT_NOT_YET_VALID not in reasons:
            reasons.append(Reason.CERT_NOT_YET_VALID)
    return tuple(reasons)


def has_weak_algorithm(
    chain: Sequence[x509.Certificate],
    algorithms: AlgorithmPolicy | None,
    *,
    engine_floor: bool,
) -> bool:
    """Whether a signature or an RSA key of ``chain`` is too weak.

    Signatures are those *on* the certificates below the anchor: the
    anchor's self-signature carries no trust (RFC 5280 §6.1.1 (d): the
    trust anchor is an input, its signature is never checked). Keys are
    every key that verifies something or signs mail, the anchor's too.
    With ``engine_floor``, the algorithms cryptography refuses on its own
    count as weak as well, so a chain it rejected for them is labelled by
    its real problem.
    """
    min_rsa = algorithms.min_rsa_bits if algorithms is not None else 0
    if engine_floor:
        min_rsa = max(min_rsa, ENGINE_MIN_RSA_BITS)
    for cert in chain[:-1]:
        digest = _signature_digest(cert)
        if digest is None:
            continue
        if digest in ENGINE_REFUSED_DIGESTS:
            return True
        if algorithms is not None and digest not in algorithms.signature_digests:
            return True
    for cert in chain:
        try:
            key = cert.public_key()
        except Exception:
            continue
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < min_rsa:
            return True
    return False


def _signature_digest(cert: x509.Certificate) -> str | None:
    try:
        digest = cert.signature_hash_algorithm
    except Exception:
        # An unknown signature algorithm is not "weak", it is unsupported;
        # the verifier has already refused it.
        return None
    # cryptography spells SHA-3 "sha3-256"; the policy uses hashlib's "sha3_256".
    return None if digest is None else digest.name.replace("-", "_")


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key made ``cert``'s signature, any algorithm.

    Unlike ``verify_directly_issued_by`` this accepts SHA-1 and MD5, so
    that a chain refused for its algorithms can still be recognised as a
    chain (and reported as WEAK_ALGORITHM rather than UNTRUSTED_CHAIN).
    """
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except Exception:
        pass
    try:
        digest = cert.signature_hash_algorithm
        params = cert.signature_algorithm_parameters
        key = issuer.public_key()
        if digest is None:
            return False
        # cryptography reports no parameters for the legacy algorithms it
        # refuses (e.g. ecdsa-with-SHA1): the key type and digest say it all.
        if isinstance(key, rsa.RSAPublicKey):
            rsa_padding = params if isinstance(params, (PKCS1v15, PSS)) else PKCS1v15()
            key.verify(cert.signature, cert.tbs_certificate_bytes, rsa_padding, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(digest))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, digest)
        else:
            return False
    except Exception:
        return False
    return True


def find_path_by_signatures(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    max_depth: int,
    budget: int = 64,
) -> tuple[x509.Certificate, ...] | None:
    """A path from ``leaf`` to an anchor by names and signatures only.

    No extension, validity or policy check: this only tells whether the
    certificates link up cryptographically, to name the failure of a path
    the verifier refused. ``budget`` bounds the signature checks, so a
    hostile pool (x509-limbo's pathological cases) cannot make it slow.
    """
    anchor_set = set(anchors)
    by_subject: dict[x509.Name, list[x509.Certificate]] = {}
    # Anchors first: a path that ends sooner is the one to report.
    for cert in (*anchors, *pool):
        by_subject.setdefault(cert.subject, [])
        if cert not in by_subject[cert.subject]:
            by_subject[cert.subject].append(cert)
    remaining = budget

    def extend(path: tuple[x509.Certificate, ...]) -> tuple[x509.Certificate, ...] | None:
        nonlocal remaining
        current = path[-1]
        if current in anchor_set:
            return path
        # max_depth counts intermediates, as cryptography's does.
        if len(path) > max_depth + 1:
            return None
        for candidate in by_subject.get(current.issuer, ()):
            if candidate in path or remaining <= 0:
                continue
            remaining -= 1
            if not signed_by(current, candidate):
                continue
            found = extend((*path, candidate))
            if found is not None:
                return found
        return None

    return extend((leaf,))


def san_emails(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:
        return ()
    return tuple(san.get_values_for_type(x509.RFC822Name))


def email_matches(expected: str, candidates: Iterable[str]) -> bool:
    """RFC 5280 §7.5: the local part is case-sensitive, the domain is not."""
    local, sep, domain = expected.rpartition("@")
    if not sep:
        return False
    for candidate in candidates:
        c_local, c_sep, c_domain = candidate.rpartition("@")
        if c_sep and c_local == local and c_domain.lower() == domain.lower():
            return True
    return False


def dn_emails_within_constraints(chain: Sequence[x509.Certificate]) -> bool:
    """Apply rfc822Name constraints to the subject DN's emailAddress.

    RFC 5280 §4.2.1.10: "When constraints are imposed on the rfc822Name
    name form, but the certificate does not include a subject alternative
    name, the rfc822Name constraint MUST be applied to the attribute of
    type emailAddress in the subject distinguished name." cryptography
    only constrains the SAN. We apply the constraints to the DN's
    addresses whether or not a SAN is present, since a reader may be shown
    those addresses too.
    """
    leaf = chain[0]
    try:
        emails = [str(attr.value) for attr in leaf.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    except Exception:
        return False
    if not emails:
        return True
    for ca in chain[1:]:
        try:
            nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        except Exception:
            return False
        permitted = [n.value for n in nc.permitted_subtrees or () if isinstance(n, x509.RFC822Name)]
        excluded = [n.value for n in nc.excluded_subtrees or () if isinstance(n, x509.RFC822Name)]
        for email in emails:
            if permitted and not any(_rfc822_constraint_matches(c, email) for c in permitted):
                return False
            if any(_rfc822_constraint_matches(c, email) for c in excluded):
                return False
    return True


def _rfc822_constraint_matches(constraint: str, email: str) -> bool:
    # RFC 5280 §4.2.1.10: a constraint with "@" is one mailbox; one starting
    # with "." is every host of that domain (not the domain itself); any
    # other is every mailbox on exactly that host. Characters are literal.
    local, sep, host = email.rpartition("@")
    if not sep:
        return False
    host = host.lower()
    if "@" in constraint:
        c_local, _, c_host = constraint.rpartition("@")
        return c_local == local and c_host.lower() == host
    if constraint.startswith("."):
        return host.endswith(constraint.lower())
    return host == constraint.lower()
