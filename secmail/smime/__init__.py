"""S/MIME: the CMS engine (RFC 5652, RFC 8551) and its MIME framing.

- ``sign``: SignedData production (``sign_content``, ``micalg_for``).
- ``verify``: SignedData verification into per-signer facts
  (``verify_signed_data`` -> ``SignedDataResult``).
- ``envelope``: EnvelopedData / AuthEnvelopedData (``encrypt_content``,
  ``decrypt_content`` -> ``DecryptedContent``).
- ``algorithms``: OIDs, names, weak-algorithm judgement, DER helpers.
- ``mime``: multipart/signed and application/pkcs7-mime framing as bytes.
"""
