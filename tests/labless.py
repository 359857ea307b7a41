"""labless.py - a real virtual environment without the lab extra: the daemon's own dependencies (cffi, prometheus_client) and this checkout, nothing else."""

from __future__ import annotations

import importlib
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB_ONLY = ("scapy", "matplotlib", "pyroute2")
# What `pip install prism_xdp` (no extra) brings: pyproject's dependencies and theirs.
DAEMON_DISTRIBUTIONS = ("cffi", "_cffi_backend", "pycparser", "prometheus_client")


def _installed(name: str) -> Path:
    """The installed file or package directory of a top-level module in this interpreter."""
    module = importlib.import_module(name)
    where = Path(module.__file__ or "")
    return where.parent if where.name == "__init__.py" else where


def create(where: Path) -> Path:
    """A venv at where, its python returned: the daemon's packages linked from this interpreter's
    environment, the checkout (with its built C helpers and BPF objects) on its path, and none
    of the lab's packages; fails if one of them is importable there anyway."""
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(where)
    python = where / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    for name in DAEMON_DISTRIBUTIONS:
        source = _installed(name)
        (purelib / source.name).symlink_to(source)
    (purelib / "prism_xdp_checkout.pth").write_text(f"{ROOT}\n")
    probe = subprocess.run([python, "-c", "import importlib.util, sys; "
                            f"sys.exit(any(importlib.util.find_spec(m) for m in {LAB_ONLY!r}))"])
    if probe.returncode != 0:
        raise RuntimeError(f"the venv at {where} can import a lab package")
    return python


if __name__ == "__main__":  # pragma: no cover - by hand: python tests/labless.py DIR
    print(create(Path(sys.argv[1])), sysconfig.get_paths()["purelib"])
