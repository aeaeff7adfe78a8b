"""The package's layout: the serving modules import nothing of the research subpackage, no module imports
another in a cycle, and importing the library does not import torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mri_cascade"
FRONT_ENDS = {"mri_cascade.cli"}  # the command line sits above both layers


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every mri_cascade module this file imports, at module level or inside functions."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("mri_cascade"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mri_cascade"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {target for target in imports_of(path) if target in modules and target != name}
            for name, path in modules.items()}


def test_serving_modules_import_nothing_of_the_research_code():
    offenders = {name: sorted(t for t in targets if t.startswith("mri_cascade.research"))
                 for name, targets in graph().items()
                 if not name.startswith("mri_cascade.research") and name not in FRONT_ENDS}
    assert not {name: targets for name, targets in offenders.items() if targets}


def test_no_import_cycle():
    edges = graph()
    visiting, done = set(), set()

    def visit(name: str, path: list[str]) -> None:
        if name in done:
            return
        assert name not in visiting, f"import cycle: {' -> '.join([*path, name])}"
        visiting.add(name)
        for target in edges.get(name, ()):
            if target != name.rsplit(".", 1)[0]:  # a module may import its own package's __init__
                visit(target, [*path, name])
        visiting.discard(name)
        done.add(name)

    for name in edges:
        visit(name, [])


def test_importing_the_library_does_not_import_torch():
    code = "import sys, mri_cascade; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
