"""The package layout: the library imports neither the services nor the demo, and fault injection stays in the demo."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "libs" / "baton"
SERVICES = ROOT / "services"
# The one CLI may start the services and the demo, but only inside its commands, so `import baton.cli` stays light.
CLI = LIBRARY / "cli.py"


def _imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(module imported, line, whether at module level) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from baton_demo import faults` imports baton_demo.faults.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            yield name, node.lineno, id(node) not in in_function


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _offences(files: list[Path], forbidden: tuple[str, ...], *, lazy_ok: frozenset[Path] = frozenset()) -> list[str]:
    found: dict[tuple[Path, int], str] = {}
    for path in files:
        for name, line, top_level in _imports(path):
            if any(_under(name, p) for p in forbidden) and (top_level or path not in lazy_ok):
                where = "at module level" if top_level else "inside a function"
                found.setdefault((path, line), f"{path.relative_to(ROOT)}:{line} imports {name} ({where})")
    return [found[k] for k in sorted(found)]


def test_the_library_imports_neither_the_services_nor_the_demo() -> None:
    offences = _offences(sorted(LIBRARY.rglob("*.py")), ("services", "baton_demo"), lazy_ok=frozenset({CLI}))
    assert not offences, "the library must not depend on these; invert the dependency:\n" + "\n".join(offences)


def test_the_services_do_not_import_the_demo() -> None:
    offences = _offences(sorted(SERVICES.rglob("*.py")), ("baton_demo",))
    assert not offences, "the services must not depend on the demo; take what it adds as a parameter:\n" + "\n".join(
        offences
    )


def test_fault_injection_is_on_no_production_path() -> None:
    files = sorted([*LIBRARY.rglob("*.py"), *SERVICES.rglob("*.py")])
    offences = _offences(files, ("baton_demo.faults",))
    assert not offences, "fault injection belongs to the demo (baton_demo.faults):\n" + "\n".join(offences)


def test_the_layout_check_sees_a_module_level_import_and_forgives_only_the_clis_lazy_ones(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import services.agent\n\ndef f() -> None:\n    from baton_demo import faults\n")
    found = list(_imports(module))
    assert ("services.agent", 1, True) in found and ("baton_demo.faults", 4, False) in found
