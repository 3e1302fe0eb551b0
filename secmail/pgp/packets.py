"""A small, strict OpenPGP packet reader (RFC 9580 §4, §5, §6, §7).

Why secmail reads packets itself: pysequoia 0.1.35 exposes certificates,
signatures and messages only through a few high-level calls. It does not
expose subkey bindings, revocations, third-party certifications, the
issuer of every signature in a message, or the layers of a decrypted
message, and those are what secmail must judge (which key may encrypt,
which signer is claimed, whether the ciphertext was integrity protected).
This module only *parses*: it never decides validity. Cryptographic checks
live in :mod:`secmail.pgp.keys` (self-signatures) and in Sequoia (message
signatures).

Everything here raises :class:`secmail.errors.InputError` on malformed
input, never ``IndexError``/``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from secmail.errors import InputError

# Packet type IDs (RFC 9580 §5, Table 3).
TAG_PKESK = 1
TAG_SIGNATURE = 2
TAG_SKESK = 3
TAG_OPS = 4
TAG_SECRET_KEY = 5
TAG_PUBLIC_KEY = 6
TAG_SECRET_SUBKEY = 7
TAG_COMPRESSED = 8
TAG_SED = 9
TAG_MARKER = 10
TAG_LITERAL = 11
TAG_TRUST = 12
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14
TAG_USER_ATTRIBUTE = 17
TAG_SEIPD = 18
TAG_MDC = 19
TAG_AED = 20
TAG_PADDING = 21

#: Packets whose length may be given in partial chunks (RFC 9580 §4.2.1.4).
_PARTIAL_OK = frozenset({TAG_COMPRESSED, TAG_SED, TAG_LITERAL, TAG_SEIPD, TAG_AED})

# Public-key algorithm IDs (RFC 9580 §9.1).
PK_RSA = 1
PK_RSA_E = 2
PK_RSA_S = 3
PK_ELGAMAL = 16
PK_DSA = 17
PK_ECDH = 18
PK_ECDSA = 19
PK_EDDSA_LEGACY = 22
PK_X25519 = 25
PK_X448 = 26
PK_ED25519 = 27
PK_ED448 = 28
RSA_ALGOS = frozenset({PK_RSA, PK_RSA_E, PK_RSA_S})

# Hash algorithm IDs (RFC 9580 §9.5) -> hashlib names.
HASH_NAMES: dict[int, str] = {
    1: "md5",
    2: "sha1",
    3: "ripemd160",
    8: "sha256",
    9: "sha384",
    10: "sha512",
    11: "sha224",
    12: "sha3_256",
    14: "sha3_512",
}

#: RFC 3156 §5 / RFC 9580 §7 micalg spelling per hash ID.
MICALG_NAMES: dict[int, str] = {
    1: "pgp-md5",
    2: "pgp-sha1",
    3: "pgp-ripemd160",
    8: "pgp-sha256",
    9: "pgp-sha384",
    10: "pgp-sha512",
    11: "pgp-sha224",
    12: "pgp-sha3-256",
    14: "pgp-sha3-512",
}

# Curve OIDs (RFC 9580 §9.2), DER content octets.
OID_NAMES: dict[bytes, str] = {
    bytes.fromhex("2A8648CE3D030107"): "p256",
    bytes.fromhex("2B81040022"): "p384",
    bytes.fromhex("2B81040023"): "p521",
    bytes.fromhex("2B2403030208010107"): "brainpoolp256r1",
    bytes.fromhex("2B240303020801010B"): "brainpoolp384r1",
    bytes.fromhex("2B240303020801010D"): "brainpoolp512r1",
    bytes.fromhex("2B06010401DA470F01"): "ed25519",
    bytes.fromhex("2B060104019755010501"): "cv25519",
}

# Signature subpacket types (RFC 9580 §5.2.3.7).
SP_CREATION_TIME = 2
SP_SIG_EXPIRATION = 3
SP_EXPORTABLE = 4
SP_TRUST = 5
SP_REGEX = 6
SP_REVOCABLE = 7
SP_KEY_EXPIRATION = 9
SP_PREFERRED_SYM = 11
SP_REVOCATION_KEY = 12
SP_ISSUER = 16
SP_NOTATION = 20
SP_PREFERRED_HASH = 21
SP_PREFERRED_COMPRESSION = 22
SP_KEYSERVER_PREFS = 23
SP_PREFERRED_KEYSERVER = 24
SP_PRIMARY_UID = 25
SP_POLICY_URI = 26
SP_KEY_FLAGS = 27
SP_SIGNERS_UID = 28
SP_REVOCATION_REASON = 29
SP_FEATURES = 30
SP_TARGET = 31
SP_EMBEDDED_SIG = 32
SP_ISSUER_FPR = 33
SP_INTENDED_RECIPIENT = 35
SP_PREFERRED_AEAD = 39
#: Subpackets whose meaning this reader knows; a *critical* subpacket of
#: any other type makes the signature invalid (RFC 9580 §5.2.3.7).
KNOWN_SUBPACKETS = frozenset(
    {
        SP_CREATION_TIME,
        SP_SIG_EXPIRATION,
        SP_EXPORTABLE,
        SP_REVOCABLE,
        SP_KEY_EXPIRATION,
        SP_PREFERRED_SYM,
        SP_ISSUER,
        SP_PREFERRED_HASH,
        SP_PREFERRED_COMPRESSION,
        SP_KEYSERVER_PREFS,
        SP_PREFERRED_KEYSERVER,
        SP_PRIMARY_UID,
        SP_POLICY_URI,
        SP_KEY_FLAGS,
        SP_SIGNERS_UID,
        SP_REVOCATION_REASON,
        SP_FEATURES,
        SP_EMBEDDED_SIG,
        SP_ISSUER_FPR,
        SP_INTENDED_RECIPIENT,
        SP_PREFERRED_AEAD,
        34,  # Preferred AEAD (LibrePGP), informational only
    }
)

# Key flags (RFC 9580 §5.2.3.29), first octet.
KF_CERTIFY = 0x01
KF_SIGN = 0x02
KF_ENCRYPT_COMMS = 0x04
KF_ENCRYPT_STORAGE = 0x08
KF_ENCRYPT = KF_ENCRYPT_COMMS | KF_ENCRYPT_STORAGE

# Features (RFC 9580 §5.2.3.32).
FEATURE_SEIPDV1 = 0x01
FEATURE_SEIPDV2 = 0x08

# Signature types (RFC 9580 §5.2.1).
SIG_BINARY = 0x00
SIG_TEXT = 0x01
SIG_STANDALONE = 0x02
SIG_CERT_GENERIC = 0x10
SIG_CERT_PERSONA = 0x11
SIG_CERT_CASUAL = 0x12
SIG_CERT_POSITIVE = 0x13
CERTIFICATION_TYPES = frozenset({0x10, 0x11, 0x12, 0x13})
SIG_SUBKEY_BINDING = 0x18
SIG_PRIMARY_BINDING = 0x19
SIG_DIRECT_KEY = 0x1F
SIG_KEY_REVOCATION = 0x20
SIG_SUBKEY_REVOCATION = 0x28
SIG_CERT_REVOCATION = 0x30


# --------------------------------------------------------------------------
# Armor (RFC 9580 §6)

_ARMOR_BEGIN = re.compile(rb"^-----BEGIN PGP ([A-Z ,/0-9]+)-----[ \t]*\r?$", re.M)


def is_armored(data: bytes) -> bool:
    return data.lstrip()[:15] == b"-----BEGIN PGP "


def _decode_armor_body(lines: list[bytes]) -> bytes:
    # Skip the armor headers: they end at the first empty line. Some
    # producers omit the empty line when there are no headers.
    i = 0
    if lines and b":" in lines[0] and not _looks_base64(lines[0]):
        while i < len(lines) and lines[i].strip():
            i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    # The stripped lines, one per line of this buffer: what follows the
    # first one that is a CRC24 checksum ("=" and four characters) is
    # dropped. The checksum is optional and not checked (RFC 9580 §6.1
    # says it SHOULD NOT be rejected on mismatch... and carries no
    # security value; integrity comes from the packets). Searched with
    # bytes.find: a line starts with "=" only there (or in bad input), so
    # a long message is not walked line by line in Python.
    text = b"\n".join(map(bytes.strip, lines[i:]))
    cut = len(text)
    start = 0  # of a line
    while True:
        if text[start : start + 1] == b"=":
            end = text.find(b"\n", start)
            if (len(text) if end < 0 else end) - start == 5:
                cut = start
                break
        after = text.find(b"\n=", start)
        if after < 0:
            break
        start = after + 1
    try:
        return base64.b64decode(text[:cut].replace(b"\n", b""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("invalid ASCII armor") from exc


def _looks_base64(line: bytes) -> bool:
    return re.fullmatch(rb"[A-Za-z0-9+/=]+", line.strip()) is not None


def dearmor_all(data: bytes) -> list[tuple[str, bytes]]:
    """Every armored block in ``data`` as (kind, binary), in order."""
    out: list[tuple[str, bytes]] = []
    pos = 0
    while True:
        m = _ARMOR_BEGIN.search(data, pos)
        if m is None:
            break
        kind = m.group(1).decode("ascii")
        end_marker = b"-----END PGP " + m.group(1) + b"-----"
        end = data.find(end_marker, m.end())
        if end < 0:
            raise InputError("unterminated ASCII armor")
        if kind == "SIGNED MESSAGE":
            # The cleartext framework has its own reader (parse_cleartext).
            pos = end + len(end_marker)
            continue
        # Split on LF only: every use of a line strips it, CR included.
        body = data[m.end() : end].split(b"\n")
        if body and not body[0].strip():
            body = body[1:]  # the rest of the BEGIN line
        out.append((kind, _decode_armor_body(body)))
        pos = end + len(end_marker)
    return out


def to_binary(data: bytes) -> bytes:
    """Binary OpenPGP data from armored or binary input."""
    if is_armored(data):
        blocks = dearmor_all(data)
        if not blocks:
            raise InputError("no OpenPGP armor block found")
        return b"".join(b for _, b in blocks)
    if not data:
        raise InputError("empty OpenPGP data")
    if not data[0] & 0x80:
        raise InputError("not OpenPGP data")
    return data


@dataclass(frozen=True, slots=True)
class Cleartext:
    """A cleartext-signed message (RFC 9580 §7)."""

    #: The signed text as hashed: dash-unescaped, trailing whitespace
    #: removed from each line, lines joined with CRLF, no final line end.
    signed_text: bytes
    #: The binary signature packets.
    signatures: bytes
    hash_headers: tuple[str, ...]


def parse_cleartext(data: bytes) -> Cleartext:
    start = data.find(b"-----BEGIN PGP SIGNED MESSAGE-----")
    if start < 0:
        raise InputError("not a cleartext-signed message")
    lines = data[start:].replace(b"\r\n", b"\n").split(b"\n")
    i = 1
    hashes: list[str] = []
    while i < len(lines) and lines[i].strip():
        key, _, value = lines[i].partition(b":")
        if key.strip() != b"Hash":
            raise InputError("unexpected header in cleartext-signed message")
        hashes.extend(v.strip().decode("ascii", "replace") for v in value.split(b","))
        i += 1
    i += 1  # the empty line
    text: list[bytes] = []
    while i < len(lines) and lines[i].rstrip() != b"-----BEGIN PGP SIGNATURE-----":
        line = lines[i]
        if line.startswith(b"- "):
            line = line[2:]
        elif line.startswith(b"-"):
            raise InputError("improperly dash-escaped line in cleartext-signed message")
        text.append(line.rstrip(b" \t\r"))
        i += 1
    if i >= len(lines):
        raise InputError("cleartext-signed message without signature")
    sig_part = b"\n".join(lines[i:])
    blocks = dearmor_all(sig_part)
    if not blocks or blocks[0][0] != "SIGNATURE":
        raise InputError("cleartext-signed message without signature block")
    return Cleartext(b"\r\n".join(text), blocks[0][1], tuple(hashes))


# --------------------------------------------------------------------------
# Packet framing (RFC 9580 §4.2)


@dataclass(frozen=True, slots=True)
class Packet:
    tag: int
    body: bytes
    #: The packet as found, header included (re-serialised for partial
    #: lengths so that it can be fed to another parser as one packet).
    raw: bytes


def encode_length(n: int) -> bytes:
    """A new-format length (RFC 9580 §4.2.1)."""
    if n < 192:
        return bytes([n])
    if n < 8384:
        n -= 192
        return bytes([(n >> 8) + 192, n & 0xFF])
    return b"\xff" + struct.pack(">I", n)


def encode_packet(tag: int, body: bytes) -> bytes:
    return bytes([0xC0 | tag]) + encode_length(len(body)) + body


def iter_packets(data: bytes) -> Iterator[Packet]:
    pos = 0
    n = len(data)
    while pos < n:
        ctb = data[pos]
        if not ctb & 0x80:
            raise InputError("invalid OpenPGP packet header")
        start = pos
        pos += 1
        if ctb & 0x40:
            tag = ctb & 0x3F
            chunks: list[bytes] = []
            while True:
                if pos >= n:
                    raise InputError("truncated OpenPGP packet")
                o1 = data[pos]
                if o1 < 192:
                    length, pos = o1, pos + 1
                elif o1 < 224:
                    if pos + 1 >= n:
                        raise InputError("truncated OpenPGP packet")
                    length = ((o1 - 192) << 8) + data[pos + 1] + 192
                    pos += 2
                elif o1 == 255:
                    if pos + 5 > n:
                        raise InputError("truncated OpenPGP packet")
                    length = struct.unpack(">I", data[pos + 1 : pos + 5])[0]
                    pos += 5
                else:
                    if tag not in _PARTIAL_OK:
                        raise InputError("partial length on a packet that forbids it")
                    length = 1 << (o1 & 0x1F)
                    pos += 1
                    if pos + length > n:
                        raise InputError("truncated OpenPGP packet")
                    chunks.append(data[pos : pos + length])
                    pos += length
                    continue
                if pos + length > n:
                    raise InputError("truncated OpenPGP packet")
                chunks.append(data[pos : pos + length])
                pos += length
                break
            body = b"".join(chunks)
            raw = data[start:pos] if len(chunks) == 1 else encode_packet(tag, body)
        else:
            tag = (ctb >> 2) & 0x0F
            ltype = ctb & 0x03
            if ltype == 3:
                # Indeterminate length: to the end of the data.
                body = data[pos:]
                pos = n
                raw = encode_packet(tag, body)
            else:
                size = (1, 2, 4)[ltype]
                if pos + size > n:
                    raise InputError("truncated OpenPGP packet")
                length = int.from_bytes(data[pos : pos + size], "big")
                pos += size
                if pos + length > n:
                    raise InputError("truncated OpenPGP packet")
                body = data[pos : pos + length]
                pos += length
                raw = data[start:pos]
        if tag == 0:
            raise InputError("reserved OpenPGP packet type 0")
        yield Packet(tag, body, raw)


def read_packets(data: bytes) -> list[Packet]:
    return list(iter_packets(data))


# --------------------------------------------------------------------------
# Small readers


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InputError("truncated OpenPGP structure")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def mpi(self) -> bytes:
        """An MPI's value octets (RFC 9580 §3.2), leading zeros stripped."""
        bits = self.u16()
        value = self.take((bits + 7) // 8)
        return value.lstrip(b"\0")

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


def mpi_encode(value: bytes) -> bytes:
    value = value.lstrip(b"\0")
    bits = (len(value) - 1) * 8 + value[0].bit_length() if value else 0
    return struct.pack(">H", bits) + value


def _time(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# --------------------------------------------------------------------------
# Keys (RFC 9580 §5.5)


@dataclass(frozen=True, slots=True)
class KeyPacket:
    tag: int
    version: int
    created: datetime
    algorithm: int
    #: The public part of the body (version .. public key material), which
    #: is what fingerprints and self-signatures hash.
    public_body: bytes
    #: Algorithm-specific public parameters: RSA (n, e); DSA (p, q, g, y);
    #: ElGamal (p, g, y); EC (oid, point[, kdf]); native (key,).
    params: tuple[bytes, ...]
    #: Everything after the public part (secret keys only), or None.
    secret_area: bytes | None
    fingerprint: str
    key_id: str

    @property
    def is_secret(self) -> bool:
        return self.secret_area is not None

    @property
    def is_primary(self) -> bool:
        return self.tag in (TAG_PUBLIC_KEY, TAG_SECRET_KEY)

    @property
    def curve(self) -> str | None:
        if self.algorithm in (PK_ECDH, PK_ECDSA, PK_EDDSA_LEGACY):
            return OID_NAMES.get(self.params[0], "unknown")
        return None

    @property
    def bits(self) -> int:
        if self.algorithm in RSA_ALGOS or self.algorithm in (PK_DSA, PK_ELGAMAL):
            p = self.params[0]
            return (len(p) - 1) * 8 + p[0].bit_length() if p else 0
        return {
            "p256": 256,
            "p384": 384,
            "p521": 521,
            "brainpoolp256r1": 256,
            "brainpoolp384r1": 384,
            "brainpoolp512r1": 512,
            "ed25519": 255,
            "cv25519": 255,
        }.get(self.curve or "", {25: 255, 26: 448, 27: 255, 28: 448}.get(self.algorithm, 0))

    @property
    def algorithm_name(self) -> str:
        a = self.algorithm
        if a in RSA_ALGOS:
            return f"rsa-{self.bits}"
        if a == PK_DSA:
            return f"dsa-{self.bits}"
        if a == PK_ELGAMAL:
            return f"elgamal-{self.bits}"
        if a == PK_ECDSA:
            return f"ecdsa-{self.curve}"
        if a == PK_ECDH:
            return "cv25519" if self.curve == "cv25519" else f"ecdh-{self.curve}"
        if a == PK_EDDSA_LEGACY:
            return "ed25519" if self.curve == "ed25519" else f"eddsa-{self.curve}"
        return {25: "x25519", 26: "x448", 27: "ed25519", 28: "ed448"}.get(a, f"algo-{a}")

    def hash_material(self) -> bytes:
        """The key as hashed in signatures (RFC 9580 §5.2.4)."""
        if self.version == 6:
            return b"\x9b" + struct.pack(">I", len(self.public_body)) + self.public_body
        return b"\x99" + struct.pack(">H", len(self.public_body)) + self.public_body

    def public_packet(self) -> bytes:
        tag = TAG_PUBLIC_KEY if self.is_primary else TAG_PUBLIC_SUBKEY
        return encode_packet(tag, self.public_body)


_NATIVE_SIZES = {PK_X25519: 32, PK_X448: 56, PK_ED25519: 32, PK_ED448: 57}


def _read_public_params(r: _Reader, algo: int) -> tuple[bytes, ...]:
    if algo in RSA_ALGOS:
        return (r.mpi(), r.mpi())
    if algo == PK_DSA:
        return (r.mpi(), r.mpi(), r.mpi(), r.mpi())
    if algo == PK_ELGAMAL:
        return (r.mpi(), r.mpi(), r.mpi())
    if algo in (PK_ECDSA, PK_EDDSA_LEGACY, PK_ECDH):
        oid_len = r.u8()
        if oid_len in (0, 0xFF):
            raise InputError("reserved curve OID length")
        oid = r.take(oid_len)
        bits = r.u16()
        point = r.take((bits + 7) // 8)
        if algo == PK_ECDH:
            kdf_len = r.u8()
            kdf = r.take(kdf_len)
            return (oid, point, kdf)
        return (oid, point)
    if algo in _NATIVE_SIZES:
        return (r.take(_NATIVE_SIZES[algo]),)
    raise _UnknownAlgorithmError(algo)


class _UnknownAlgorithmError(InputError):
    def __init__(self, algo: int) -> None:
        super().__init__(f"unsupported public-key algorithm {algo}")
        self.algo = algo


def parse_key(packet: Packet) -> KeyPacket:
    r = _Reader(packet.body)
    version = r.u8()
    if version not in (4, 6):
        raise InputError(f"unsupported key packet version {version}")
    created = r.u32()
    algo = r.u8()
    params: tuple[bytes, ...]
    if version == 6:
        mlen = r.u32()
        material = r.take(mlen)
        sub = _Reader(material)
        try:
            params = _read_public_params(sub, algo)
        except _UnknownAlgorithmError:
            params = (material,)
        if sub.remaining:
            raise InputError("trailing data in v6 key material")
    else:
        try:
            params = _read_public_params(r, algo)
        except _UnknownAlgorithmError:
            # Unknown algorithm in a v4 key: the public part cannot be
            # delimited for secret keys, but a public key is the whole body.
            if packet.tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY):
                raise
            params = (r.rest(),)
    public_body = packet.body[: r.pos]
    secret = packet.body[r.pos :] if packet.tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY) else None
    if secret is None and r.remaining:
        raise InputError("trailing data in public key packet")
    if version == 6:
        fpr = hashlib.sha256(b"\x9b" + struct.pack(">I", len(public_body)) + public_body).hexdigest()
        key_id = fpr[:16]
    else:
        fpr = hashlib.sha1(b"\x99" + struct.pack(">H", len(public_body)) + public_body).hexdigest()
        key_id = fpr[-16:]
    return KeyPacket(
        tag=packet.tag,
        version=version,
        created=_time(created),
        algorithm=algo,
        public_body=public_body,
        params=params,
        secret_area=secret,
        fingerprint=fpr,
        key_id=key_id,
    )


# --------------------------------------------------------------------------
# Signatures (RFC 9580 §5.2)


@dataclass(frozen=True, slots=True)
class Subpacket:
    type: int
    critical: bool
    data: bytes
    hashed: bool


def _parse_subpackets(area: bytes, hashed: bool) -> list[Subpacket]:
    # Indexes the area directly rather than through _Reader: certificates
    # carry dozens of subpackets, and this loop was the hottest of the
    # OpenPGP path. Same grammar and same errors (RFC 9580 §5.2.3.7).
    out: list[Subpacket] = []
    pos = 0
    n = len(area)
    while pos < n:
        o1 = area[pos]
        if o1 < 192:
            length = o1
            pos += 1
        elif o1 < 255:
            if pos + 2 > n:
                raise InputError("truncated OpenPGP structure")
            length = ((o1 - 192) << 8) + area[pos + 1] + 192
            pos += 2
        else:
            if pos + 5 > n:
                raise InputError("truncated OpenPGP structure")
            length = int.from_bytes(area[pos + 1 : pos + 5], "big")
            pos += 5
        if length == 0:
            raise InputError("empty signature subpacket")
        end = pos + length
        if end > n:
            raise InputError("truncated OpenPGP structure")
        first = area[pos]
        out.append(Subpacket(first & 0x7F, bool(first & 0x80), area[pos + 1 : end], hashed))
        pos = end
    return out


@dataclass(frozen=True, slots=True)
class SignaturePacket:
    version: int
    sig_type: int
    pk_algorithm: int
    hash_algorithm: int
    #: The hashed subpacket area, raw (without its length prefix).
    hashed_area: bytes
    subpackets: tuple[Subpacket, ...]
    left16: bytes
    salt: bytes
    #: Algorithm-specific signature values: RSA (m,), DSA/ECDSA/EdDSALegacy
    #: (r, s), native (sig,).
    values: tuple[bytes, ...]
    raw: bytes = field(repr=False)

    def _hashed(self, t: int) -> Subpacket | None:
        for sp in self.subpackets:
            if sp.hashed and sp.type == t:
                return sp
        return None

    def _any(self, t: int) -> Subpacket | None:
        return self._hashed(t) or next((s for s in self.subpackets if s.type == t), None)

    @property
    def created(self) -> datetime | None:
        sp = self._hashed(SP_CREATION_TIME)
        if sp is None or len(sp.data) != 4:
            return None
        return _time(int.from_bytes(sp.data, "big"))

    @property
    def expiration_seconds(self) -> int | None:
        sp = self._hashed(SP_SIG_EXPIRATION)
        if sp is None or len(sp.data) != 4:
            return None
        v = int.from_bytes(sp.data, "big")
        return v or None

    @property
    def key_expiration_seconds(self) -> int | None:
        sp = self._hashed(SP_KEY_EXPIRATION)
        if sp is None or len(sp.data) != 4:
            return None
        v = int.from_bytes(sp.data, "big")
        return v or None

    @property
    def key_flags(self) -> int | None:
        sp = self._hashed(SP_KEY_FLAGS)
        if sp is None:
            return None
        return sp.data[0] if sp.data else 0

    @property
    def features(self) -> int:
        sp = self._hashed(SP_FEATURES)
        return sp.data[0] if sp is not None and sp.data else 0

    @property
    def primary_uid(self) -> bool:
        sp = self._hashed(SP_PRIMARY_UID)
        return bool(sp is not None and sp.data and sp.data[0])

    @property
    def revocation_reason(self) -> int | None:
        sp = self._hashed(SP_REVOCATION_REASON)
        return sp.data[0] if sp is not None and sp.data else None

    @property
    def issuer_fingerprint(self) -> str | None:
        """The Issuer Fingerprint subpacket (hashed or not), lowercase hex.

        Unhashed issuer information is only a hint for finding the key;
        verification decides whether the key made the signature.
        """
        sp = self._any(SP_ISSUER_FPR)
        if sp is None or len(sp.data) < 2:
            return None
        return sp.data[1:].hex()

    @property
    def issuer_key_id(self) -> str | None:
        sp = self._any(SP_ISSUER)
        if sp is not None and len(sp.data) == 8:
            return sp.data.hex()
        fpr = self.issuer_fingerprint
        if fpr is not None:
            return fpr[:16] if len(fpr) == 64 else fpr[-16:]
        return None

    @property
    def embedded_signatures(self) -> list[SignaturePacket]:
        out: list[SignaturePacket] = []
        for sp in self.subpackets:
            if sp.type == SP_EMBEDDED_SIG:
                try:
                    out.append(parse_signature_body(sp.data))
                except InputError:
                    continue
        return out

    @property
    def has_unknown_critical(self) -> bool:
        return any(sp.critical and sp.type not in KNOWN_SUBPACKETS for sp in self.subpackets)

    def trailer(self) -> bytes:
        """What is hashed after the signed data (RFC 9580 §5.2.4)."""
        if self.version == 6:
            head = (
                bytes([6, self.sig_type, self.pk_algorithm, self.hash_algorithm])
                + struct.pack(">I", len(self.hashed_area))
                + self.hashed_area
            )
            return head + b"\x06\xff" + struct.pack(">I", len(head))
        head = (
            bytes([4, self.sig_type, self.pk_algorithm, self.hash_algorithm])
            + struct.pack(">H", len(self.hashed_area))
            + self.hashed_area
        )
        return head + b"\x04\xff" + struct.pack(">I", len(head))


def parse_signature_body(body: bytes) -> SignaturePacket:
    return _parse_signature_body(body, None)


def _parse_signature_body(body: bytes, raw: bytes | None) -> SignaturePacket:
    r = _Reader(body)
    version = r.u8()
    if version not in (4, 6):
        raise InputError(f"unsupported signature version {version}")
    sig_type = r.u8()
    pk = r.u8()
    halg = r.u8()
    if version == 6:
        hashed = r.take(r.u32())
        unhashed = r.take(r.u32())
    else:
        hashed = r.take(r.u16())
        unhashed = r.take(r.u16())
    left16 = r.take(2)
    salt = b""
    if version == 6:
        salt = r.take(r.u8())
    values: tuple[bytes, ...]
    if pk in RSA_ALGOS:
        values = (r.mpi(),)
    elif pk in (PK_DSA, PK_ECDSA, PK_EDDSA_LEGACY):
        values = (r.mpi(), r.mpi())
    elif pk == PK_ED25519:
        values = (r.take(64),)
    elif pk == PK_ED448:
        values = (r.take(114),)
    else:
        values = (r.rest(),)
    subs = _parse_subpackets(hashed, True) + _parse_subpackets(unhashed, False)
    return SignaturePacket(
        version=version,
        sig_type=sig_type,
        pk_algorithm=pk,
        hash_algorithm=halg,
        hashed_area=hashed,
        subpackets=tuple(subs),
        left16=left16,
        salt=salt,
        values=values,
        raw=encode_packet(TAG_SIGNATURE, body) if raw is None else raw,
    )


def parse_signature(packet: Packet) -> SignaturePacket:
    return _parse_signature_body(packet.body, packet.raw)


def uid_hash_material(tag: int, body: bytes) -> bytes:
    """A User ID or User Attribute as hashed in certifications."""
    return bytes([0xB4 if tag == TAG_USER_ID else 0xD1]) + struct.pack(">I", len(body)) + body


# --------------------------------------------------------------------------
# Messages


@dataclass(frozen=True, slots=True)
class PKESK:
    version: int
    #: Recipient key ID (v3) or fingerprint (v6), lowercase hex; "" when
    #: anonymous (wildcard).
    recipient: str
    algorithm: int
    material: bytes
    raw: bytes


def parse_pkesk(packet: Packet) -> PKESK:
    r = _Reader(packet.body)
    version = r.u8()
    if version == 3:
        kid = r.take(8)
        recipient = "" if kid == b"\0" * 8 else kid.hex()
    elif version == 6:
        n = r.u8()
        if n == 0:
            recipient = ""
        else:
            blob = r.take(n)
            recipient = blob[1:].hex()
    else:
        raise InputError(f"unsupported PKESK version {version}")
    algo = r.u8()
    return PKESK(version, recipient, algo, r.rest(), packet.raw)


@dataclass(frozen=True, slots=True)
class Literal:
    format: str
    filename: bytes
    date: datetime
    content: bytes


def parse_literal(packet: Packet) -> Literal:
    r = _Reader(packet.body)
    fmt = chr(r.u8())
    name = r.take(r.u8())
    date = _time(r.u32())
    return Literal(fmt, name, date, r.rest())
