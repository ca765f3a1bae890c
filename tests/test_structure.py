"""The layout's one rule: a script (a file with a `__main__` block) imports modules, never another script."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = (ROOT, ROOT / "bench")  # bench/ is a package of scripts run as python -m bench.<name>


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


# ------------------------------------------------------------------------------ only scripts end the process
LIBRARIES = sorted(p for p in ROOT.glob("*.py") if not is_script(p))
# errors.py's command-line plumbing, which only scripts call: argparse's error hook and the decorator that turns a
# UsageError into the one `error:` line and exit code 2.
PLUMBING = {("errors.py", "cli_error"), ("errors.py", "ArgumentParser.error"), ("errors.py", "script_main")}


def exits(path: Path) -> list[str]:
    """`function: call` for every sys.exit / exit / quit / cli_error call and `raise SystemExit` in `path`, outside
    PLUMBING (os._exit in a forked child is not counted: it ends the child, never the caller)."""
    found = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{where}.{child.name}" if where else child.name
                if (path.name, inner) not in PLUMBING:
                    visit(child, inner)
                continue
            if isinstance(child, ast.Call):
                name = ast.unparse(child.func)
                if name in ("sys.exit", "exit", "quit", "cli_error", "errors.cli_error"):
                    found.append(f"{where or '<module>'}: {name}()")
            elif isinstance(child, ast.Raise) and child.exc is not None and \
                    ast.unparse(child.exc).split("(")[0] == "SystemExit":
                found.append(f"{where or '<module>'}: raise SystemExit")
            visit(child, where)

    visit(ast.parse(path.read_text()), "")
    return found


def test_the_libraries_are_found():
    names = {p.name for p in LIBRARIES}
    assert {"data.py", "training.py", "evaluation.py", "sft.py", "records.py", "modeling.py"} <= names
    assert "train_rl.py" not in names


@pytest.mark.parametrize("module", [pytest.param(p, id=p.name) for p in LIBRARIES])
def test_no_library_module_ends_the_process(module: Path):
    """Modules raise errors.UsageError; only a script's main (errors.script_main) prints it and exits 2."""
    found = exits(module)
    assert not found, f"{module.name} ends the process in {', '.join(found)}: raise errors.UsageError instead"


def test_the_exit_check_sees_every_spelling(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport data\n\ndef a():\n    sys.exit(2)\n\nclass B:\n    def c(self):\n"
                   "        errors.cli_error('x')\n\ndef d():\n    raise SystemExit(1)\n\ndef cli_error():\n    exit()\n")
    assert exits(bad) == ["a: sys.exit()", "B.c: errors.cli_error()", "d: raise SystemExit", "cli_error: exit()"]


@pytest.mark.parametrize("script", [pytest.param(p, id=p.name) for p in SCRIPTS if p.parent == ROOT])
def test_every_script_main_turns_usage_errors_into_exit_2(script: Path):
    main = next(node for node in ast.parse(script.read_text()).body
                if isinstance(node, ast.FunctionDef) and node.name == "main")
    assert "errors.script_main" in [ast.unparse(d) for d in main.decorator_list], \
        f"{script.name}'s main is not decorated with @errors.script_main: a errors.UsageError would end it in a traceback"
