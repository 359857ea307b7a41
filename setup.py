"""setup.py - build hooks: compile the BPF programs in xdp_progs/ to .bpf.o and the cffi extension from ffi/."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
BPF_INCLUDE = "/usr/include/x86_64-linux-gnu"  # asm/ headers live in the multiarch dir


def compile_bpf(out_dir: str) -> list[str]:
    """Compile every xdp_progs/*.bpf.c to out_dir/*.bpf.o; fail naming what is missing."""
    clang = shutil.which("clang")
    if clang is None:
        raise SystemExit("prism_xdp build: clang not found; install the Debian package clang")
    if not os.path.exists("/usr/include/bpf/bpf_helpers.h"):
        raise SystemExit("prism_xdp build: <bpf/bpf_helpers.h> not found; install libbpf-dev")
    os.makedirs(out_dir, exist_ok=True)
    built = []
    for src in sorted(glob.glob(os.path.join(ROOT, "xdp_progs", "*.bpf.c"))):
        obj = os.path.join(out_dir, os.path.basename(src)[: -len(".c")] + ".o")
        cmd = [clang, "-O2", "-g", "-Wall", "-Werror", "-target", "bpf",
               f"-I{BPF_INCLUDE}", "-c", src, "-o", obj]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"prism_xdp build: {' '.join(cmd)} failed:\n{result.stderr}")
        built.append(obj)
    return built


class BuildPyWithBpf(build_py):
    """build_py that also builds the BPF objects into the package (and in place)."""

    def run(self) -> None:
        # In place as well, so an editable install and a source checkout
        # find the objects in prism_xdp/bpf/.
        compile_bpf(os.path.join(ROOT, "prism_xdp", "bpf"))
        super().run()
        if not self.editable_mode:
            compile_bpf(os.path.join(self.build_lib, "prism_xdp", "bpf"))


setup(
    cmdclass={"build_py": BuildPyWithBpf},
    cffi_modules=["ffi/build_prism.py:ffibuilder"],
)
