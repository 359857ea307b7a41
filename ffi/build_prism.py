"""build_prism.py - the cffi build script (API mode, out of line): compiles ffi/*.c against libxdp and libbpf into prism_xdp._prism_ffi."""

from __future__ import annotations

import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COMMON_H = os.path.join(ROOT, "xdp_progs", "prism_common.h")
SOURCES = ["prism_xsk.c", "prism_bpf.c", "prism_overlay.c"]

# Kernel UAPI constants that Python uses, taken from the headers by the
# compiler rather than copied by hand.
UAPI_CONSTANTS = [
    "XDP_COPY",
    "XDP_ZEROCOPY",
    "XDP_USE_NEED_WAKEUP",
    "XDP_PACKET_HEADROOM",
    "XDP_ATTACHED_NONE",
    "XDP_ATTACHED_DRV",
    "XDP_ATTACHED_SKB",
    "XDP_ATTACHED_HW",
    "XDP_ATTACHED_MULTI",
    "BPF_ANY",
    "BPF_NOEXIST",
    "BPF_EXIST",
]


def _common_constants() -> list[str]:
    """The integer #defines of prism_common.h, so Python can check its copy."""
    with open(COMMON_H) as f:
        names = re.findall(r"^#define\s+(PRISM_[A-Z0-9_]+)\s+\S", f.read(), re.M)
    return [n for n in names if n != "PRISM_COMMON_H"]


def _cdef() -> str:
    with open(os.path.join(HERE, "prism_api.h")) as f:
        api = f.read()
    defines = "\n".join(f"#define {n} ..." for n in _common_constants() + UAPI_CONSTANTS)
    structs = """
struct prism_steer_config { uint16_t vxlan_port; uint8_t mode; uint8_t nclass; uint32_t vni; uint32_t flags; };
struct prism_steer_counters {
    unsigned long long steered[...]; unsigned long long steered_bytes[...];
    unsigned long long no_socket[...];
    unsigned long long passed; unsigned long long malformed[...];
};
extern "Python+C" void prism_log(int level, const char *msg);
"""
    return defines + "\n" + structs + "\n" + api


def _missing(header: str) -> bool:
    return not any(
        os.path.exists(os.path.join(d, header))
        for d in ("/usr/include", "/usr/local/include", "/usr/include/x86_64-linux-gnu")
    )


for _header, _package in (("xdp/xsk.h", "libxdp-dev"), ("bpf/libbpf.h", "libbpf-dev")):
    if _missing(_header):
        raise SystemExit(
            f"prism_xdp build: <{_header}> not found; install the Debian package "
            f"{_package} (tools/setup.sh installs everything)"
        )

ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "prism_xdp._prism_ffi",
    '#include "prism.h"\n'
    "#include <xdp/xsk.h>\n"
    "#include <linux/if_link.h>\n"
    "#include <linux/bpf.h>\n",
    sources=[os.path.relpath(os.path.join(HERE, s), ROOT) for s in SOURCES],
    include_dirs=[HERE],
    libraries=["xdp", "bpf"],
    extra_compile_args=["-O2", "-Wall", "-Werror", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
