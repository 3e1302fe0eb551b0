"""OpenPGP engine of secmail (PGP/MIME, RFC 3156; OpenPGP, RFC 9580).

Sequoia (pysequoia, only in ``_backend``) signs, encrypts and verifies
message signatures; no RSA secret-key operation runs in Sequoia: OpenSSL
(``cryptography``) makes RSA signatures (``sign``) and unwraps RSA
session keys (``decrypt``);
``packets``/``keys``/``decrypt`` judge certificate structure and decrypt
with integrity checks before any plaintext leaves.

Import the functions from their modules (``secmail.pgp.decrypt.decrypt``,
``secmail.pgp.keys.parse_openpgp_keys``...): the package re-exports
nothing, so module and function names never shadow each other.
"""
