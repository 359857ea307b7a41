"""test_boundaries.py - the layout's rules, checked on the source: only native.py touches the compiled lib; the data plane and the daemon import nothing of the lab (scapy, matplotlib, pyroute2) and work in a venv without it; the daemon's config reaches every data path setting."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NATIVE = "prism_xdp/dataplane/native.py"
LAB_ONLY = ("scapy", "matplotlib", "pyroute2", "prism_xdp.lab")


def sources(*dirs: str) -> Iterator[tuple[str, ast.Module]]:
    for d in dirs:
        for path in sorted((ROOT / d).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            yield rel, ast.parse(path.read_text(), rel)


def _native_aliases(tree: ast.Module) -> set[str]:
    """Names a module binds to the native module (from prism_xdp.dataplane import native as x, ...)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "prism_xdp.dataplane":
            names |= {a.asname or a.name for a in node.names if a.name == "native"}
        elif isinstance(node, ast.Import):
            names |= {a.asname for a in node.names if a.name == "prism_xdp.dataplane.native" and a.asname}
    return names


def lib_uses(tree: ast.Module) -> list[str]:
    """Every way a module reaches the compiled extension: importing _prism_ffi, importing lib
    from native, or an attribute .lib of native."""
    found = []
    aliases = _native_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if "_prism_ffi" in a.name]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if "_prism_ffi" in module or any(a.name == "_prism_ffi" for a in node.names):
                found.append(f"line {node.lineno}: from {module} import ...")
            if module.endswith("native") and any(a.name == "lib" for a in node.names):
                found.append(f"line {node.lineno}: from {module} import lib")
        elif isinstance(node, ast.Attribute) and node.attr == "lib":
            base = ast.unparse(node.value)
            if base in aliases or base == "prism_xdp.dataplane.native":
                found.append(f"line {node.lineno}: {base}.lib")
    return found


def test_only_native_touches_the_compiled_lib() -> None:
    offenders = {rel: uses for rel, tree in sources("prism_xdp", "tools") if rel != NATIVE
                 for uses in [lib_uses(tree)] if uses}
    assert offenders == {}


def test_the_check_sees_each_way_in() -> None:
    """The check above would catch every form it looks for."""
    bad = ast.parse("from prism_xdp._prism_ffi import ffi\nimport prism_xdp._prism_ffi\n"
                    "from prism_xdp.dataplane.native import lib\nfrom prism_xdp.dataplane import native as n\n"
                    "n.lib.prism_rx_batch\nimport prism_xdp.dataplane.native\nprism_xdp.dataplane.native.lib\n")
    assert len(lib_uses(bad)) == 5
    assert lib_uses(ast.parse("from prism_xdp.dataplane import native\nnative.rx_batch\nx.lib\n")) == []


def module_level_imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) of every import run when the module is imported: not those inside
    functions (run later, if ever) nor under `if TYPE_CHECKING:` (never run)."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                todo.append(ast.Module(body=child.orelse, type_ignores=[]))
                continue
            if isinstance(child, ast.Import):
                yield from ((child.lineno, a.name) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                yield from ((child.lineno, f"{child.module}.{a.name}") for a in child.names)
            todo.append(child)


def _lab_only(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in LAB_ONLY)


def test_data_plane_and_daemon_import_nothing_of_the_lab() -> None:
    offenders = [f"{rel}:{line} imports {module}"
                 for rel, tree in sources("prism_xdp/dataplane", "prism_xdp/daemon")
                 for line, module in module_level_imports(tree) if _lab_only(module)]
    assert offenders == []


def test_the_import_check_skips_only_what_does_not_run_at_import() -> None:
    tree = ast.parse("import scapy\nclass A:\n    import pyroute2\n"
                     "def f():\n    import matplotlib\n"
                     "if TYPE_CHECKING:\n    from prism_xdp.lab import x\nelse:\n    from prism_xdp.lab import y\n")
    assert sorted(m for _, m in module_level_imports(tree)) == ["prism_xdp.lab.y", "pyroute2", "scapy"]


IMPORT_ALL = """
import importlib, pkgutil
import prism_xdp.daemon, prism_xdp.dataplane
names = []
for pkg in (prism_xdp.dataplane, prism_xdp.daemon):
    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(" ".join(names))
"""


@pytest.fixture(scope="module")
def labless_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv with only the daemon's dependencies (tests/labless.py)."""
    import labless

    return labless.create(tmp_path_factory.mktemp("labless") / "venv")


def _run(python: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *argv], capture_output=True, text=True, cwd="/", timeout=60)


def test_the_venv_has_no_lab_packages(labless_python: Path) -> None:
    for name in ("scapy", "matplotlib", "pyroute2"):
        done = _run(labless_python, "-c", f"import {name}")
        assert done.returncode != 0 and "No module named" in done.stderr, name


def test_every_data_plane_and_daemon_module_imports_without_the_lab_extra(labless_python: Path) -> None:
    done = _run(labless_python, "-c", IMPORT_ALL)
    assert done.returncode == 0, done.stderr
    imported = set(done.stdout.split())
    expected = {f"prism_xdp.{p.parent.name}.{p.stem}" for d in ("dataplane", "daemon")
                for p in (ROOT / "prism_xdp" / d).glob("*.py") if p.stem != "__init__"}
    assert imported == expected


def test_the_daemon_runs_without_the_lab_extra(labless_python: Path) -> None:
    done = _run(labless_python, "-m", "prism_xdp.daemon.cli", "run", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: prism-xdp run") and "--config" in done.stdout


def test_a_lab_command_without_the_lab_extra_names_it(labless_python: Path) -> None:
    done = _run(labless_python, "-m", "prism_xdp.daemon.cli", "inject", "--high", "7000")
    assert done.returncode == 2 and "pip install prism_xdp[lab]" in done.stderr, done.stderr


def test_the_config_reaches_every_data_path_setting() -> None:
    """Every DatapathParams field comes from the config (DATAPATH_FIELDS) or is set per queue;
    learn is the one the daemon leaves at its default (always on)."""
    from prism_xdp.daemon.config import Config
    from prism_xdp.daemon.service import DATAPATH_FIELDS, datapath_params
    from prism_xdp.dataplane.checksum import ChecksumPolicy
    from prism_xdp.dataplane.datapath import DatapathParams

    per_queue = {"queue", "cpu", "checksum", "xsk", "mld_querier"}
    assert set(DATAPATH_FIELDS.values()) | per_queue | {"learn"} == {f.name for f in dataclasses.fields(DatapathParams)}
    assert set(DATAPATH_FIELDS) <= {f.name for f in dataclasses.fields(Config)}
    cfg = Config("x.toml", "eth9", queues=(3, 5), cpus=(1, 0), batch=32, mtu=1400, classes=3, ring_size=512)
    policy = ChecksumPolicy("software", True)
    p = datapath_params(cfg, 1, policy)
    assert (p.uplink, p.queue, p.cpu, p.batch_size, p.uplink_mtu, p.nclass, p.checksum) == (
        "eth9", 5, 0, 32, 1400, 3, policy)
    assert p.xsk.rx_size == p.xsk.tx_size == 512
