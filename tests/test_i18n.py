from __future__ import annotations

from pathlib import Path

import pytest

from secmail import i18n
from secmail.verdict import Reason

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_reason_has_two_sentences() -> None:
    assert set(i18n.SENTENCES) == set(Reason)
    for en, fr in i18n.SENTENCES.values():
        assert en and fr and en != fr


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", "en"),
        ("fr", "fr"),
        ("fr-FR", "fr"),
        ("de, fr;q=0.5, en;q=0.9", "en"),
        ("de", "en"),
        ("FR-ca", "fr"),
    ],
)
def test_pick_language(header: str, expected: str) -> None:
    assert i18n.pick_language(header) == expected


def test_readme_render_contract_lists_every_sentence() -> None:
    text = README.read_text(encoding="utf-8")
    for reason, (en, fr) in i18n.SENTENCES.items():
        assert f"REASON_{reason.code}" in text, reason
        assert en in text, reason
        assert fr in text, reason
