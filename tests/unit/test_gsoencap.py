"""test_gsoencap.py - forwarding.uplink_delivery without privileges: the choice by kernel, the mark's layout, and the records prism_gso_encap shares with C."""

from __future__ import annotations

import errno

import pytest

from prism_xdp.dataplane import native
from prism_xdp.dataplane.errors import ConfigError, PrismError
from prism_xdp.dataplane.gsoencap import (
    GSO_COUNTER_FIELDS,
    GsoCounters,
    check_uplink_delivery,
    describe_method,
    gso_mark,
    resolve_uplink_delivery,
)
from prism_xdp.dataplane.native import ffi


def test_counter_fields_match_the_c_record() -> None:
    assert len(GSO_COUNTER_FIELDS) == native.PRISM_GSO_COUNTER_WORDS
    assert ffi.sizeof("struct prism_gso_counters") == 8 * len(GSO_COUNTER_FIELDS)
    assert list(GsoCounters().as_dict()) == list(GSO_COUNTER_FIELDS)
    for i, name in enumerate(GSO_COUNTER_FIELDS):
        assert ffi.offsetof("struct prism_gso_counters", name) == 8 * i


def test_a_vtep_slot_is_the_outer_headers_the_daemon_writes() -> None:
    v = ffi.new("struct prism_gso_vtep *")
    v.remote_mac = bytes.fromhex("020000000001")
    v.local_mac = bytes.fromhex("020000000002")
    v.vni, v.vxlan_port, v.ttl, v.valid = 42, 4789, 64, 1
    raw = bytes(ffi.buffer(v))
    assert len(raw) == 28 and raw[:12] == bytes.fromhex("020000000001020000000002")
    assert raw[20:24] == (42).to_bytes(4, "little") and raw[24:26] == (4789).to_bytes(2, "little")
    assert raw[26:] == bytes([64, 1])


def test_the_mark_carries_the_vtep_and_the_outer_source_port() -> None:
    mark = gso_mark(7, 40001)
    assert mark & 0xff000000 == native.PRISM_GSO_MARK == 0xA0000000
    assert (mark >> 8) & 0xffff == 40001 and mark & 0xff == 7
    assert gso_mark(native.PRISM_GSO_VTEPS - 1, 0xffff) >> 24 == 0xA0  # the top byte stays the tag
    with pytest.raises(ValueError):
        gso_mark(native.PRISM_GSO_VTEPS, 1)


@pytest.mark.parametrize("value,has_tcx,method", [
    ("auto", True, "packet"), ("auto", False, "xsk"), ("packet", True, "packet"),
    ("xsk", True, "xsk"), ("xsk", False, "xsk"),
])
def test_the_choice_follows_the_kernel(value: str, has_tcx: bool, method: str) -> None:
    got, why = resolve_uplink_delivery(value, has_tcx=has_tcx)
    assert got == method and why.startswith(f'forwarding.uplink_delivery = "{value}"')
    assert describe_method(got, why)["method"] == method


def test_packet_is_refused_without_tcx_and_a_bad_value_by_name() -> None:
    with pytest.raises(PrismError, match=r"needs tcx egress hooks \(Linux 6.6 or later\)") as e:
        resolve_uplink_delivery("packet", has_tcx=False)
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(ConfigError, match=r"forwarding.uplink_delivery: must be one of auto, packet, xsk, not 'gso'"):
        check_uplink_delivery("gso")
