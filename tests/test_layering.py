"""The import layering of docs/architecture.md, read from the source (every import, also inside functions).

codec (audio <-> tokens) <- lm (the model over tokens) <- semanticodec_lm (CLI), benchmarks, demos
<- recipes. A lower layer never imports a higher one, and only recipes (and tests) import recipes.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each package and what it must not import.
FORBIDDEN = {
    "codec": ("lm", "semanticodec_lm", "recipes", "demos", "benchmarks"),
    "lm": ("semanticodec_lm", "recipes", "demos", "benchmarks"),
    "semanticodec_lm": ("recipes", "demos", "benchmarks"),
    "demos": ("recipes", "benchmarks"),
    "benchmarks": ("recipes", "demos"),
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (absolute imports, at any depth of the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    violations = [f"{path.relative_to(ROOT)} imports {name}"
                  for path in files for name in sorted(imported_packages(path) & set(FORBIDDEN[package]))]
    assert not violations, "\n".join(violations)


def test_the_reader_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from recipes.data import build\n    import lm.api\n")
    assert imported_packages(module) == {"os", "recipes", "lm"}
