"""encrypt_content / decrypt_content: round trips, integrity, no oracle."""

from __future__ import annotations

import os

import pytest
from asn1crypto import cms
from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from smime_pki import SmimePKI

from secmail.errors import DecryptionError, InputError, IntegrityError, UnsupportedAlgorithmError
from secmail.smime import algorithms as alg
from secmail.smime.envelope import decrypt_content, encrypt_content
from secmail.smime.sign import sign_content

CONTENT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nConfidentiel.\r\n"

RECIPIENTS = [
    # (person, rsa_oaep, recipient info kind)
    ("alice", True, "ktri"),
    ("alice", False, "ktri"),
    ("bob", True, "kari"),
    ("erin", True, "kari"),
    ("dave", True, "kari"),
]


def _keys(pki: SmimePKI, *names: str) -> list[tuple[object, object]]:
    return [(pki[n].cert, pki[n].key) for n in names]


@pytest.mark.parametrize("key_bits", [128, 256])
@pytest.mark.parametrize("authenticated", [True, False], ids=["auth-enveloped", "enveloped"])
@pytest.mark.parametrize(
    ("who", "oaep", "kind"),
    RECIPIENTS,
    ids=["rsa-oaep", "rsa-pkcs1v15", "ecdh-p256", "ecdh-p384", "x25519"],
)
def test_round_trip(
    pki: SmimePKI, who: str, oaep: bool, kind: str, authenticated: bool, key_bits: int
) -> None:
    person = pki[who]
    der = encrypt_content(
        CONTENT, [person.cert], authenticated=authenticated, key_bits=key_bits, rsa_oaep=oaep
    )
    info = cms.ContentInfo.load(der)
    assert info["content_type"].native == (
        "authenticated_enveloped_data" if authenticated else "enveloped_data"
    )
    assert info["content"]["recipient_infos"][0].name == kind
    assert CONTENT not in der

    result = decrypt_content(der, _keys(pki, who))  # type: ignore[arg-type]
    mode = "gcm" if authenticated else "cbc"
    assert result.content == CONTENT
    assert result.integrity_protected is authenticated
    assert result.content_cipher == f"aes-{key_bits}-{mode}"
    assert result.weak_cipher is False


def test_several_recipients_each_decrypt(pki: SmimePKI) -> None:
    names = ["alice", "bob", "erin", "dave"]
    der = encrypt_content(CONTENT, [pki[n].cert for n in names])
    assert len(cms.ContentInfo.load(der)["content"]["recipient_infos"]) == 4
    for name in names:
        assert decrypt_content(der, _keys(pki, name)).content == CONTENT  # type: ignore[arg-type]


def test_user_with_several_keys(pki: SmimePKI) -> None:
    der = encrypt_content(CONTENT, [pki["erin"].cert])
    assert decrypt_content(der, _keys(pki, "alice", "bob", "erin")).content == CONTENT  # type: ignore[arg-type]


def test_no_matching_recipient(pki: SmimePKI) -> None:
    der = encrypt_content(CONTENT, [pki["alice"].cert])
    with pytest.raises(DecryptionError) as info:
        decrypt_content(der, _keys(pki, "bob", "dave"))  # type: ignore[arg-type]
    assert not isinstance(info.value, IntegrityError)
    assert info.value.message == "no recipient matches the user's keys"


def test_wrong_key_for_the_named_certificate(pki: SmimePKI) -> None:
    """A key that is not the certificate's fails like any bad ciphertext."""
    der = encrypt_content(CONTENT, [pki["alice"].cert], authenticated=False)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(DecryptionError) as info:
        decrypt_content(der, [(pki["alice"].cert, other)])
    assert info.value.message == "decryption failed"


# --- integrity --------------------------------------------------------------------------------
def _mac_offset(der: bytes) -> int:
    aed = cms.ContentInfo.load(der)["content"]
    mac = aed["mac"].native
    return der.rindex(mac)


def test_gcm_tag_flip_is_integrity_error(pki: SmimePKI) -> None:
    der = bytearray(encrypt_content(CONTENT, [pki["alice"].cert]))
    der[_mac_offset(bytes(der))] ^= 0x01
    with pytest.raises(IntegrityError):
        decrypt_content(bytes(der), _keys(pki, "alice"))  # type: ignore[arg-type]


