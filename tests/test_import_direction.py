"""Imports run one way: from the outer layers of the project to the inner ones, never back.

* ``protonet`` (the core) imports neither ``service`` nor ``training``; ``service`` never
  imports ``training``.
* Inside ``service``, every module belongs to a layer (``LAYERS``, innermost first) and
  imports only modules of its own layer or of inner ones: the HTTP side (``edge``, ``api``)
  builds on the running service's state (``state``: settings wired into storage and the
  domain), which builds on the domain (``collections``), which builds on ``storage``; nothing
  inner knows the app that wires them together.
* The domain never reads the settings: ``service.state`` hands it plain values.
* ``service.client`` stands alone: the standard library, httpx and numpy, nothing else, so
  client users install neither torch nor the server's dependencies.
* ``service/__init__.py`` imports nothing, and no service modules import each other in a
  circle.

Imports are read from the source (every ``import`` statement, also those inside functions),
so a lazy import cannot get around the rule.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Innermost first. A module may import modules of its own layer and of the layers before it.
# A prefix names a package and everything in it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "shared (import no other part of the service)",
        ("service.errors", "service.settings", "service.threads", "service.client"),
    ),
    ("storage", ("service.storage",)),
    ("collections (the domain)", ("service.collections",)),
    (
        "state (the composition root: settings wired into storage and the domain)",
        ("service.state",),
    ),
    ("edge", ("service.edge",)),
    ("api", ("service.api",)),
    ("app", ("service.app", "service.__main__", "service.launcher", "service.snapshot_command")),
]
CLIENT_MAY_IMPORT = {"httpx", "numpy"}
# The core's third-party imports (import names; Pillow is PIL): anything else it needs is a
# decision to make here, not an accident.
CORE_MAY_IMPORT = {"torch", "numpy", "PIL", "tokenizers", "safetensors"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(package: str) -> dict[str, Path]:
    return {module_name(path): path for path in sorted((REPO / package).rglob("*.py"))}


SERVICE = modules_of("service")


def imported(name: str, path: Path) -> Iterator[str]:
    """Every module ``name`` imports (relative imports resolved; ``from package import
    module`` counts as importing the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in SERVICE else base


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def service_imports(name: str) -> set[str]:
    found = set()
    for target in imported(name, SERVICE[name]):
        if target == "service" or target.startswith("service."):
            found.add(target)
    return found


def test_every_service_module_is_in_a_layer():
    for name in SERVICE:
        if name != "service":
            layer_of(name)


def test_service_modules_import_only_their_own_layer_or_inner_ones():
    wrong = []
    for name in SERVICE:
        if name == "service":
            continue
        rank = layer_of(name)
        for target in sorted(service_imports(name)):
            if target == "service" or layer_of(target) > rank:
                wrong.append(
                    f"{name} ({LAYERS[rank][0]}) imports {target} "
                    f"({'the package' if target == 'service' else LAYERS[layer_of(target)][0]})"
                )
    assert not wrong, "imports against the direction of the layers:\n" + "\n".join(wrong)


def test_shared_modules_import_no_other_part_of_the_service():
    for name in LAYERS[0][1]:
        assert service_imports(name) == set(), name


def test_the_client_needs_only_the_standard_library_httpx_and_numpy():
    roots = {
        target.split(".")[0] for target in imported("service.client", SERVICE["service.client"])
    }
    assert roots - set(sys.stdlib_module_names) <= CLIENT_MAY_IMPORT, roots


def test_the_service_package_imports_nothing():
    assert list(imported("service", SERVICE["service"])) == []


def test_service_modules_import_each_other_in_no_circle():
    graph = {name: service_imports(name) & SERVICE.keys() for name in SERVICE}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_the_core_imports_neither_the_service_nor_the_trainer():
    for name, path in modules_of("protonet").items():
        for target in imported(name, path):
            assert target.split(".")[0] not in ("service", "training"), f"{name} imports {target}"


def test_the_core_imports_only_the_standard_library_and_its_allowed_packages():
    for name, path in modules_of("protonet").items():
        for target in imported(name, path):
            root = target.split(".")[0]
            allowed = root == "protonet" or root in sys.stdlib_module_names
            assert allowed or root in CORE_MAY_IMPORT, f"{name} imports {target}"


def test_the_domain_never_reads_the_settings():
    for name in SERVICE:
        if name.startswith("service.collections"):
            assert "service.settings" not in service_imports(name), name


def test_the_trainer_never_imports_the_service():
    for name, path in modules_of("training").items():
        for target in imported(name, path):
            assert target.split(".")[0] != "service", f"{name} imports {target}"


def test_the_service_never_imports_the_trainer():
    for name, path in SERVICE.items():
        for target in imported(name, path):
            assert target.split(".")[0] != "training", f"{name} imports {target}"
