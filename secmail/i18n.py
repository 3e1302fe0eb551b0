"""Human sentences for every reason code, in English and French.

The académies' users read French; webmails may pass "fr" (or an
Accept-Language value) and show these sentences next to the banner. The
README's render contract reproduces this table; a test keeps them equal.
"""

from __future__ import annotations

from secmail.verdict import Reason

SENTENCES: dict[Reason, tuple[str, str]] = {
    Reason.BAD_SIGNATURE: (
        "The signature does not match the message: it was altered after signing, or forged.",
        "La signature ne correspond pas au message : il a été modifié après la signature, ou falsifié.",
    ),
    Reason.CERT_REVOKED: (
        "The signer's certificate has been revoked.",
        "Le certificat du signataire a été révoqué.",
    ),
    Reason.UNTRUSTED_CHAIN: (
        "The signer's certificate or key is not issued or certified by an authority you trust.",
        "Le certificat ou la clé du signataire n'est pas émis ou certifié par une autorité de confiance.",
    ),
    Reason.CERT_EXPIRED: (
        "The signer's certificate or key had expired.",
        "Le certificat ou la clé du signataire avait expiré.",
    ),
    Reason.CERT_NOT_YET_VALID: (
        "The signer's certificate was not yet valid.",
        "Le certificat du signataire n'était pas encore valide.",
    ),
    Reason.SENDER_MISMATCH: (
        "The message was signed by someone other than the sender shown in From.",
        "Le message a été signé par une autre personne que l'expéditeur affiché (From).",
    ),
    Reason.SIGNER_KEY_MISSING: (
        "The signer's certificate or public key is not available, so the signature cannot be checked.",
        "Le certificat ou la clé publique du signataire est indisponible : la signature ne peut pas être vérifiée.",
    ),
    Reason.WEAK_ALGORITHM: (
        "The message uses a cryptographic algorithm that is no longer considered secure.",
        "Le message utilise un algorithme cryptographique qui n'est plus considéré comme sûr.",
    ),
    Reason.REVOCATION_UNKNOWN: (
        "Whether the signer's certificate has been revoked could not be checked.",
        "Impossible de vérifier si le certificat du signataire a été révoqué.",
    ),
    Reason.KEY_USAGE: (
        "The signer's certificate is not allowed to sign e-mail.",
        "Le certificat du signataire n'est pas autorisé à signer des courriels.",
    ),
    Reason.FROM_AMBIGUOUS: (
        "The sender address (From) is missing, multiple or malformed, so it cannot be confirmed.",
        "L'adresse de l'expéditeur (From) est absente, multiple ou mal formée : elle ne peut pas être confirmée.",
    ),
    Reason.UNSUPPORTED_ALGORITHM: (
        "The signature uses an algorithm that cannot be checked.",
        "La signature utilise un algorithme qui ne peut pas être vérifié.",
    ),
    Reason.MALFORMED_SIGNATURE: (
        "The signature is malformed or contains no signer.",
        "La signature est mal formée ou ne contient aucun signataire.",
    ),
    Reason.PROTECTED_HEADER_MISMATCH: (
        "The sender inside the protected part differs from the visible sender.",
        "L'expéditeur indiqué dans la partie protégée diffère de l'expéditeur visible.",
    ),
    Reason.PARTIAL_COVERAGE: (
        "Only part of the message (inline PGP text) is signed; its structure and attachments are not.",
        "Seule une partie du message (texte PGP en ligne) est signée ; sa structure et ses pièces jointes ne le sont pas.",
    ),
    Reason.INTEGRITY_NOT_PROTECTED: (
        "The encrypted content is not protected against modification.",
        "Le contenu chiffré n'est pas protégé contre les modifications.",
    ),
    Reason.ERRANT_CRYPTO_LAYER: (
        "A signed or encrypted part is embedded in the message; it says nothing about the message as a whole.",
        "Une partie signée ou chiffrée est incluse dans le message ; elle ne garantit rien sur le message entier.",
    ),
    Reason.SIGNING_TIME_SUSPICIOUS: (
        "The signing time claimed by the sender is in the future or far from the message date.",
        "L'heure de signature déclarée par l'expéditeur est dans le futur ou éloignée de la date du message.",
    ),
    Reason.CONTENT_NEUTRALISED: (
        "Active and remote content was disabled in this message for your protection.",
        "Le contenu actif et distant de ce message a été désactivé pour votre protection.",
    ),
    Reason.SENDER_HEADER_IGNORED: (
        "The Sender header differs from From; only From is checked against the signature.",
        "L'en-tête Sender diffère de From ; seul From est comparé à la signature.",
    ),
}

SUPPORTED = ("en", "fr")


def pick_language(requested: str | None) -> str:
    """ "fr", "fr-FR", "fr-CA;q=0.9, en" -> "fr"; anything else -> "en"."""
    if not requested:
        return "en"
    best = "en"
    best_q = -1.0
    for item in requested.split(","):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in SUPPORTED and q > best_q:
            best, best_q = primary, q
    return best


def sentence(reason: Reason, language: str) -> str:
    en, fr = SENTENCES[reason]
    return fr if language == "fr" else en
