"""test_xsk.py - the AF_XDP layer on real veths: shared-UMEM sockets on one queue, zero-copy forwarding between devices, teardown, errors, crash recovery."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import PREFIX, Uplink, drain, recv_frames

from prism_xdp.dataplane import xdp
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.errors import NotSupported, PrismError
from prism_xdp.dataplane.native import PRISM_CLASS_HIGH, PRISM_CLASS_LOW
from prism_xdp.dataplane.steer import Steering
from prism_xdp.dataplane.umem import Umem, UmemParams
from prism_xdp.dataplane.xsk import BindMode, XskParams, XskSocket
from prism_xdp.lab.packets import vxlan_packet
from prism_xdp.lab.testhost import socket_in


def test_two_sockets_on_one_queue_each_get_their_class(uplink: Uplink, umem: Umem) -> None:
    with Steering() as steer:
        steer.attach(uplink.host_if)
        low = XskSocket(umem, uplink.host_if, 0)
        high = XskSocket(umem, uplink.host_if, 0)  # shares low's fill/completion rings
        steer.add_socket(low, PRISM_CLASS_LOW)
        steer.add_socket(high, PRISM_CLASS_HIGH)
        steer.set_port(7000)
        assert low.fill(1024) == 1024
        frames = [vxlan_packet(uplink.outer, 42, 40000 + i, 7000 if i % 3 == 0 else 80,
                               payload=bytes([i]) * 30) for i in range(30)]
        uplink.send(*frames)
        got_high = drain(high, 10)
        got_low = drain(low, 20)
        assert sorted(got_high) == sorted(f for i, f in enumerate(frames) if i % 3 == 0)
        assert sorted(got_low) == sorted(f for i, f in enumerate(frames) if i % 3)
        assert low.counters()["rx_packets"] == 20 and high.counters()["rx_packets"] == 10
        low.close()
        high.close()
    assert umem.account().balanced


def test_forward_to_another_veth_without_copy(uplink: Uplink, umem: Umem) -> None:
    """Frames received on the uplink go out on a container veth from the same UMEM."""
    tb = uplink.testbed
    cns = tb.add_netns(tb.name(PREFIX, "c"))
    host_c, cont_c = tb.name(PREFIX, "h"), tb.name(PREFIX, "k")
    tb.add_veth(host_c, cont_c, None, cns)
    with xdp.XdpProgram("prism_redirect") as prog:
        prog.attach(uplink.host_if)
        rx = XskSocket(umem, uplink.host_if, 0)
        rx.insert_into(prog.map_fd("xsks"), 0)
        tx = XskSocket(umem, host_c, 0)  # another device: its own ring pair, same frames
        listener = socket_in(cns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        listener.bind((cont_c, 0))
        rx.fill(512)
        frames = [vxlan_packet(uplink.outer, 7, 1000 + i, 2000, payload=i.to_bytes(2, "big") * 40)
                  for i in range(100)]
        uplink.send(*frames)

        batch = Batch(64)
        forwarded = 0
        deadline = time.monotonic() + 3
        while forwarded < len(frames) and time.monotonic() < deadline:
            batch.clear()
            n = rx.rx(batch)
            if not n:
                time.sleep(0.001)
                continue
            forwarded += tx.tx(batch)
            tx.complete()
            rx.fill(n)
        # The redirect program also forwards the remote stack's own chatter.
        assert forwarded >= len(frames)
        sent = set(frames)
        got = recv_frames(listener, len(frames), keep=sent.__contains__)
        assert sorted(got) == sorted(frames)
        deadline = time.monotonic() + 2
        while umem.account().kernel_tx and time.monotonic() < deadline:
            tx.complete()
            time.sleep(0.001)
        acct = umem.account()
        assert acct.balanced and acct.kernel_tx == 0 and acct.user == 0
        # TX took the RX descriptors as they were (same UMEM addresses, no
        # copy) and every one of them came back through the completion ring.
        assert tx.counters()["tx_packets"] == forwarded
        assert tx.counters()["comp_reaped"] == forwarded
        listener.close()
        tx.close()
        rx.close()


def test_close_leaves_no_program_and_frees_umem(uplink: Uplink) -> None:
    umem = Umem()
    prog = xdp.XdpProgram("prism_steer")
    prog.attach(uplink.host_if)
    assert xdp.attached(uplink.host_if).prog_id == prog.prog_id
    sock = XskSocket(umem, uplink.host_if, 0)
    with pytest.raises(PrismError) as info:
        umem.close()  # a socket still uses it
    assert info.value.errno == errno.EBUSY
    sock.close()
    prog.close()
    umem.close()
    assert xdp.attached(uplink.host_if) is None


def test_missing_interface_is_named(umem: Umem) -> None:
    with pytest.raises(PrismError) as info:
        XskSocket(umem, "pxtnosuchdev0", 0)
    assert info.value.errno == errno.ENODEV
    assert "pxtnosuchdev0" in str(info.value)


def test_missing_queue_is_named(uplink: Uplink, umem: Umem) -> None:
    with pytest.raises(PrismError) as info:
        XskSocket(umem, uplink.host_if, 5)
    assert f"{uplink.host_if} queue 5" in str(info.value)
    assert "1 rx queue" in str(info.value)


def test_zero_copy_on_veth_is_not_supported(uplink: Uplink, umem: Umem) -> None:
    with pytest.raises(PrismError) as info:
        XskSocket(umem, uplink.host_if, 0, XskParams(bind=BindMode.ZEROCOPY))
    assert "zero-copy" in str(info.value)
    auto = XskSocket(umem, uplink.host_if, 0, XskParams(bind=BindMode.AUTO))
    assert auto.zerocopy is False  # veth falls back to copy mode
    auto.close()


def test_a_multi_buffer_socket_needs_a_multi_buffer_umem(uplink: Uplink, umem: Umem) -> None:
    with pytest.raises(PrismError, match="a multi-buffer socket needs a UMEM made with multi_buffer"):
        XskSocket(umem, uplink.host_if, 0, XskParams(multi_buffer=True))
    with Umem(UmemParams(multi_buffer=True)) as mb:
        sock = XskSocket(mb, uplink.host_if, 0, XskParams(multi_buffer=True))  # XDP_USE_SG: Linux >= 6.6
        sock.close()


def test_statistics_count_drops_when_fill_ring_is_empty(uplink: Uplink, umem: Umem) -> None:
    with xdp.XdpProgram("prism_redirect") as prog:
        prog.attach(uplink.host_if)
        sock = XskSocket(umem, uplink.host_if, 0)
        sock.insert_into(prog.map_fd("xsks"), 0)
        # No fill: the kernel has no frame to put packets in.
        uplink.send(*[vxlan_packet(uplink.outer, 1, 1, 2)] * 20)
        time.sleep(0.2)
        stats = sock.statistics()
        assert set(stats) >= {"rx_dropped", "rx_fill_ring_empty_descs"}
        assert stats["rx_dropped"] + stats["rx_fill_ring_empty_descs"] >= 20
        sock.close()


SO_BUSY_POLL, SO_PREFER_BUSY_POLL = 46, 69  # asm-generic/socket.h


def sockopt(fd: int, name: int) -> int:
    """An int SOL_SOCKET option of any socket (Python's socket objects refuse AF_XDP: no getsockname)."""
    libc = ctypes.CDLL(None, use_errno=True)
    value, size = ctypes.c_int(), ctypes.c_uint(ctypes.sizeof(ctypes.c_int))
    if libc.getsockopt(fd, socket.SOL_SOCKET, name, ctypes.byref(value), ctypes.byref(size)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return value.value


def test_busy_poll_options_apply(uplink: Uplink, umem: Umem) -> None:
    """The kernel holds the options the socket was built with (read back from its fd)."""
    try:
        sock = XskSocket(umem, uplink.host_if, 0, XskParams(busy_poll_usecs=20, busy_poll_budget=16))
    except NotSupported as exc:
        pytest.skip(str(exc))
    try:
        assert sockopt(sock.fd, SO_BUSY_POLL) == 20
        assert sockopt(sock.fd, SO_PREFER_BUSY_POLL) == 1
        # SO_BUSY_POLL_BUDGET cannot be read back (the kernel has no getsockopt for it).
    finally:
        sock.close()


CRASHER = """
import sys, time
from prism_xdp.dataplane import native
from prism_xdp.dataplane.xdp import XdpProgram, ifindex_of
prog = XdpProgram("prism_steer")
if sys.argv[2] == "link":
    prog.attach(sys.argv[1])
else:  # as libxdp attaches (an older prism_xdp, or a kernel without XDP links)
    native.prog_attach(prog.ptr, ifindex_of(sys.argv[1]), 1, "attach", sys.argv[1])
print(prog.prog_id, flush=True)
time.sleep(60)
"""


def crash_after_attach(ifname: str, how: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, ifname, how], stdout=subprocess.PIPE, text=True)
    try:
        return int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_a_crashed_process_takes_its_program_along(uplink: Uplink) -> None:
    """Attached through a BPF link: kill -9 detaches it at once, nothing is stranded."""
    crash_after_attach(uplink.host_if, "link")
    assert xdp.attached(uplink.host_if) is None
    with xdp.XdpProgram("prism_steer") as prog:
        prog.attach(uplink.host_if)
        assert xdp.attached(uplink.host_if).prog_id == prog.prog_id
    assert xdp.attached(uplink.host_if) is None


def test_restart_after_crash_replaces_stale_program(uplink: Uplink) -> None:
    """A program attached the old way (netlink, no link) outlives a crash; the next start replaces it."""
    stale_id = crash_after_attach(uplink.host_if, "netlink")
    left = xdp.attached(uplink.host_if)
    assert left is not None and left.prog_id == stale_id  # the crash left it behind
    with xdp.XdpProgram("prism_steer") as prog:
        prog.attach(uplink.host_if)
        now = xdp.attached(uplink.host_if)
        assert now.prog_id == prog.prog_id != stale_id
    assert xdp.attached(uplink.host_if) is None


FOREIGN = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int someone_elses(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_foreign_program_is_not_replaced(uplink: Uplink, tmp_path) -> None:
    src, obj = tmp_path / "foreign.c", tmp_path / "foreign.o"
    src.write_text(FOREIGN)
    subprocess.run(["clang", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    str(src), "-o", str(obj)], check=True)
    subprocess.run(["ip", "link", "set", "dev", uplink.host_if, "xdpdrv", "obj", str(obj),
                    "sec", "xdp"], check=True)
    try:
        with xdp.XdpProgram("prism_steer") as prog, pytest.raises(PrismError) as info:
            prog.attach(uplink.host_if)
        assert info.value.errno == errno.EBUSY
        assert "someone_elses" in str(info.value) and "not ours" in str(info.value)
        assert xdp.attached(uplink.host_if).name == "someone_elses"
    finally:
        subprocess.run(["ip", "link", "set", "dev", uplink.host_if, "xdpdrv", "off"], check=True)
