"""The import layering of docs/architecture.md, read from the source (every import, also inside functions).

codec (audio <-> tokens) <- lm (the model over tokens) <- semanticodec_lm (CLI), benchmarks, demos
<- recipes. A lower layer never imports a higher one, only recipes (and tests) import recipes, and a
recipe (``recipes/<name>/``) imports no other recipe: what recipes share lives in the library.
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


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every module ``path`` imports (absolute imports, at any depth of the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "recipes":  # ``from recipes import continuation`` names a recipe
                names.update(f"recipes.{alias.name}" for alias in node.names)
    return names


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports."""
    return {name.split(".")[0] for name in imported_modules(path)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    violations = [f"{path.relative_to(ROOT)} imports {name}"
                  for path in files for name in sorted(imported_packages(path) & set(FORBIDDEN[package]))]
    assert not violations, "\n".join(violations)


def test_no_recipe_imports_another():
    recipes = sorted(path for path in (ROOT / "recipes").iterdir() if (path / "__init__.py").is_file())
    assert len(recipes) > 3, "recipes/ has no recipe packages"
    violations = []
    for recipe in recipes:
        for path in sorted(recipe.rglob("*.py")):
            others = {name.split(".")[1] for name in imported_modules(path)
                      if name.startswith("recipes.") and name.split(".")[1] != recipe.name}
            violations += [f"{path.relative_to(ROOT)} imports recipes.{other}" for other in sorted(others)]
    assert not violations, "\n".join(violations)


def test_the_reader_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from recipes.data import build\n    import lm.api\n")
    assert imported_packages(module) == {"os", "recipes", "lm"}
    module.write_text("from recipes import probe\n")
    assert imported_modules(module) == {"recipes", "recipes.probe"}
