"""parse_trust_bundle and parse_crl."""

from __future__ import annotations

import shutil
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from hypothesis import given, settings
from hypothesis import strategies as st
from keystore_pki import (
    Issued,
    cert_der,
    cert_id,
    cert_pem,
    ec_key,
    make_ca,
    make_cert,
    make_user,
    openssl,
    rsa_key,
)

from secmail.errors import ErrorReason, InputError, SecmailError
from secmail.keystore.api import TrustEntry
from secmail.keystore.importer import parse_crl, parse_trust_bundle
from secmail.verdict import Scheme

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


@pytest.fixture(scope="module")
def root() -> Issued:
    return make_ca("Root CA")


@pytest.fixture(scope="module")
def inter(root: Issued) -> Issued:
    return make_ca("Intermediate CA", issuer=root)


@pytest.fixture(scope="module")
def user(inter: Issued) -> Issued:
    return make_user("carol@ac-test.fr", issuer=inter, key=rsa_key(1))


def _by_id(entries: list[TrustEntry]) -> dict[str, TrustEntry]:
    return {e.anchor_id: e for e in entries}


def test_pem_bundle_anchor_and_intermediate(root: Issued, inter: Issued) -> None:
    data = b"# comment\n" + cert_pem(root.cert) + b"\n" + cert_pem(inter.cert)
    entries = _by_id(parse_trust_bundle("académie", data))
    assert set(entries) == {cert_id(root.cert), cert_id(inter.cert)}
    r, i = entries[cert_id(root.cert)], entries[cert_id(inter.cert)]
    assert r.is_anchor and not i.is_anchor
    assert r.bundle == i.bundle == "académie"
    assert r.scheme is Scheme.SMIME
    assert r.data == cert_der(root.cert)
    assert r.subject == "CN=Root CA" and i.subject == "CN=Intermediate CA"
    assert r.not_before == root.cert.not_valid_before_utc
    assert r.not_after == root.cert.not_valid_after_utc


def test_der_single_root(root: Issued) -> None:
    (entry,) = parse_trust_bundle("b", cert_der(root.cert))
    assert entry.is_anchor and entry.anchor_id == cert_id(root.cert)


def test_duplicates_collapse(root: Issued) -> None:
    assert len(parse_trust_bundle("b", cert_pem(root.cert) * 3)) == 1


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_pkcs7_bundle(encoding: serialization.Encoding, root: Issued, inter: Issued) -> None:
    data = pkcs7.serialize_certificates([root.cert, inter.cert], encoding)
    entries = _by_id(parse_trust_bundle("p7", data))
    assert entries[cert_id(root.cert)].is_anchor
    assert not entries[cert_id(inter.cert)].is_anchor


@pytest.mark.interop
@needs_openssl
@pytest.mark.parametrize("outform", ["PEM", "DER"])
def test_openssl_p7b(outform: str, tmp_path: Path, root: Issued, inter: Issued) -> None:
    (tmp_path / "certs.pem").write_bytes(cert_pem(root.cert) + cert_pem(inter.cert))
    data = openssl("crl2pkcs7", "-nocrl", "-certfile", tmp_path / "certs.pem", "-outform", outform)
    entries = _by_id(parse_trust_bundle("p7b", data))
    assert set(entries) == {cert_id(root.cert), cert_id(inter.cert)}
    assert entries[cert_id(root.cert)].is_anchor


