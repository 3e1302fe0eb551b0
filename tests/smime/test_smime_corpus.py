"""Third-party corpora: RFC 4134 examples and the RFC 9216 (LAMPS) keys.

Expected results come from each corpus's SOURCE.md. Where secmail refuses by
policy, the test asserts the exact refusal:

- rfc4134 4.1, 4.3, 4.4, 4.6 (Alice), 4.7, 4.8, 4.9, 4.10: the signer gets
  ``UNSUPPORTED_ALGORITHM``; DSA signatures are not evaluated (absent from
  RFC 8551, withdrawn by FIPS 186-5).
- rfc4134 4.6 (Diane): ``SIGNER_KEY_MISSING``; her certificate is not in
  the message, and signers are looked up among the message's certificates.
- rfc4134 4.2, 4.5: valid mathematics with ``WEAK_ALGORITHM`` (SHA-1).
- rfc4134 5.1, 5.3: decrypt, with ``weak_cipher`` (3DES-CBC).
- rfc4134 5.2: ``UnsupportedAlgorithmError``; RC2 with 40 effective key bits
  (RC2ParameterVersion 160), only RC2/128 is implemented.
- rfc4134 3.1, 3.2, 6.0, 7.1, 7.2: ``InputError``; Data, DigestedData and
  EncryptedData are neither signed nor enveloped messages.
- rfc9216 carlos (Ed25519 CA): the signature verifies; whether the chain is
  trusted is secmail.trust's call (cryptography's verifier refuses Ed25519
  CA keys today), so only "nothing INVALID" is asserted for it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from smime_pki import corpus_dir

from secmail.context import TrustContext, VerifyContext
from secmail.errors import InputError, UnsupportedAlgorithmError
from secmail.mime.entity import canonicalize
from secmail.policy import DEFAULT_POLICY
from secmail.smime.envelope import decrypt_content, encrypt_content
from secmail.smime.sign import sign_content
from secmail.smime.verify import verify_signed_data
from secmail.verdict import Reason, Severity

pytestmark = pytest.mark.corpus

EX_CONTENT = b"This is some sample content."
RFC4134_AT = datetime(2005, 1, 1, tzinfo=UTC)  # SOURCE.md: certificates from 1999


@pytest.fixture(scope="module")
def rfc4134() -> Path:
    return corpus_dir("rfc4134")


@pytest.fixture(scope="module")
def lamps() -> Path:
    return corpus_dir("lamps-rfc9216")


def _cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if data.startswith(b"-----"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _fpr(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _rfc4134_ctx(corpus: Path) -> VerifyContext:
    anchors = (_cert(corpus / "CarlRSASelf.cer"), _cert(corpus / "CarlDSSSelf.cer"))
    return VerifyContext(at=RFC4134_AT, policy=DEFAULT_POLICY, trust=TrustContext(anchors=anchors))


def _eml_body(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]


def _multipart_parts(raw: bytes) -> tuple[bytes, bytes]:
    """(first part's bytes, second part's body) of a multipart/signed .eml,
    CRLF-canonical, split on the RFC 2046 delimiters."""
    message = canonicalize(raw.replace(b"\r\n", b"\n"))
    boundary = re.search(rb'boundary="([^"]+)"', message)
    assert boundary is not None
    pieces = message.split(b"\r\n--" + boundary.group(1))
    first = pieces[1].removeprefix(b"\r\n")
    second = pieces[2].removeprefix(b"\r\n").split(b"\r\n\r\n", 1)[1]
    return first, second


@dataclass(frozen=True)
class SignedCase:
    id: str
    file: str
    detached: bool
    #: (signer certificate file or None, expected reasons) per SignerInfo.
    signers: tuple[tuple[str | None, tuple[Reason, ...]], ...]
    certificates: int


RFC4134_SIGNED = [
    SignedCase(
        "rfc4134-4.1-dsa",
        "4.1.bin",
        False,
        (("AliceDSSSignByCarlNoInherit.cer", (Reason.UNSUPPORTED_ALGORITHM,)),),
        1,
    ),
    SignedCase(
        "rfc4134-4.2-rsa-sha1", "4.2.bin", False, (("AliceRSASignByCarl.cer", (Reason.WEAK_ALGORITHM,)),), 1
    ),
    SignedCase(
        "rfc4134-4.3-dsa-detached",
        "4.3.bin",
        True,
        (("AliceDSSSignByCarlNoInherit.cer", (Reason.UNSUPPORTED_ALGORITHM,)),),
        1,
    ),
    SignedCase(
        "rfc4134-4.4-dsa-countersigned",
        "4.4.bin",
        False,
        (("AliceDSSSignByCarlNoInherit.cer", (Reason.UNSUPPORTED_ALGORITHM,)),),
        3,
    ),
    SignedCase(
        "rfc4134-4.5-rsa-sha1", "4.5.bin", False, (("AliceRSASignByCarl.cer", (Reason.WEAK_ALGORITHM,)),), 2
    ),
    SignedCase(
        "rfc4134-4.6-two-dsa-signers",
        "4.6.bin",
        False,
        (
            ("AliceDSSSignByCarlNoInherit.cer", (Reason.UNSUPPORTED_ALGORITHM,)),
            (None, (Reason.SIGNER_KEY_MISSING,)),
        ),
        1,
    ),
    SignedCase(
        "rfc4134-4.7-dsa-ski",
        "4.7.bin",
        False,
        (("AliceDSSSignByCarlNoInherit.cer", (Reason.UNSUPPORTED_ALGORITHM,)),),
        1,
    ),
    SignedCase(
        "rfc4134-4.10-ess-attributes",
        "4.10.bin",
        False,
        (("AliceDSSSignByCarlNoInherit.cer", (Reason.UNSUPPORTED_ALGORITHM,)),),
        1,
    ),
    SignedCase("rfc4134-4.11-certs-only", "4.11.bin", False, (), 2),
]


@pytest.mark.parametrize("case", RFC4134_SIGNED, ids=[c.id for c in RFC4134_SIGNED])
def test_rfc4134_signed(rfc4134: Path, case: SignedCase) -> None:
    der = (rfc4134 / case.file).read_bytes()
    detached = EX_CONTENT if case.detached else None
    result = verify_signed_data(der, detached_content=detached, ctx=_rfc4134_ctx(rfc4134))
    assert len(result.certificates) == case.certificates
    if case.file != "4.11.bin":
        assert result.encap_content == (None if case.detached else EX_CONTENT)
    assert len(result.signers) == len(case.signers)
    # SignerInfos are a SET: compare as the multiset of (certificate, reasons).
    seen = sorted((s.fingerprint, s.reasons) for s in result.signers)
    expected = sorted(
        (_fpr(_cert(rfc4134 / cert)) if cert else "", reasons) for cert, reasons in case.signers
    )
    assert seen == expected
    for signer in result.signers:
        assert signer.crypto_valid is (signer.reasons == (Reason.WEAK_ALGORITHM,))


def test_rfc4134_rsa_signers_chain_to_carl(rfc4134: Path) -> None:
    for name in ("4.2.bin", "4.5.bin"):
        result = verify_signed_data(
            (rfc4134 / name).read_bytes(), detached_content=None, ctx=_rfc4134_ctx(rfc4134)
        )
        (signer,) = result.signers
        assert signer.algorithm == "rsa-pkcs1v15-sha1"
        assert signer.chain[-1].fingerprint == _fpr(_cert(rfc4134 / "CarlRSASelf.cer"))
        assert not any(r.severity is Severity.INVALID for r in signer.reasons)
        # The content is what the RFC signed; one byte more is a bad signature.
        assert result.encap_content == EX_CONTENT


def test_rfc4134_ski_identifier(rfc4134: Path) -> None:
    result = verify_signed_data(
        (rfc4134 / "4.7.bin").read_bytes(), detached_content=None, ctx=_rfc4134_ctx(rfc4134)
    )
    alice = _cert(rfc4134 / "AliceDSSSignByCarlNoInherit.cer")
    ski = alice.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert result.signers[0].claimed_key_id == f"ski={ski.hex()}"


def test_rfc4134_4_8_multipart(rfc4134: Path) -> None:
    first, signature = _multipart_parts((rfc4134 / "4.8.eml").read_bytes())
    result = verify_signed_data(
        base64.b64decode(signature), detached_content=first, ctx=_rfc4134_ctx(rfc4134)
    )
    (signer,) = result.signers
    assert signer.reasons == (Reason.UNSUPPORTED_ALGORITHM,)
    assert signer.fingerprint == _fpr(_cert(rfc4134 / "AliceDSSSignByCarlNoInherit.cer"))


def test_rfc4134_4_9_pkcs7_mime(rfc4134: Path) -> None:
    der = base64.b64decode(_eml_body((rfc4134 / "4.9.eml").read_bytes()))
    result = verify_signed_data(der, detached_content=None, ctx=_rfc4134_ctx(rfc4134))
    assert result.encap_content is not None and EX_CONTENT in result.encap_content
    assert result.signers[0].reasons == (Reason.UNSUPPORTED_ALGORITHM,)


def _bob(rfc4134: Path) -> list[tuple[x509.Certificate, PrivateKeyTypes]]:
    key = serialization.load_der_private_key((rfc4134 / "BobPrivRSAEncrypt.pri").read_bytes(), None)
    return [(_cert(rfc4134 / "BobRSASignByCarl.cer"), key)]


def test_rfc4134_5_1_3des(rfc4134: Path) -> None:
    result = decrypt_content((rfc4134 / "5.1.bin").read_bytes(), _bob(rfc4134))
    assert (result.content, result.content_cipher, result.weak_cipher, result.integrity_protected) == (
        EX_CONTENT,
        "3des-cbc",
        True,
        False,
    )


def test_rfc4134_5_3_pkcs7_mime(rfc4134: Path) -> None:
    der = base64.b64decode(_eml_body((rfc4134 / "5.3.eml").read_bytes()))
    assert decrypt_content(der, _bob(rfc4134)).content == EX_CONTENT


def test_rfc4134_5_2_rc2_40_is_refused(rfc4134: Path) -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        decrypt_content((rfc4134 / "5.2.bin").read_bytes(), _bob(rfc4134))


@pytest.mark.parametrize("name", ["3.1.bin", "3.2.bin", "6.0.bin", "7.1.bin", "7.2.bin"])
def test_rfc4134_other_content_types(rfc4134: Path, name: str) -> None:
    der = (rfc4134 / name).read_bytes()
    with pytest.raises(InputError):
        verify_signed_data(der, detached_content=None, ctx=_rfc4134_ctx(rfc4134))
    with pytest.raises(InputError):
        decrypt_content(der, _bob(rfc4134))


# --- RFC 9216 (LAMPS) ------------------------------------------------------------------------------
LAMPS_AT = datetime(2026, 6, 1, tzinfo=UTC)
MESSAGE = b"Content-Type: text/plain\r\n\r\nLAMPS sample content.\r\n"


def _lamps_key(lamps: Path, name: str) -> PrivateKeyTypes:
    return serialization.load_pem_private_key((lamps / "keys" / name).read_bytes(), None)


def _lamps_ctx(lamps: Path, root: str) -> VerifyContext:
    anchor = _cert(lamps / "certs" / f"Sample_LAMPS_{root}_Certification_Authority.selfsigned.pem")
    return VerifyContext(at=LAMPS_AT, policy=DEFAULT_POLICY, trust=TrustContext(anchors=(anchor,)))


@pytest.mark.parametrize(
    ("key", "cert", "root", "algorithm"),
    [
        ("lamps-alice.p8.pem", "alice@smime.example.sig.pem", "RSA", "rsa-pkcs1v15-sha256"),
        ("lamps-carlos.p8.pem", "carlos@smime.example.sig.pem", "Ed25519", "ed25519"),
    ],
    ids=["rfc9216-alice-rsa", "rfc9216-carlos-ed25519"],
)
def test_rfc9216_sign_round_trip(lamps: Path, key: str, cert: str, root: str, algorithm: str) -> None:
    signer_cert = _cert(lamps / "certs" / cert)
    der = sign_content(MESSAGE, private_key=_lamps_key(lamps, key), cert=signer_cert, signing_time=LAMPS_AT)
    (signer,) = verify_signed_data(der, detached_content=MESSAGE, ctx=_lamps_ctx(lamps, root)).signers
    assert (signer.crypto_valid, signer.algorithm) == (True, algorithm)
    if root == "RSA":
        assert signer.reasons == ()
        assert len(signer.chain) == 2
    else:
        assert not any(r.severity is Severity.INVALID for r in signer.reasons)
    assert signer.verified_addresses == (cert.split(".sig")[0].split(".")[0] + ".example",)
    assert signer.fingerprint == _fpr(signer_cert)


@pytest.mark.parametrize("authenticated", [True, False], ids=["auth-enveloped", "enveloped"])
@pytest.mark.parametrize(
    ("key", "cert", "oaep"),
    [
        ("lamps-bob.decrypt.p8.pem", "bob@smime.example.enc.pem", True),
        ("lamps-bob.decrypt.p8.pem", "bob@smime.example.enc.pem", False),
        ("lamps-dana.decrypt.p8.pem", "dana@smime.example.enc.pem", True),
    ],
    ids=["rfc9216-bob-rsa-oaep", "rfc9216-bob-rsa-pkcs1v15", "rfc9216-dana-x25519"],
)
def test_rfc9216_encrypt_round_trip(
    lamps: Path, key: str, cert: str, oaep: bool, authenticated: bool
) -> None:
    recipient = _cert(lamps / "certs" / cert)
    der = encrypt_content(MESSAGE, [recipient], authenticated=authenticated, rsa_oaep=oaep)
    result = decrypt_content(der, [(recipient, _lamps_key(lamps, key))])
    assert (result.content, result.integrity_protected) == (MESSAGE, authenticated)
    # The other person's key opens nothing.
    other_key, other_cert = (
        ("lamps-dana.decrypt.p8.pem", "dana@smime.example.enc.pem")
        if "bob" in key
        else ("lamps-bob.decrypt.p8.pem", "bob@smime.example.enc.pem")
    )
    from secmail.errors import DecryptionError

    with pytest.raises(DecryptionError):
        decrypt_content(der, [(_cert(lamps / "certs" / other_cert), _lamps_key(lamps, other_key))])
