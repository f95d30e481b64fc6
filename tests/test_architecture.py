"""Imports follow the architecture: the model families are peers behind one seam.

``asr.gmm`` and ``asr.nnet`` never import each other; ``asr.models`` (the seam) and the
decoder import neither, and the models reach the registry through entry points.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "asr"


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" \
        else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def offending_imports(sources: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / sources).rglob("*.py")) if (ROOT / sources).is_dir() \
            else [ROOT / sources]:
        for name in sorted(imported_modules(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)}: imports {name}")
    return found


@pytest.mark.parametrize("sources, forbidden", [
    ("asr/nnet", ("asr.gmm",)),
    ("asr/gmm", ("asr.nnet",)),
    ("asr/models.py", ("asr.gmm", "asr.nnet")),
    ("asr/training.py", ("asr.gmm", "asr.nnet")),
    ("asr/decoder", ("asr.gmm", "asr.nnet")),
    ("asr/hmm", ("asr.gmm", "asr.nnet")),
])
def test_no_forbidden_imports(sources, forbidden):
    assert offending_imports(sources, forbidden) == []


def test_the_scan_sees_relative_and_nested_imports(tmp_path):
    pkg = tmp_path / "asr" / "nnet"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from ..gmm import train\n"
                              "from . import model\nimport asr.gmm.stats as s\n")
    (pkg / "__init__.py").write_text("from .x import f\nfrom .. import gmm\n")
    assert {"asr.gmm", "asr.gmm.train", "asr.nnet", "asr.nnet.model",
            "asr.gmm.stats"} <= imported_modules(pkg / "x.py", tmp_path)
    assert {"asr.nnet.x", "asr.nnet.x.f", "asr.gmm"} <= imported_modules(pkg / "__init__.py",
                                                                          tmp_path)


def test_the_seam_names_no_model():
    text = (PACKAGE / "models.py").read_text(encoding="utf-8")
    assert "asr.gmm" not in text and "asr.nnet" not in text


def test_importing_the_seam_imports_no_model():
    code = ("import sys, asr.models, asr.system, asr.decoder\n"
            "print(sorted(m for m in sys.modules if m.startswith(('asr.gmm', 'asr.nnet'))"
            " or m == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
