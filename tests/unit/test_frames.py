"""test_frames.py - the C pool/batch helpers on frames in plain memory: allocation, copies, accounting, limits."""

import errno

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.errors import PrismError
from prism_xdp.dataplane.umem import Umem, UmemParams


@pytest.fixture
def umem():
    with Umem(UmemParams(frame_count=256, frame_size=2048, headroom=128), register=False) as u:
        yield u


def vxlan_frame(payload: bytes = b"hello") -> bytes:
    return bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.1.0.2", dst="10.1.0.1")
        / UDP(sport=40000, dport=4789)
        / VXLAN(vni=42, flags="Instance")
        / Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
        / IP(src="172.16.0.2", dst="172.16.0.3")
        / UDP(sport=1111, dport=2222)
        / Raw(payload)
    )


def test_alloc_takes_distinct_frames_after_headroom(umem: Umem) -> None:
    b = Batch(64)
    assert b.alloc(umem, 64, 100) == 64
    addrs = [a for a, _ in b.descriptors()]
    assert len(set(a // 2048 for a in addrs)) == 64
    assert all(a % 2048 == 128 for a in addrs)
    assert umem.free_frames == 256 - 64


def test_alloc_is_bounded_by_batch_room_and_pool(umem: Umem) -> None:
    big = Batch(512)
    assert big.alloc(umem, 1000, 60) == 256
    assert big.alloc(umem, 1, 60) == 0
    assert umem.free_frames == 0


def test_alloc_refuses_packets_that_do_not_fit(umem: Umem) -> None:
    with pytest.raises(PrismError) as info:
        Batch(4).alloc(umem, 1, 2048 - 128 + 1)
    assert info.value.errno == errno.EMSGSIZE


def test_copy_roundtrip_is_byte_identical(umem: Umem) -> None:
    frame = vxlan_frame(b"payload-" * 10)
    b = Batch(8)
    b.alloc(umem, 8, 0)
    assert b.fill_with(umem, frame) == 8
    for addr, length in b.descriptors():
        assert length == len(frame)
        assert umem.read(addr, length) == frame
    # golden bytes: the VXLAN header sits after 14 + 20 + 8 bytes, I flag set, VNI 42
    assert frame[42:50] == bytes([0x08, 0, 0, 0, 0, 0, 42, 0])


def test_free_returns_frames_and_accounting_balances(umem: Umem) -> None:
    b = Batch(64)
    b.alloc(umem, 40, 64)
    acct = umem.account()
    assert acct.user == 40 and acct.pool == 216 and acct.balanced
    assert b.free(umem, 10, 30) == 30
    assert umem.account().user == 10
    with pytest.raises(PrismError) as info:
        b.free(umem, 30, 20)  # past the end of the batch
    assert info.value.errno == errno.EINVAL


def test_drop_all_empties_batch(umem: Umem) -> None:
    b = Batch(16)
    b.alloc(umem, 16, 64)
    assert b.drop_all(umem) == 16
    assert b.n == 0
    assert umem.account().pool == 256


@pytest.mark.parametrize(
    "params, message",
    [
        (UmemParams(frame_size=3000), "power of two"),
        (UmemParams(frame_size=1024), "at least 2048"),
        (UmemParams(frame_count=0), "positive"),
        (UmemParams(headroom=1024), "headroom"),
        (UmemParams(fill_size=1000), "fill_size"),
    ],
)
def test_bad_umem_params_are_refused(params: UmemParams, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Umem(params, register=False)


def test_batch_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Batch(0)
