"""Packaging and layering: what each install contains and what each layer may import."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside common/
                continue
            roots.add((node.module or "").split(".")[0])
    return roots


def test_common_is_the_bottom_layer() -> None:
    """common/ imports only the standard library: none of our packages, nothing an extra installs."""
    files = sorted((ROOT / "common").glob("*.py"))
    assert files, "common/ has no modules"
    for path in files:
        foreign = _imported_roots(path) - set(sys.stdlib_module_names) - {"__future__"}
        assert not foreign, f"{path.relative_to(ROOT)} imports {sorted(foreign)}"
