"""test_kernelpath.py - the kernel HIGH path's records as Python reads and writes them: counter words, the map key's layout."""

from __future__ import annotations

from prism_xdp.dataplane import native
from prism_xdp.dataplane.kernelpath import KERNEL_COUNTER_FIELDS, KernelCounters, kernel_key
from prism_xdp.dataplane.native import ffi


def test_counter_fields_match_the_c_record() -> None:
    assert len(KERNEL_COUNTER_FIELDS) == native.PRISM_KERNEL_COUNTER_WORDS
    assert ffi.sizeof("struct prism_kernel_counters") == 8 * len(KERNEL_COUNTER_FIELDS)
    assert list(KernelCounters().as_dict()) == list(KERNEL_COUNTER_FIELDS)
    for i, name in enumerate(KERNEL_COUNTER_FIELDS):
        assert ffi.offsetof("struct prism_kernel_counters", name) == 8 * i


def test_key_is_mac_padding_then_vni() -> None:
    key = kernel_key("02:42:0A:00:00:05", 42)
    raw = bytes(ffi.buffer(key))
    assert raw == bytes.fromhex("02420a000005") + b"\0\0" + (42).to_bytes(4, "little")
