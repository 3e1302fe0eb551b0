"""Every verdict field is derived in one place.

``secmail.verdict.assemble_verdict`` is the only code that builds a
:class:`~secmail.verdict.Verdict` or calls the banner rules, and the message
pipeline (``secmail.message``) is its only caller, for both schemes. A
second place deriving a banner would be a second set of rules to keep in
step: this test fails as soon as one appears.
"""

from __future__ import annotations

import ast
from pathlib import Path

from adv_support import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "secmail"


def _calls(path: Path) -> list[tuple[str, str, int]]:
    """(callee, first argument's source, line) of every call in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, str, int]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            name = func.id
        elif isinstance(func, ast.Attribute):
            name = f"{ast.unparse(func.value)}.{func.attr}"
        else:
            continue
        first = ast.unparse(node.args[0]) if node.args else ""
        found.append((name, first, node.lineno))
    return found


def _modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "v1" not in p.relative_to(PACKAGE).parts]


def test_only_the_assembler_builds_verdicts_and_banners() -> None:
    offenders: list[str] = []
    for path in _modules():
        rel = path.relative_to(PROJECT_ROOT).as_posix()
        for name, first, line in _calls(path):
            builds = name in ("Verdict", "verdict.Verdict", "decide_banner", "verdict.decide_banner")
            # dataclasses.replace(<a verdict>, banner=...) would re-derive a field elsewhere.
            patches = name.endswith("replace") and "verdict" in first.lower()
            if (builds and rel != "secmail/verdict.py") or patches:
                offenders.append(f"{rel}:{line}: {name}({first})")
    assert offenders == []


def test_the_message_pipeline_is_the_only_caller_of_the_assembler() -> None:
    callers = {
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in _modules()
        for name, _, _ in _calls(path)
        if name.endswith("assemble_verdict")
    }
    assert callers == {"secmail/message.py"}


def test_verify_and_decrypt_share_one_pipeline() -> None:
    tree = ast.parse((PACKAGE / "message.py").read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for public in ("verify_message", "decrypt_message"):
        called = {ast.unparse(c.func) for c in ast.walk(functions[public]) if isinstance(c, ast.Call)}
        assert "_process" in called, public
    assembling = [
        name
        for name, fn in functions.items()
        if any(isinstance(c, ast.Call) and ast.unparse(c.func) == "assemble_verdict" for c in ast.walk(fn))
    ]
    assert assembling == ["_process"]
