"""The committed generated code matches proto/ (regenerate with scripts/gen-proto)."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    out.mkdir()
    env_path = Path(sys.executable).parent
    subprocess.run(
        ["bash", str(ROOT / "scripts/gen-proto"), str(out)],
        check=True,
        env={"PATH": f"{env_path}:/usr/bin:/bin"},
        capture_output=True,
    )
    generated = sorted(p.relative_to(out) for p in (out / "secmail/v1").iterdir())
    committed = sorted(
        p.relative_to(ROOT) for p in (ROOT / "secmail/v1").iterdir() if p.name != "__pycache__"
    )
    assert generated == committed
    for rel in generated:
        assert filecmp.cmp(out / rel, ROOT / rel, shallow=False), f"{rel} is stale: run scripts/gen-proto"
    shutil.rmtree(out)


def test_enums_follow_buf_style() -> None:
    from secmail.v1 import verdict_pb2

    for enum_name, enum in verdict_pb2.DESCRIPTOR.enum_types_by_name.items():
        prefix = "".join("_" + c if c.isupper() else c for c in enum_name).lstrip("_").upper() + "_"
        assert enum.values_by_number[0].name == prefix + "UNSPECIFIED"
        for value in enum.values:
            assert value.name.startswith(prefix), value.name