def test_gcm_ciphertext_flip_is_integrity_error(pki: SmimePKI) -> None:
    der = bytearray(encrypt_content(CONTENT, [pki["bob"].cert]))
    der[_mac_offset(bytes(der)) - 5] ^= 0x80  # inside encryptedContent, before the mac
    with pytest.raises(IntegrityError) as info:
        decrypt_content(bytes(der), _keys(pki, "bob"))  # type: ignore[arg-type]
    assert b"Confidentiel" not in info.value.message.encode()


def test_gcm_truncated_tag_is_refused(pki: SmimePKI) -> None:
    """ICVlen says 16; a shorter mac must not lower the bar."""
    der = encrypt_content(CONTENT, [pki["alice"].cert])
    info = cms.ContentInfo.load(der)
    mac = info["content"]["mac"].native
    # The enclosing lengths change: re-encode by hand.
    aed = info["content"]
    body = alg.der_sequence(
        alg.der_integer(0),
        bytes(aed["recipient_infos"].dump()),
        bytes(aed["auth_encrypted_content_info"].dump()),
        alg.der_octet_string(mac[:12]),
    )
    shortened = alg.der_sequence(alg.der_oid(alg.OID_AUTH_ENVELOPED_DATA), alg.der_explicit(0, body))
    with pytest.raises(IntegrityError):
        decrypt_content(shortened, _keys(pki, "alice"))  # type: ignore[arg-type]


def _auth_enveloped(
    pki: SmimePKI,
    cek: bytes,
    cipher_alg: bytes,
    ciphertext: bytes,
    mac: bytes,
    auth_attrs: list[bytes] | None = None,
) -> bytes:
    """AuthEnvelopedData to Alice (RSA-OAEP) around a content we encrypted."""
    ktri = alg.der_sequence(
        alg.der_integer(0),
        alg.issuer_and_serial_number(pki["alice"].cert),
        alg.algorithm_identifier(alg.OID_RSAES_OAEP, alg.rsaes_oaep_parameters("sha256")),
        alg.der_octet_string(
            pki["alice"]
            .cert.public_key()
            .encrypt(  # type: ignore[union-attr]
                cek,
                padding.OAEP(padding.MGF1(alg.hash_algorithm("sha256")), alg.hash_algorithm("sha256"), None),
            )
        ),
    )
    eci = alg.der_sequence(
        alg.der_oid(alg.OID_DATA),
        cipher_alg,
        alg.der_implicit_primitive(0, alg.der_octet_string(ciphertext)),
    )
    parts = [alg.der_integer(0), alg.der_set_of([ktri]), eci]
    if auth_attrs is not None:
        parts.append(alg.der_set_of(auth_attrs, tag=0xA1))
    parts.append(alg.der_octet_string(mac))
    return alg.der_sequence(
        alg.der_oid(alg.OID_AUTH_ENVELOPED_DATA), alg.der_explicit(0, alg.der_sequence(*parts))
    )


def test_auth_attributes_are_additional_data(pki: SmimePKI) -> None:
    """RFC 5083 §2.2: authAttrs, DER with the SET OF tag, are the AAD."""
    cek, nonce = os.urandom(32), os.urandom(12)
    attrs = [alg.der_sequence(alg.der_oid(alg.OID_CONTENT_TYPE), alg.der_set_of([alg.der_oid(alg.OID_DATA)]))]
    aad = alg.der_set_of(attrs)
    sealed = AESGCM(cek).encrypt(nonce, CONTENT, aad)
    params = alg.der_sequence(alg.der_octet_string(nonce), alg.der_integer(16))
    gcm = alg.algorithm_identifier(alg.OID_AES256_GCM, params)
    der = _auth_enveloped(pki, cek, gcm, sealed[:-16], sealed[-16:], auth_attrs=attrs)
    result = decrypt_content(der, _keys(pki, "alice"))  # type: ignore[arg-type]
    assert (result.content, result.integrity_protected) == (CONTENT, True)
    # The same ciphertext without its attributes fails: they were authenticated.
    stripped = _auth_enveloped(pki, cek, gcm, sealed[:-16], sealed[-16:])
    with pytest.raises(IntegrityError):
        decrypt_content(stripped, _keys(pki, "alice"))  # type: ignore[arg-type]


