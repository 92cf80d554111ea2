"""The serving package must run without TensorFlow: it is not in the image."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import classifier

SERVING_IMPORTS = [
    Path(classifier.__file__).parent / "serving",
    Path(classifier.__file__).parent / "imaging.py",
    Path(classifier.__file__).parent / "model_card.py",
]
FORBIDDEN = ("tensorflow", "keras", "tf_keras")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_serving_sources_import_no_tensorflow() -> None:
    files = [f for p in SERVING_IMPORTS for f in ([p] if p.is_file() else sorted(p.rglob("*.py")))]
    assert len(files) > 5  # the walk found the package
    offenders = {
        f"{f.name}: {name}"
        for f in files
        for name in _imported_modules(f)
        if name.split(".")[0] in FORBIDDEN
    }
    assert not offenders


def test_importing_the_app_loads_no_tensorflow() -> None:
    """Transitively too: a dependency that pulls TensorFlow in would break the slim image."""
    code = (
        "import sys, classifier.serving.app, classifier.serving.__main__\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
