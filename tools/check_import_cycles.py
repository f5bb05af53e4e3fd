"""Fail if any two modules of a package import each other, directly or through others, or if a
layer of vae_zoo imports a layer above it.

    python tools/check_import_cycles.py [package ...]
    (default: vae_zoo and hydra_plugins.vae_zoo_optuna_sweeper; not all of the hydra_plugins
    namespace, which holds the installed third-party launchers too)

The import graph is grimp's (the library behind import-linter): every ``import`` statement in a
module counts, at module level, inside functions and under ``if TYPE_CHECKING:``, since each of
them is a dependency a reader has to follow. Cycles are the graph's strongly connected components
of more than one module (Tarjan's algorithm, written here because grimp reports chains between two
given modules, not the components of the whole graph). The layers are :data:`LAYERS`, checked
with grimp's own layer contract. Run by ``.ci/run``.
"""

from __future__ import annotations

import sys

import grimp


def import_cycles(package: str) -> list[list[str]]:
    """The sets of modules of ``package`` that import each other (each sorted), largest first."""
    graph = grimp.build_graph(package)
    imports = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(root: str) -> None:  # iterative Tarjan: no recursion limit on deep graphs
        work = [(root, iter(imports[root]))]
        index[root] = lowest[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = lowest[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(imports.get(child, ()))))
                elif child in on_stack:
                    lowest[module] = min(lowest[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowest[parent] = min(lowest[parent], lowest[module])
            if lowest[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return sorted(cycles, key=len, reverse=True)


#: vae_zoo's layers, top first (docs/architecture.md): a module imports only its own layer's
#: modules and those of the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("train", "evaluate", "sample", "compare", "dashboard", "fid_classifier"),  # entry points
    ("run", "evaluation"),  # composing and running an experiment; evaluating and comparing runs
    ("metrics", "callbacks"),  # what is measured of a model, during and after training
    ("models", "data"),
    ("nets",),
    ("blocks",),  # likelihoods, schedules, quantizers, stats
    ("support",),  # instantiation, checkpoint reading, extras, Lightning internals
    ("errors",),
)


def layer_violations(package: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """``importer -> imported (via a, b)`` for every import of a higher layer by a lower one."""
    graph = grimp.build_graph(package)
    present = [tuple(name for name in layer if f"{package}.{name}" in graph.modules) for layer in layers]
    contract = [grimp.Layer(*layer, independent=False) for layer in present if layer]
    found = []
    for dependency in graph.find_illegal_dependencies_for_layers(layers=contract, containers={package}):
        for route in dependency.routes:
            via = sorted(route.heads) + list(route.middle) + sorted(route.tails)
            found.append(f"{dependency.importer} -> {dependency.imported} (via {', '.join(via)})")
    return sorted(found)


def main(packages: list[str]) -> int:
    found = False
    for package in packages:
        for cycle in import_cycles(package):
            found = True
            print(f"import cycle in {package}: {' <-> '.join(cycle)}")
    if not found:
        print(f"no import cycles in {', '.join(packages)}")
    if "vae_zoo" in packages:
        violations = layer_violations("vae_zoo")
        for violation in violations:
            print(f"a lower layer imports a higher one: {violation}")
        found = found or bool(violations)
        if not violations:
            print("every import in vae_zoo goes down the layers: " + " > ".join("/".join(layer) for layer in LAYERS))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["vae_zoo", "hydra_plugins.vae_zoo_optuna_sweeper"]))
