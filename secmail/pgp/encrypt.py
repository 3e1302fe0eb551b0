"""OpenPGP encryption (and optional signing) with Sequoia.

pysequoia will encrypt to a revoked certificate and falls back to expired
keys, so secmail validates every recipient itself at ``at`` and hands
Sequoia *minimised* certificates holding only the encryption subkeys that
passed; the result is checked to address exactly those keys.

Packet format (Sequoia's choice, checked by the tests): SEIPDv2 (AEAD,
OCB, AES-256) with v6 PKESKs when every recipient's certificate advertises
the SEIPDv2 feature (all RFC 9580 keys, and v4 keys made by recent
Sequoia); otherwise SEIPDv1 with MDC and v3 PKESKs. Sequoia never
compresses and never emits SED packets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from secmail.errors import InputError, RecipientKeyMissingError, SecmailError
from secmail.pgp import _backend, keys, sign
from secmail.pgp import packets as pk


def encrypt(
    data: bytes,
    recipients: Sequence[bytes],
    *,
    signer_tsk: bytes | None = None,
    at: datetime | None = None,
) -> bytes:
    """ASCII-armored OpenPGP message for ``recipients`` (certificates).

    Raises RecipientKeyMissingError naming every certificate (primary
    fingerprint) that is unreadable, revoked, expired or without a usable
    encryption key at ``at``; nothing is encrypted then.

    A signing key, if given, signs inside the encryption. Even an RSA
    signing key signs in Sequoia here (pysequoia signs only inside its own
    encryption): the signature is over our own outgoing input, never over
    attacker-chosen data, which is what RUSTSEC-2023-0071 is about.
    Detached RSA signatures are made in OpenSSL (``sign.py``).
    """
    at = at or keys.now()
    if not recipients:
        raise RecipientKeyMissingError(["(no recipient)"])
    minimised: list[bytes] = []
    allowed: set[str] = set()
    missing: list[str] = []
    for cert in recipients:
        try:
            info = keys.load_cert(cert, at)
        except InputError:
            missing.append("(unreadable certificate)")
            continue
        enc = info.encryption_keys()
        if not enc:
            missing.append(info.fingerprint)
            continue
        allowed.update(k.key.key_id for k in enc)
        allowed.update(k.key.fingerprint for k in enc)
        subkeys = [k for k in enc if k is not info.primary]
        minimised.append(info.public_packets(keep_subkeys=subkeys))
    if missing:
        raise RecipientKeyMissingError(missing)

    signer: bytes | _backend.EngineSigner | None = None
    if signer_tsk is not None:
        sinfo, skey = sign.select_signing_key(signer_tsk, at)
        signer = sign.engine_signer(signer_tsk, sinfo.secret_packets(skey))

    binary = _backend.encrypt(data, minimised, signer)
    _check_output(binary, allowed, len(minimised))
    # Armored after the check, so that what was checked is exactly what is
    # sent (and the check needs no dearmoring).
    return _backend.armor(binary, "message")


def _check_output(binary: bytes, allowed: set[str], n_recipients: int) -> None:
    seen: list[str] = []
    container = None
    for p in pk.iter_packets(binary):
        if p.tag == pk.TAG_PKESK:
            seen.append(pk.parse_pkesk(p).recipient)
        elif p.tag == pk.TAG_SEIPD:
            container = p
        elif p.tag not in (pk.TAG_MARKER, pk.TAG_PADDING):
            raise SecmailError("the OpenPGP engine produced an unexpected packet")
    if container is None or container.body[:1] not in (b"\x01", b"\x02"):
        raise SecmailError("the OpenPGP engine produced no integrity-protected packet")
    if len(seen) < n_recipients or any(r not in allowed for r in seen):
        raise SecmailError("the OpenPGP engine encrypted to an unexpected key")
