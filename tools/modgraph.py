"""Measure the gateway's module structure: import cycles, module sizes, layering violations.

    python tools/modgraph.py [PACKAGE_DIR] [--json] [--check]     # PACKAGE_DIR defaults to gateway

Every module under PACKAGE_DIR is parsed with `ast`; nothing is imported, so it runs on any
checkout with the standard library alone. An edge A -> B means module A imports module B;
`from pkg.x import y` points at pkg.x.y when y is a submodule, otherwise at pkg.x. An import
inside a function is *lazy*: it runs on first call, not at import time. A lazy import hides a
cycle rather than removing it, so cycles are counted twice: over top-level imports only, and
counting lazy imports. Importing pkg.x.y also runs pkg/__init__ and pkg/x/__init__; those
implied edges are left out, or pkg/__init__ (whose factory imports the blueprints lazily)
would share one cycle with nearly every module. So are a module's imports of its own
packages (console/keys.py taking `bp` from console/__init__): a package is always initialised
before its submodules, so such an import cannot close a circle at import time. Sizes are physical lines, migrations left out
(generated). The layering rules are the house style's (STYLE.md, Layers); see RULES.
`--check` exits 1 on any cycle (counting lazy imports) or any layering violation.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

MAX_LINES = 400
FLASK_REQUEST_STATE = {"request", "g", "session"}
# (rule, modules it applies to, banned import targets); names relative to the package.
# A rule whose banned list is None bans flask's request state instead of modules.
RULES = [
    ("services never touch flask request/g/session", "services", None),
    ("accounting never imports routing", "services.accounting", ["services.routing"]),
    ("providers never import services, console, proxy or mock_upstream", "providers",
     ["services", "console", "proxy", "mock_upstream"]),
    ("services never import console, proxy or cli", "services", ["console", "proxy", "cli"]),
]


def within(module: str, prefix: str) -> bool:
    """True when module is prefix itself or lives under it."""
    return module == prefix or module.startswith(prefix + ".")


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under package_dir."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]):
    """(target module, line, lazy) per import of a package module, and (name, line) per use
    of flask's request, g or session."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges, flask_uses, flask_aliases = [], [], set()

    def known(target: str) -> str | None:
        # the longest prefix that is one of our modules: `import gateway.x.y` -> gateway.x.y
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lazy = True
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "flask":
                    flask_aliases.add(alias.asname or "flask")
                if target := known(alias.name):
                    edges.append((target, node.lineno, lazy))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base in ("flask", "flask.globals"):
                flask_uses.extend((a.name, node.lineno) for a in node.names
                                  if a.name in FLASK_REQUEST_STATE)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if target := full if full in modules else known(base):
                    edges.append((target, node.lineno, lazy))
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in flask_aliases and node.attr in FLASK_REQUEST_STATE):
            flask_uses.append((node.attr, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, lazy)

    visit(tree, False)
    return [e for e in edges if not within(name, e[0])], flask_uses


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, each sorted.

    The graph is small, so each component is found the plain way: the modules that v reaches
    and that reach v back."""
    reach = {}
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            if (v := todo.pop()) not in seen:
                seen.add(v)
                todo.extend(graph.get(v, ()))
        reach[start] = seen
    components = {frozenset({v} | {w for w in reach[v] if v in reach.get(w, ())}) for v in graph}
    return sorted(sorted(c) for c in components if len(c) > 1)


def analyze(package_dir: str | Path) -> dict:
    """The whole measurement as plain data (what --json prints)."""
    package_dir = Path(package_dir).resolve()
    pkg = package_dir.name
    modules = module_names(package_dir)
    edges = defaultdict(set)  # (src, dst) -> {(line, lazy)}; `from m import a, b` is one line
    flask_uses, lines = {}, {}
    for name, path in modules.items():
        found, flask_uses[name] = imports_of(name, path, modules)
        for target, line, lazy in found:
            edges[name, target].add((line, lazy))
        lines[name] = len(path.read_text(encoding="utf-8").splitlines())

    # an edge is lazy when every import behind it is; "lines" are the top-level ones
    edge_list = [{"from": s, "to": d, "lines": sorted(l for l, lazy in occ if not lazy),
                  "lazy_lines": sorted(l for l, lazy in occ if lazy),
                  "lazy": all(lazy for _, lazy in occ)} for (s, d), occ in sorted(edges.items())]
    report = {"package": str(package_dir), "modules": len(modules), "lines": sum(lines.values()),
              "edges": edge_list, "cycles": {}}
    for kind, keep in (("top_level", lambda e: not e["lazy"]), ("with_lazy", lambda e: True)):
        graph = defaultdict(set)
        for e in filter(keep, edge_list):
            graph[e["from"]].add(e["to"])
        report["cycles"][kind] = [
            {"modules": comp, "edges": [e for e in edge_list if keep(e)
                                        and e["from"] in comp and e["to"] in comp]}
            for comp in cycles(graph)]

    sized = {m: n for m, n in lines.items() if not within(m, f"{pkg}.migrations")}
    report["largest"] = [{"module": m, "lines": n}
                         for m, n in sorted(sized.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    report["over_limit"] = sum(n > MAX_LINES for n in sized.values())

    report["violations"] = violations(pkg, modules, edges, flask_uses)
    return report


def violations(pkg: str, modules: dict, edges: dict, flask_uses: dict) -> list[dict]:
    """Every import (lazy ones too) that breaks one of RULES, by rule, module and line."""
    found = []
    for rule, where, banned in RULES:
        where = f"{pkg}.{where}"
        if banned is None:
            hits = [{"module": name, "line": line, "imports": f"flask.{attr}"}
                    for name in modules if within(name, where) for attr, line in flask_uses[name]]
        else:
            hits = [{"module": src, "line": line, "imports": dst, "lazy": lazy}
                    for (src, dst), occ in edges.items() if within(src, where)
                    and any(within(dst, f"{pkg}.{b}") for b in banned) for line, lazy in occ]
        found += [{"rule": rule, **h} for h in sorted(hits, key=lambda h: (h["module"], h["line"]))]
    return found


def print_report(r: dict) -> None:
    """The human-readable form."""
    for kind, title in (("top_level", "top-level imports only"),
                        ("with_lazy", "counting lazy imports")):
        print(f"Import cycles, {title}: {len(r['cycles'][kind])}")
        for comp in r["cycles"][kind]:
            print("  cycle: " + ", ".join(comp["modules"]))
            for e in comp["edges"]:
                at = [str(n) for n in e["lines"]] + [f"{n} lazy" for n in e["lazy_lines"]]
                print(f"    {e['from']} -> {e['to']}  line {', '.join(at)}")
    print(f"\nLargest modules (migrations excluded); {r['over_limit']} over {MAX_LINES} lines:")
    for m in r["largest"]:
        print(f"  {m['lines']:5d}  {m['module']}")
    print(f"\nLayering violations: {len(r['violations'])}")
    for v in r["violations"]:
        tag = " [lazy]" if v.get("lazy") else ""
        print(f"  {v['module']}:{v['line']} imports {v['imports']}{tag}  ({v['rule']})")
    top = r["largest"][0] if r["largest"] else {"module": "-", "lines": 0}
    cyc = r["cycles"]
    print(f"\nSummary: {r['modules']} modules, {r['lines']} lines, {len(cyc['top_level'])} cycles"
          f" top-level / {len(cyc['with_lazy'])} counting lazy, largest {top['module']}"
          f" ({top['lines']}), {r['over_limit']} over {MAX_LINES},"
          f" {len(r['violations'])} violations")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package_dir", nargs="?", default="gateway")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 on any cycle (counting lazy imports) or layering violation")
    args = parser.parse_args(argv)
    if not Path(args.package_dir).is_dir():
        parser.error(f"{args.package_dir} is not a directory")
    report = analyze(args.package_dir)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    failed = report["cycles"]["with_lazy"] or report["violations"]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
