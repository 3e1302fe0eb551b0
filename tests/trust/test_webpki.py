"""The CA/B Forum rules added for ``validate_chain(purpose="server")``."""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from trust_pki import AT, NOT_AFTER, NOT_BEFORE, CertSpec, Issued, ec_key, issue, name

from secmail.trust.path import validate_chain
from secmail.verdict import Reason

_SERVER = CertSpec(
    name("www.example.fr"),
    ekus=(ExtendedKeyUsageOID.SERVER_AUTH,),
    extra=((x509.SubjectAlternativeName([x509.DNSName("www.example.fr")]), False),),
)
_CA_KU = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _ca(
    subject: str,
    issuer: Issued | None,
    *,
    ski: bool = True,
    aki: x509.AuthorityKeyIdentifier | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    key = key or ec_key()
    signer_key = key if issuer is None else issuer.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(subject) if issuer is None else issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_KU, critical=True)
    )
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    if aki is None and issuer is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key())
    if aki is not None:
        builder = builder.add_extension(aki, critical=False)
    return Issued(builder.sign(signer_key, hashes.SHA256()), key)


def test_conforming_server_chain_passes() -> None:
    root = _ca("Root", None)
    intermediate = _ca("Issuing", root)
    leaf = issue(_SERVER, ec_key(), intermediate).cert
    outcome = validate_chain(
        leaf, [intermediate.cert], [root.cert], at=AT, purpose="server", dns_name="www.example.fr"
    )
    assert outcome.ok, outcome.detail


def test_intermediate_without_ski_fails_for_servers_only() -> None:
    root = _ca("Root", None)
    intermediate = _ca("Issuing", root, ski=False)
    leaf = issue(_SERVER, ec_key(), intermediate).cert
    server = validate_chain(
        leaf, [intermediate.cert], [root.cert], at=AT, purpose="server", dns_name="www.example.fr"
    )
    assert not server.ok
    assert server.reasons == (Reason.UNTRUSTED_CHAIN,)
    assert "subjectKeyIdentifier" in server.detail
    # TLS client rules are not applied to other purposes.
    client = validate_chain(
        leaf, [intermediate.cert], [root.cert], at=AT, purpose="client", extended_key_usages=[]
    )
    assert client.ok, client.detail


def _root_with_aki(aki_for: Callable[[bytes], x509.AuthorityKeyIdentifier]) -> bool:
    key = ec_key()
    own_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    aki = aki_for(own_id)
    root = _ca("Root", None, aki=aki, key=key)
    leaf = issue(_SERVER, ec_key(), root).cert
    return validate_chain(leaf, [], [root.cert], at=AT, purpose="server", dns_name="www.example.fr").ok


def test_root_aki_must_be_its_own_key_identifier_only() -> None:
    # BR §7.1.2.1.3.
    assert _root_with_aki(lambda own: x509.AuthorityKeyIdentifier(own, None, None))
    assert not _root_with_aki(
        lambda own: x509.AuthorityKeyIdentifier(own, [x509.DirectoryName(name("Root"))], 1)
    )
    assert not _root_with_aki(lambda own: x509.AuthorityKeyIdentifier(b"\x01" * 20, None, None))


def test_subscriber_key_on_p192_is_refused() -> None:
    root = _ca("Root", None)
    p192 = ec.generate_private_key(ec.SECP192R1())
    leaf = issue(_SERVER, p192, root).cert
    outcome = validate_chain(leaf, [], [root.cert], at=AT, purpose="server", dns_name="www.example.fr")
    assert not outcome.ok
    assert "P-256" in outcome.detail
