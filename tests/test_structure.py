"""The layout's one rule: a script (a file with a `__main__` block) imports modules, never another script."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = (ROOT, ROOT / "bench")  # bench/ scripts put both folders on sys.path


def is_script(path: Path) -> bool:
    """A file with an `if __name__ == "__main__":` block at its top level."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
                isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__":
            return True
    return False


SCRIPTS = sorted(p for folder in FOLDERS for p in folder.glob("*.py") if is_script(p))
SCRIPT_NAMES = {p.stem: p for p in SCRIPTS}


def imported_names(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_scripts_are_found():
    assert {"train_rl", "test", "validate", "verify_pipeline", "train_sft", "sweep", "loss_surface",
            "download_code_contests", "download_deepcoder", "run"} <= set(SCRIPT_NAMES)
    assert not is_script(ROOT / "training.py") and not is_script(ROOT / "evaluation.py")


@pytest.mark.parametrize("script", [
    pytest.param(p, id=str(p.relative_to(ROOT))) for p in SCRIPTS
])
def test_no_script_imports_a_script(script: Path):
    others = sorted(name for name in imported_names(script) & set(SCRIPT_NAMES) if SCRIPT_NAMES[name] != script)
    assert not others, f"{script.relative_to(ROOT)} imports the script(s) {', '.join(others)}: move what it needs into a module"


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    """The rule's own check: a lazy import of a script is found like a top-level one."""
    bad = tmp_path / "bad.py"
    bad.write_text("def main():\n    import train_rl\n    from validate import main as v\n")
    assert {"train_rl", "validate"} <= imported_names(bad)
