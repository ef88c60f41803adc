"""The border of DESIGN.md: the engine never imports Qt (or the studio); panels never import torch."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_qt_or_the_studio():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imported_modules(p) & {"PySide6", "qasync", "pyqtgraph", "studio"})
        for p in (ROOT / "engine").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_panels_never_import_torch():
    panels = ROOT / "studio" / "panels"
    offenders = (
        {str(p.relative_to(ROOT)): sorted(_imported_modules(p) & {"torch", "engine"}) for p in panels.rglob("*.py")}
        if panels.exists()
        else {}
    )
    assert {k: v for k, v in offenders.items() if v} == {}
