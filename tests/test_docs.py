"""Every ```python block of the documentation (docs/**/*.md) runs.

Each page's blocks run in order in one namespace, in a temporary working directory
(files the snippets write land there). A block that imports an optional package
that is absent skips its page (pytest.importorskip).
"""

import ast
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# Imports whose package is optional: the page skips without it.
OPTIONAL = {"sklearn", "onnx", "onnxruntime", "matplotlib", "pandas", "torch", "mpi4py", "tqdm"}

PAGES = sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []


def blocks(page):
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def imported(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def test_docs_exist():
    assert PAGES, f"no documentation pages under {DOCS}"
    assert sum(len(blocks(page)) for page in PAGES) >= 10


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # short fits in the snippets
@pytest.mark.parametrize(
    "page", [p for p in PAGES if blocks(p)], ids=lambda p: str(p.relative_to(DOCS))
)
def test_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for i, source in enumerate(blocks(page)):
        tree = ast.parse(source, filename=f"{page.name}[{i}]")
        for name in sorted(set(imported(tree)) & OPTIONAL):
            pytest.importorskip(name)
        exec(compile(tree, f"{page.relative_to(DOCS)}[block {i}]", "exec"), namespace)