@pytest.mark.interop
@needs_openssl
def test_openssl_v1_self_signed_root_is_anchor(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", "/CN=Old Root", "-out", tmp_path / "r.csr")
    openssl(
        "x509", "-req", "-in", tmp_path / "r.csr", "-signkey", key, "-days", "30", "-out", tmp_path / "v1.pem"
    )
    data = (tmp_path / "v1.pem").read_bytes()
    assert x509.load_pem_x509_certificate(data).version is x509.Version.v1
    (entry,) = parse_trust_bundle("old", data)
    assert entry.is_anchor


def test_end_entity_rejects_whole_bundle(root: Issued, user: Issued) -> None:
    with pytest.raises(InputError, match="end-entity") as info:
        parse_trust_bundle("b", cert_pem(root.cert) + cert_pem(user.cert))
    assert "CN=carol" in info.value.message
    assert info.value.reason is ErrorReason.INVALID_CERTIFICATE


def test_ca_false_and_missing_basic_constraints_are_end_entities(root: Issued) -> None:
    for ca in (False, None):
        cert = make_cert("Not a CA", ec_key(), issuer=root, ca=ca)
        with pytest.raises(InputError, match="Not a CA"):
            parse_trust_bundle("b", cert_pem(cert.cert))


def test_self_issued_but_not_self_signed_is_intermediate(root: Issued) -> None:
    """Subject == issuer but signed by another key (a key rollover
    certificate): a CA, but no anchor."""
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Rollover CA")])
    other_signer = make_ca("x")
    forged = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ec_key().public_key())
        .serial_number(1)
        .not_valid_before(datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(other_signer.key, hashes.SHA256())
    )
    (entry,) = parse_trust_bundle("b", cert_pem(forged))
    assert not entry.is_anchor


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\x30\x03\x02\x01",
        b"-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n",
        b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PKCS7-----\nMAA=\n-----END PKCS7-----\n",
    ],
)
def test_bad_bundles(data: bytes) -> None:
    with pytest.raises(InputError):
        parse_trust_bundle("b", data)


def test_truncated_der(root: Issued) -> None:
    der = cert_der(root.cert)
    with pytest.raises(InputError):
        parse_trust_bundle("b", der[:-5])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_bundles_raise_only_secmail_errors(blob: bytes) -> None:
    try:
        parse_trust_bundle("b", blob)
    except SecmailError:
        pass


def test_openpgp_bundle_is_delegated_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, str]] = []

    def parse_openpgp_trust(data: bytes, bundle: str) -> list[TrustEntry]:
        seen.append((data, bundle))
        return [TrustEntry("ab" * 20, bundle, Scheme.OPENPGP, b"k", True, "Org", None, None)]

    module = types.ModuleType("secmail.pgp.keys")
    setattr(module, "parse_openpgp_trust", parse_openpgp_trust)  # noqa: B010
    monkeypatch.setitem(sys.modules, "secmail.pgp.keys", module)
    data = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n=abc\n-----END PGP PUBLIC KEY BLOCK-----\n"
    (out,) = parse_trust_bundle("pgp-ca", data)
    assert seen == [(data, "pgp-ca")]
    assert out.bundle == "pgp-ca"


# --- CRLs ---------------------------------------------------------------------


def _crl(
    issuer: Issued, this_update: datetime, next_update: datetime | None
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(this_update)
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(42).revocation_date(this_update).build()
        )
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    if next_update is not None:
        builder = builder.next_update(next_update)
    return builder.sign(issuer.key, hashes.SHA256())


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_parse_crl(encoding: serialization.Encoding, inter: Issued) -> None:
    t = datetime(2026, 5, 1, tzinfo=UTC)
    crl = _crl(inter, t, t + timedelta(days=7))
    stored = parse_crl(crl.public_bytes(encoding))
    assert stored.issuer == "CN=Intermediate CA"
    assert stored.data == crl.public_bytes(serialization.Encoding.DER)
    assert stored.this_update == t
    assert stored.next_update == t + timedelta(days=7)


@pytest.mark.parametrize(
    "data",
    [b"", b"junk", b"\x30\x03\x02\x01", b"-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"],
)
def test_bad_crls(data: bytes) -> None:
    with pytest.raises(InputError):
        parse_crl(data)


def test_certificate_is_not_a_crl(root: Issued) -> None:
    with pytest.raises(InputError):
        parse_crl(cert_pem(root.cert))
    with pytest.raises(InputError):
        parse_crl(cert_der(root.cert))