def test_gcm_default_icv_length_of_12(pki: SmimePKI) -> None:
    cek, nonce = os.urandom(16), os.urandom(12)
    encryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce)).encryptor()
    ciphertext = encryptor.update(CONTENT) + encryptor.finalize()
    tag = encryptor.tag[:12]
    params = alg.der_sequence(alg.der_octet_string(nonce))  # aes-ICVlen DEFAULT 12
    der = _auth_enveloped(pki, cek, alg.algorithm_identifier(alg.OID_AES128_GCM, params), ciphertext, tag)
    assert decrypt_content(der, _keys(pki, "alice")).content == CONTENT  # type: ignore[arg-type]


def test_chacha20_poly1305_auth_enveloped(pki: SmimePKI) -> None:
    """RFC 8103: the nonce is the parameter, the 16-byte tag is the mac."""
    cek, nonce = os.urandom(32), os.urandom(12)
    sealed = ChaCha20Poly1305(cek).encrypt(nonce, CONTENT, None)
    chacha = alg.algorithm_identifier(alg.OID_CHACHA20_POLY1305, alg.der_octet_string(nonce))
    der = _auth_enveloped(pki, cek, chacha, sealed[:-16], sealed[-16:])
    result = decrypt_content(der, _keys(pki, "alice"))  # type: ignore[arg-type]
    assert (result.content, result.content_cipher, result.integrity_protected) == (
        CONTENT,
        "chacha20-poly1305",
        True,
    )
    flipped = _auth_enveloped(pki, cek, chacha, sealed[:-16], sealed[-16:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        decrypt_content(flipped, _keys(pki, "alice"))  # type: ignore[arg-type]


def test_cbc_in_auth_enveloped_data_is_refused(pki: SmimePKI) -> None:
    cbc = alg.algorithm_identifier(alg.OID_AES256_CBC, alg.der_octet_string(os.urandom(16)))
    der = _auth_enveloped(pki, os.urandom(32), cbc, os.urandom(32), os.urandom(16))
    with pytest.raises(UnsupportedAlgorithmError):
        decrypt_content(der, _keys(pki, "alice"))  # type: ignore[arg-type]


# --- no padding oracle --------------------------------------------------------------------------
def _enveloped_to_alice(
    pki: SmimePKI, encrypted_key: bytes, key_alg: bytes, cipher_alg: bytes, ciphertext: bytes
) -> bytes:
    ktri = alg.der_sequence(
        alg.der_integer(0),
        alg.issuer_and_serial_number(pki["alice"].cert),
        key_alg,
        alg.der_octet_string(encrypted_key),
    )
    eci = alg.der_sequence(
        alg.der_oid(alg.OID_DATA), cipher_alg, alg.der_implicit_primitive(0, alg.der_octet_string(ciphertext))
    )
    body = alg.der_sequence(alg.der_integer(0), alg.der_set_of([ktri]), eci)
    return alg.der_sequence(alg.der_oid(alg.OID_ENVELOPED_DATA), alg.der_explicit(0, body))


def test_pkcs1v15_unwrap_failure_looks_like_bad_padding(pki: SmimePKI) -> None:
    """RFC 3218 §2.3.2: a bad PKCS#1 v1.5 block continues with a random key,
    so it fails exactly like a ciphertext whose padding is wrong."""
    public = pki["alice"].cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    pkcs1 = alg.algorithm_identifier(alg.OID_RSA_ENCRYPTION, alg.DER_NULL)
    cek, iv = os.urandom(32), os.urandom(16)
    cbc = alg.algorithm_identifier(alg.OID_AES256_CBC, alg.der_octet_string(iv))
    padder = sym_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    good_ct = encryptor.update(padder.update(CONTENT) + padder.finalize()) + encryptor.finalize()
    good_key = public.encrypt(cek, padding.PKCS1v15())

    assert (
        decrypt_content(
            _enveloped_to_alice(pki, good_key, pkcs1, cbc, good_ct),
            _keys(pki, "alice"),  # type: ignore[arg-type]
        ).content
        == CONTENT
    )

    messages = set()
    # 1. A random "encrypted key": the PKCS#1 block is garbage.
    bad_block = os.urandom(len(good_key))
    # 2. A well-formed block holding a key of the wrong length.
    wrong_length = public.encrypt(os.urandom(24), padding.PKCS1v15())
    # 3. The right key, but content whose padding is broken.
    broken_padding = good_ct[:-1] + bytes([good_ct[-1] ^ 0xFF])
    for encrypted_key, ciphertext in (
        (bad_block, good_ct),
        (wrong_length, good_ct),
        (good_key, broken_padding),
    ):
        der = _enveloped_to_alice(pki, encrypted_key, pkcs1, cbc, ciphertext)
        with pytest.raises(DecryptionError) as info:
            decrypt_content(der, _keys(pki, "alice"))  # type: ignore[arg-type]
        assert type(info.value) is DecryptionError
        messages.add(info.value.message)
    assert messages == {"decryption failed"}


def test_oaep_unwrap_failure_is_generic(pki: SmimePKI) -> None:
    der = bytearray(encrypt_content(CONTENT, [pki["alice"].cert], authenticated=False))
    ktri = cms.ContentInfo.load(bytes(der))["content"]["recipient_infos"][0].chosen
    at = bytes(der).index(ktri["encrypted_key"].native)
    der[at + 10] ^= 0x01
    with pytest.raises(DecryptionError) as info:
        decrypt_content(bytes(der), _keys(pki, "alice"))  # type: ignore[arg-type]
    assert info.value.message == "decryption failed"


def test_ecdh_wrapped_key_flip_is_generic(pki: SmimePKI) -> None:
    der = bytearray(encrypt_content(CONTENT, [pki["bob"].cert], authenticated=False))
    kari = cms.ContentInfo.load(bytes(der))["content"]["recipient_infos"][0].chosen
    wrapped = kari["recipient_encrypted_keys"][0]["encrypted_key"].native
    der[bytes(der).index(wrapped) + 3] ^= 0x01
    with pytest.raises(DecryptionError) as info:
        decrypt_content(bytes(der), _keys(pki, "bob"))  # type: ignore[arg-type]
    assert info.value.message == "decryption failed"


def test_ephemeral_point_not_on_curve(pki: SmimePKI) -> None:
    der = encrypt_content(CONTENT, [pki["bob"].cert])
    kari = cms.ContentInfo.load(der)["content"]["recipient_infos"][0].chosen
    point = bytes(kari["originator"].chosen["public_key"].contents)[1:]
    bogus = b"\x04" + bytes(64)
    with pytest.raises(IntegrityError):
        decrypt_content(der.replace(point, bogus), _keys(pki, "bob"))  # type: ignore[arg-type]


# --- legacy ciphers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("oid", "name", "key_size", "algorithm"),
    [
        (alg.OID_DES_EDE3_CBC, "3des-cbc", 24, decrepit.TripleDES),
        (alg.OID_AES192_CBC, "aes-192-cbc", 24, None),
    ],
)
def test_legacy_cbc_ciphers(pki: SmimePKI, oid: str, name: str, key_size: int, algorithm: object) -> None:
    public = pki["alice"].cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    cek = os.urandom(key_size)
    cipher = algorithm(cek) if algorithm else algorithms.AES(cek)  # type: ignore[operator]
    block = cipher.block_size // 8
    iv = os.urandom(block)
    padder = sym_padding.PKCS7(block * 8).padder()
    encryptor = Cipher(cipher, modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(CONTENT) + padder.finalize()) + encryptor.finalize()
    der = _enveloped_to_alice(
        pki,
        public.encrypt(cek, padding.PKCS1v15()),
        alg.algorithm_identifier(alg.OID_RSA_ENCRYPTION, alg.DER_NULL),
        alg.algorithm_identifier(oid, alg.der_octet_string(iv)),
        ciphertext,
    )
    result = decrypt_content(der, _keys(pki, "alice"))  # type: ignore[arg-type]
    assert (result.content, result.content_cipher) == (CONTENT, name)
    assert result.weak_cipher is (name == "3des-cbc")
    assert result.integrity_protected is False


def test_rc2_below_128_bits_is_refused(pki: SmimePKI) -> None:
    rc2_40 = alg.der_sequence(alg.der_integer(160), alg.der_octet_string(os.urandom(8)))
    der = _enveloped_to_alice(
        pki,
        os.urandom(256),
        alg.algorithm_identifier(alg.OID_RSA_ENCRYPTION, alg.DER_NULL),
        alg.algorithm_identifier(alg.OID_RC2_CBC, rc2_40),
        os.urandom(32),
    )
    with pytest.raises(UnsupportedAlgorithmError):
        decrypt_content(der, _keys(pki, "alice"))  # type: ignore[arg-type]


def test_unknown_content_cipher(pki: SmimePKI) -> None:
    der = _enveloped_to_alice(
        pki,
        os.urandom(256),
        alg.algorithm_identifier(alg.OID_RSA_ENCRYPTION, alg.DER_NULL),
        alg.algorithm_identifier("1.2.3.4", alg.der_octet_string(os.urandom(16))),
        os.urandom(32),
    )
    with pytest.raises(UnsupportedAlgorithmError):
        decrypt_content(der, _keys(pki, "alice"))  # type: ignore[arg-type]


# --- unreadable input ---------------------------------------------------------------------------
@pytest.mark.parametrize("der", [b"", b"not DER", b"\x30\x80\x00"], ids=["empty", "garbage", "bad-ber"])
def test_garbage_is_input_error(pki: SmimePKI, der: bytes) -> None:
    with pytest.raises(InputError):
        decrypt_content(der, _keys(pki, "alice"))  # type: ignore[arg-type]


def test_truncated_is_input_error(pki: SmimePKI) -> None:
    der = encrypt_content(CONTENT, [pki["alice"].cert, pki["bob"].cert])
    for cut in (5, len(der) // 3, len(der) - 1):
        with pytest.raises(InputError):
            decrypt_content(der[:cut], _keys(pki, "alice", "bob"))  # type: ignore[arg-type]


def test_signed_data_is_not_enveloped(pki: SmimePKI) -> None:
    from smime_pki import SIGNING_TIME

    alice = pki["alice"]
    der = sign_content(CONTENT, private_key=alice.key, cert=alice.cert, signing_time=SIGNING_TIME)
    with pytest.raises(InputError):
        decrypt_content(der, _keys(pki, "alice"))  # type: ignore[arg-type]


def test_no_recipients_is_refused(pki: SmimePKI) -> None:
    with pytest.raises(InputError):
        encrypt_content(CONTENT, [])


def test_ed25519_certificate_cannot_be_a_recipient(pki: SmimePKI) -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        encrypt_content(CONTENT, [pki["carol"].cert])


def test_unsupported_curve_recipient(pki: SmimePKI) -> None:
    from smime_pki import end_entity

    key = ec.generate_private_key(ec.SECP256K1())
    cert = end_entity(
        (pki.intermediate, pki.intermediate_key),
        "K1",
        "k1@example.org",
        key.public_key(),
        0x4001,
        sign=False,
        encipher=False,
        agree=True,
    )
    with pytest.raises(UnsupportedAlgorithmError):
        encrypt_content(CONTENT, [cert])


def test_large_content(pki: SmimePKI) -> None:
    import time

    big = os.urandom(5 * 1024 * 1024)
    start = time.perf_counter()
    der = encrypt_content(big, [pki["alice"].cert])
    assert decrypt_content(der, _keys(pki, "alice")).content == big  # type: ignore[arg-type]
    assert time.perf_counter() - start < 2.0


def test_originator_on_another_named_curve_is_refused(pki: SmimePKI) -> None:
    """RFC 5753 §3.1.1: a namedCurve in the originator key must be the
    recipient's; prime192v1 has an OID of the same length as prime256v1."""
    der = encrypt_content(CONTENT, [pki["bob"].cert])
    p256, p192 = bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06082a8648ce3d030101")
    assert der.count(p256) == 1
    assert decrypt_content(der, _keys(pki, "bob")).content == CONTENT  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        decrypt_content(der.replace(p256, p192), _keys(pki, "bob"))  # type: ignore[arg-type]
