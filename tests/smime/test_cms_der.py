"""The DER we produce, checked against the RFC rules byte by byte.

Expected encodings are written out in hex from the RFC definitions, not
computed with the helpers under test.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from asn1crypto import cms, core
from cryptography.hazmat.primitives import keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from smime_pki import SmimePKI, end_entity, sign_as

from secmail.smime import algorithms as alg
from secmail.smime.envelope import decrypt_content, encrypt_content, shared_info

CONTENT = b"Content-Type: text/plain\r\n\r\nDER\r\n"

H = bytes.fromhex
SHA256_ABSENT = H("300b0609608648016503040201")  # RFC 5754 §2
SHA512_ABSENT = H("300b0609608648016503040203")
SHA256_NULL = H("300d06096086480165030402010500")  # RFC 4055 §2.1 sha256Identifier
SHA256_RSA_NULL = H("300d06092a864886f70d01010b0500")  # RFC 5754 §3.2
ECDSA_SHA256 = H("300a06082a8648ce3d040302")  # RFC 5758 §3.2: parameters absent
ECDSA_SHA384 = H("300a06082a8648ce3d040303")
ED25519 = H("300506032b6570")  # RFC 8419 §3: parameters absent
OID_DATA = H("06092a864886f70d010701")


def _sign(pki: SmimePKI, who: str, **kw: object) -> cms.ContentInfo:
    der = sign_as(pki, who, CONTENT, **kw)
    # Re-encoding with asn1crypto (sorted SETs, minimal lengths) gives back
    # the same bytes: what we wrote is DER.
    assert cms.ContentInfo.load(der).dump(force=True) == der
    return cms.ContentInfo.load(der)


def test_signed_data_layout(pki: SmimePKI) -> None:
    info = _sign(pki, "alice")
    assert info["content_type"].dotted == alg.OID_SIGNED_DATA
    sd = info["content"]
    assert sd["version"].native == "v1"  # RFC 5652 §5.1: data, X.509 only, issuerAndSerial
    assert [bytes(a.dump()) for a in sd["digest_algorithms"]] == [SHA256_ABSENT]
    assert bytes(sd["encap_content_info"].dump()) == H("300b") + OID_DATA  # detached: no eContent
    certs = [bytes(c.chosen.dump()) for c in sd["certificates"]]
    der_of = [c.public_bytes(serialization.Encoding.DER) for c in (pki["alice"].cert, pki.intermediate)]
    assert certs == sorted(der_of)

    (si,) = sd["signer_infos"]
    assert si["version"].native == "v1"
    assert si["sid"].name == "issuer_and_serial_number"
    tbs = pki["alice"].cert.tbs_certificate_bytes
    assert bytes(si["sid"].chosen["issuer"].dump()) in tbs  # the issuer's bytes, copied
    assert si["sid"].chosen["serial_number"].native == pki["alice"].cert.serial_number
    assert bytes(si["digest_algorithm"].dump()) == SHA256_ABSENT
    assert bytes(si["signature_algorithm"].dump()) == SHA256_RSA_NULL
    assert "unsigned_attrs" not in si or isinstance(si["unsigned_attrs"], core.Void)


def test_opaque_carries_econtent(pki: SmimePKI) -> None:
    sd = _sign(pki, "alice", detached=False)["content"]
    expected = H("30") + bytes([len(OID_DATA) + 2 + 2 + len(CONTENT)]) + OID_DATA
    expected += H("a0") + bytes([2 + len(CONTENT)]) + H("04") + bytes([len(CONTENT)]) + CONTENT
    assert bytes(sd["encap_content_info"].dump()) == expected


def test_signed_attributes(pki: SmimePKI) -> None:
    si = _sign(pki, "alice")["content"]["signer_infos"][0]
    attrs = si["signed_attrs"]
    raw = bytes(attrs.dump())
    assert raw[0] == 0xA0  # [0] IMPLICIT SET OF
    encoded = [bytes(a.dump()) for a in attrs]
    assert encoded == sorted(encoded)  # X.690 §11.6 DER SET OF order
    by_type = {a["type"].dotted: bytes(a["values"].dump()) for a in attrs}
    assert set(by_type) == {
        alg.OID_CONTENT_TYPE,
        alg.OID_MESSAGE_DIGEST,
        alg.OID_SIGNING_TIME,
        alg.OID_SMIME_CAPABILITIES,
    }
    assert by_type[alg.OID_CONTENT_TYPE] == H("310b") + OID_DATA
    assert by_type[alg.OID_MESSAGE_DIGEST] == H("3122") + H("0420") + hashlib.sha256(CONTENT).digest()
    # RFC 5652 §11.3: UTCTime through 2049, seconds, Z.
    assert by_type[alg.OID_SIGNING_TIME] == H("310f") + H("170d") + b"260601110000Z"
    # RFC 8551 §2.5.2: preference order, AES identifiers without parameters.
    caps = H("31363034") + b"".join(
        H("300b0609") + H(oid)
        for oid in ("60864801650304012e", "6086480165030401 06", "60864801650304012a", "608648016503040102")
    )
    assert by_type[alg.OID_SMIME_CAPABILITIES] == caps

    # RFC 5652 §5.4: the signature is over the SET OF encoding (tag 0x31).
    public = pki["alice"].cert.public_key()
    signed = H("31") + raw[1:]
    public.verify(si["signature"].native, signed, padding.PKCS1v15(), alg.hash_algorithm("sha256"))  # type: ignore[union-attr, call-arg, arg-type]


def test_ecdsa_identifiers(pki: SmimePKI) -> None:
    si = _sign(pki, "bob")["content"]["signer_infos"][0]
    assert bytes(si["signature_algorithm"].dump()) == ECDSA_SHA256
    si = _sign(pki, "erin", digest="sha384")["content"]["signer_infos"][0]
    assert bytes(si["signature_algorithm"].dump()) == ECDSA_SHA384
    assert si["digest_algorithm"]["algorithm"].native == "sha384"


def test_ed25519_identifiers(pki: SmimePKI) -> None:
    sd = _sign(pki, "carol")["content"]
    si = sd["signer_infos"][0]
    assert bytes(si["signature_algorithm"].dump()) == ED25519
    assert bytes(si["digest_algorithm"].dump()) == SHA512_ABSENT  # RFC 8419 §3.1
    assert [bytes(a.dump()) for a in sd["digest_algorithms"]] == [SHA512_ABSENT]
    digest = next(a for a in si["signed_attrs"] if a["type"].dotted == alg.OID_MESSAGE_DIGEST)
    assert digest["values"][0].native == hashlib.sha512(CONTENT).digest()
    # Pure Ed25519 over the DER of the attributes.
    pki["carol"].cert.public_key().verify(  # type: ignore[call-arg, union-attr]
        si["signature"].native, H("31") + bytes(si["signed_attrs"].dump())[1:]
    )


def test_rsassa_pss_parameters(pki: SmimePKI) -> None:
    """RFC 4056 §2 / RFC 4055 §3.1: hash, MGF1 with the same hash, salt =
    hash length, trailerField at its DEFAULT (omitted)."""
    si = _sign(pki, "alice", rsa_pss=True)["content"]["signer_infos"][0]
    expected = (
        H("304106092a864886f70d01010a3034")
        + H("a00f")
        + SHA256_NULL
        + H("a11c301a06092a864886f70d010108")
        + SHA256_NULL
        + H("a203020120")
    )
    assert bytes(si["signature_algorithm"].dump()) == expected
    assert bytes(si["digest_algorithm"].dump()) == SHA256_ABSENT


# --- envelopes -------------------------------------------------------------------------------------
OAEP_SHA256 = (
    H("303c06092a864886f70d010107302f")
    + H("a00f")
    + SHA256_NULL
    + H("a11c301a06092a864886f70d010108")
    + SHA256_NULL
)  # RFC 4055 §4.1, pSourceFunc at its DEFAULT (omitted)
RSA_PKCS1 = H("300d06092a864886f70d0101010500")
AES256_WRAP = H("300b060960864801650304012d")  # RFC 3565 §2.3.2: parameters absent


def _load(der: bytes) -> cms.ContentInfo:
    assert cms.ContentInfo.load(der).dump(force=True) == der
    return cms.ContentInfo.load(der)


def test_auth_enveloped_data_layout(pki: SmimePKI) -> None:
    info = _load(encrypt_content(CONTENT, [pki["alice"].cert]))
    assert info["content_type"].dotted == alg.OID_AUTH_ENVELOPED_DATA
    aed = info["content"]
    assert aed["version"].native == "v0"  # RFC 5083 §2.1
    (ri,) = aed["recipient_infos"]
    assert ri.name == "ktri"
    assert ri.chosen["version"].native == "v0"
    assert ri.chosen["rid"].name == "issuer_and_serial_number"
    assert bytes(ri.chosen["key_encryption_algorithm"].dump()) == OAEP_SHA256
    eci = aed["auth_encrypted_content_info"]
    assert bytes(eci["content_type"].dump()) == OID_DATA
    cipher = bytes(eci["content_encryption_algorithm"].dump())
    # RFC 5084 §3.2: GCMParameters { aes-nonce (12 octets), aes-ICVlen 16 }
    assert cipher[: 2 + 11] == H("301e060960864801650304012e")
    assert cipher[13:17] == H("3011040c") and cipher[-3:] == H("020110")
    raw_eci = bytes(eci.dump())
    # encryptedContent [0] IMPLICIT OCTET STRING: primitive context tag 0x80.
    assert raw_eci[raw_eci.index(cipher) + len(cipher)] == 0x80
    assert len(aed["mac"].native) == 16
    assert isinstance(aed["auth_attrs"], core.Void)

    # Independent decryption with the parameters as encoded.
    cek = pki["alice"].key.decrypt(  # type: ignore[union-attr]
        ri.chosen["encrypted_key"].native,
        padding.OAEP(padding.MGF1(alg.hash_algorithm("sha256")), alg.hash_algorithm("sha256"), None),
    )
    nonce = cipher[17:29]
    ct = eci["encrypted_content"].native
    assert AESGCM(cek).decrypt(nonce, ct + aed["mac"].native, None) == CONTENT


def test_enveloped_data_versions(pki: SmimePKI) -> None:
    """RFC 5652 §6.1: version 0 with only version-0 ktri, 2 once a kari is in."""
    ed = _load(encrypt_content(CONTENT, [pki["alice"].cert], authenticated=False, rsa_oaep=False))["content"]
    assert ed["version"].native == "v0"
    assert bytes(ed["recipient_infos"][0].chosen["key_encryption_algorithm"].dump()) == RSA_PKCS1
    cipher = bytes(ed["encrypted_content_info"]["content_encryption_algorithm"].dump())
    assert cipher[:15] == H("301d060960864801650304012a0410")  # aes256-CBC, 16-byte IV
    ed = _load(encrypt_content(CONTENT, [pki["alice"].cert, pki["bob"].cert], authenticated=False))["content"]
    assert ed["version"].native == "v2"


def test_shared_info_encoding() -> None:
    """RFC 5753 §7.2 ECC-CMS-SharedInfo."""
    assert shared_info(alg.OID_AES256_WRAP, None) == H("3015") + AES256_WRAP + H("a206040400000100")
    assert shared_info(alg.OID_AES128_WRAP, b"abc") == (
        H("301c300b0609608648016503040105a0050403616263a206040400000080")
    )


def _x963_sha256(z: bytes, info: bytes, length: int) -> bytes:
    out = b""
    counter = 1
    while len(out) < length:
        out += hashlib.sha256(z + counter.to_bytes(4, "big") + info).digest()
        counter += 1
    return out[:length]


def _hkdf(digest: str, z: bytes, info: bytes, length: int) -> bytes:
    size = hashlib.new(digest).digest_size
    prk = hmac.new(b"\x00" * size, z, digest).digest()  # RFC 5869: no salt = zeros
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), digest).digest()
        out += block
        counter += 1
    return out[:length]


def test_kari_p256_layout_and_independent_unwrap(pki: SmimePKI) -> None:
    info = _load(encrypt_content(CONTENT, [pki["bob"].cert]))
    aed = info["content"]
    ri = aed["recipient_infos"][0]
    assert ri.name == "kari"
    raw = bytes(ri.dump())
    assert raw[0] == 0xA1  # RecipientInfo kari [1]
    kari = ri.chosen
    assert kari["version"].native == "v3"
    assert isinstance(kari["ukm"], core.Void)
    originator = kari["originator"]
    assert originator.name == "originator_key"
    orig_raw = bytes(originator.chosen.dump())
    # [1] IMPLICIT OriginatorPublicKey: id-ecPublicKey + prime256v1, 65-byte point
    assert orig_raw[:2] == H("a159")
    assert orig_raw[2:23] == H("301306072a8648ce3d020106082a8648ce3d030107")
    assert orig_raw[23:26] == H("034200") and orig_raw[26] == 0x04
    # dhSinglePass-stdDH-sha256kdf-scheme (RFC 5753 §7.1.4) with aes256-wrap.
    assert bytes(kari["key_encryption_algorithm"].dump()) == H("301506062b8104010b01") + AES256_WRAP
    (rek,) = kari["recipient_encrypted_keys"]
    assert rek["rid"].name == "issuer_and_serial_number"
    wrapped = rek["encrypted_key"].native
    assert len(wrapped) == 40  # a 32-byte CEK wrapped (RFC 3394)

    # Independent derivation: ANSI X9.63 KDF with SHA-256 over Z.
    bob_key = pki["bob"].key
    assert isinstance(bob_key, ec.EllipticCurvePrivateKey)
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), orig_raw[26:])
    z = bob_key.exchange(ec.ECDH(), peer)
    kek = _x963_sha256(z, H("3015") + AES256_WRAP + H("a206040400000100"), 32)
    cek = keywrap.aes_key_unwrap(kek, wrapped)
    eci = aed["auth_encrypted_content_info"]
    nonce = bytes(eci["content_encryption_algorithm"].dump())[17:29]
    assert AESGCM(cek).decrypt(nonce, eci["encrypted_content"].native + aed["mac"].native, None) == CONTENT


def test_kari_p384_uses_sha384_kdf(pki: SmimePKI) -> None:
    kari = _load(encrypt_content(CONTENT, [pki["erin"].cert]))["content"]["recipient_infos"][0].chosen
    assert bytes(kari["key_encryption_algorithm"].dump()) == H("301506062b8104010b02") + AES256_WRAP
    assert bytes(kari["originator"].chosen.dump())[2:20] == H("301006072a8648ce3d020106052b81040022")


@pytest.mark.parametrize("curve", ["x25519", "x448"])
def test_kari_rfc8418_layout_and_independent_unwrap(pki: SmimePKI, curve: str) -> None:
    if curve == "x25519":
        key: x25519.X25519PrivateKey | x448.X448PrivateKey = pki["dave"].key  # type: ignore[assignment]
        cert = pki["dave"].cert
        alg_der, size, scheme, digest = H("300506032b656e"), 32, "13", "sha256"
    else:
        key = x448.X448PrivateKey.generate()
        cert = end_entity(
            (pki.intermediate, pki.intermediate_key),
            "Xavier",
            "x448@example.org",
            key.public_key(),
            0x5001,
            sign=False,
            encipher=False,
            agree=True,
        )
        alg_der, size, scheme, digest = H("300506032b656f"), 56, "15", "sha512"
    der = encrypt_content(CONTENT, [cert])
    aed = _load(der)["content"]
    kari = aed["recipient_infos"][0].chosen
    orig_raw = bytes(kari["originator"].chosen.dump())
    # RFC 8418 §2: id-X25519 / id-X448 with absent parameters, raw public key.
    assert orig_raw[2:9] == alg_der
    assert orig_raw[9:12] == H("03") + bytes([size + 1]) + H("00")
    ephemeral = orig_raw[12:]
    assert len(ephemeral) == size
    # dhSinglePass-stdDH-hkdf-sha256/512-scheme (id-alg 19 / 21) with aes256-wrap.
    assert bytes(kari["key_encryption_algorithm"].dump()) == (
        H("301a060b2a864886f70d01091003") + H(scheme) + AES256_WRAP
    )
    if isinstance(key, x25519.X25519PrivateKey):
        z = key.exchange(x25519.X25519PublicKey.from_public_bytes(ephemeral))
    else:
        z = key.exchange(x448.X448PublicKey.from_public_bytes(ephemeral))
    kek = _hkdf(digest, z, H("3015") + AES256_WRAP + H("a206040400000100"), 32)
    cek = keywrap.aes_key_unwrap(kek, kari["recipient_encrypted_keys"][0]["encrypted_key"].native)
    eci = aed["auth_encrypted_content_info"]
    nonce = bytes(eci["content_encryption_algorithm"].dump())[17:29]
    assert AESGCM(cek).decrypt(nonce, eci["encrypted_content"].native + aed["mac"].native, None) == CONTENT
    assert decrypt_content(der, [(cert, key)]).content == CONTENT
