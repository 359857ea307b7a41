"""test_kernel_high_e2e.py - forwarding.high_path = "kernel" end to end: HIGH flows decapsulated and encapsulated by the TC programs (byte-identical UDP, 50 MB TCP each way, a corrupted checksum dropped), LOW still through the daemon, vanilla never on the kernel path, the way back learned, nothing left attached."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import PREFIX, running
from test_overlay_e2e import intact_and_corrupted, ping, tcp_transfer, udp_echo, udp_in_csum_errors

from prism_xdp.dataplane import native, xdp
from prism_xdp.dataplane.checksum import ChecksumPolicy
from prism_xdp.dataplane.datapath import Datapath, DatapathParams, Runner
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.kernelpath import KernelCounters
from prism_xdp.lab.testhost import (
    OverlayHost,
    Testbed,
    create_overlay_host,
    run_in,
    socket_in,
)

HIGH_UDP, HIGH_TCP = 7007, 5301  # the ports udp_echo and tcp_transfer use


@dataclass
class Running:
    host: OverlayHost
    dp: Datapath
    runner: Runner

    def kernel(self) -> KernelCounters:
        assert self.dp.programs.kernel is not None
        return self.dp.programs.kernel.counters()


def interfaces(host: OverlayHost) -> list[str]:
    return [host.uplink.host_if] + [c.host_if for c in host.containers]


@pytest.fixture(params=["sync", "batch"])
def kernel_high(testbed: Testbed, request: pytest.FixtureRequest) -> Iterator[Running]:
    host = create_overlay_host(testbed, PREFIX, containers=2, offloads="stock")
    dp = Datapath(DatapathParams(host.uplink.host_if, mode=request.param, high_path="kernel",
                                 checksum=ChecksumPolicy("offload", accept_partial=True)),
                  host.specs(), host.vteps())
    with running(dp) as runner:
        for port in (HIGH_UDP, HIGH_TCP):
            dp.set_port(port, native.PRISM_CLASS_HIGH)
        assert all(native.tcx_query(xdp.ifindex_of(i), i) for i in interfaces(host))
        yield Running(host, dp, runner)
    for ifname in interfaces(host):
        assert xdp.attached(ifname) is None, f"XDP program left on {ifname}"
        assert native.tcx_query(xdp.ifindex_of(ifname), ifname) == [], f"TC program left on {ifname}"


def test_high_udp_goes_through_the_kernel_byte_identical(kernel_high: Running) -> None:
    before = kernel_high.kernel()
    udp_echo(kernel_high.host, HIGH_UDP, 2000, seed=11)
    after = kernel_high.kernel()
    # The first request may have gone before any tunnel was learned; every other
    # request and answer took the kernel path, none reached the HIGH sockets.
    assert after.decap - before.decap >= 2000 and after.encap - before.encap >= 1999
    assert after.failed == after.no_tunnel == after.no_port == 0
    assert kernel_high.dp.steer.counters().steered[native.PRISM_CLASS_HIGH] == 0


def test_high_tcp_50_megabytes_each_way(kernel_high: Running) -> None:
    h = kernel_high.host
    c1 = h.containers[1]
    size = 50 * 1024 * 1024
    n, sent, got = tcp_transfer(c1.ns, c1.ip, h.remote_ns, size)  # remote -> container
    assert (n, got) == (size, sent)
    n, sent, got = tcp_transfer(h.remote_ns, h.remote_overlay_ip, c1.ns, size)  # container -> remote
    assert (n, got) == (size, sent)
    k = kernel_high.kernel()
    assert k.decap > 30000 and k.encap > 30000 and k.failed == 0
    # No VXLAN socket on this host, so nothing was merged before the TC program.
    assert k.aggregate == 0


def test_low_still_goes_through_the_daemon(kernel_high: Running) -> None:
    h = kernel_high.host
    before = kernel_high.kernel()
    stages = kernel_high.dp.stats()["stages"]
    assert ping(h.remote_ns, h.containers[0].ip, count=5) == 5  # ICMP: no port, LOW
    after = kernel_high.dp.stats()["stages"]
    assert after["decap_out"] - stages["decap_out"] >= 5 and after["encap_out"] - stages["encap_out"] >= 5
    assert kernel_high.kernel().decap == before.decap


def test_a_corrupted_high_checksum_reaches_no_socket(kernel_high: Running) -> None:
    """The kernel path leaves the inner checksum alone: the container's stack finds it wrong."""
    h = kernel_high.host
    c0 = h.containers[0]
    assert ping(h.remote_ns, c0.ip, count=1) == 1
    server = socket_in(c0.ns, socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((c0.ip, HIGH_UDP))
    server.settimeout(0.5)
    good, bad = intact_and_corrupted(h, HIGH_UDP)
    errors, decap = udp_in_csum_errors(c0.ns), kernel_high.kernel().decap
    try:
        h.uplink.send(bad)
        with pytest.raises(TimeoutError):
            server.recv(2048)
        assert udp_in_csum_errors(c0.ns) == errors + 1
        h.uplink.send(good)
        assert server.recv(2048) == b"intact payload"
        assert kernel_high.kernel().decap == decap + 2  # both took the kernel path
    finally:
        server.close()


def test_a_high_flow_the_container_starts_goes_through_the_daemon_until_the_way_back_is_known(
        kernel_high: Running) -> None:
    h = kernel_high.host
    c1 = h.containers[1]
    server = socket_in(h.remote_ns, socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((h.remote_overlay_ip, HIGH_UDP))
    server.settimeout(2)
    client = socket_in(c1.ns, socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    try:
        for i in range(20):
            client.sendto(b"q%d" % i, (h.remote_overlay_ip, HIGH_UDP))
            data, peer = server.recvfrom(100)
            assert data == b"q%d" % i
            server.sendto(b"a%d" % i, peer)
            assert client.recv(100) == b"a%d" % i
    finally:
        client.close()
        server.close()
    k = kernel_high.kernel()
    # The first question went through the daemon (the way back was not learned yet);
    # its answer taught the kernel path, which carried the rest.
    assert k.decap >= 20 and 19 <= k.encap <= 20 and k.no_tunnel == 0
    assert kernel_high.dp.programs.kernel is not None and kernel_high.dp.programs.kernel.tunnels() >= 1


def test_a_high_frame_too_big_for_the_tunnel_is_dropped_and_counted(kernel_high: Running) -> None:
    h = kernel_high.host
    c0 = h.containers[0]
    udp_echo(h, HIGH_UDP, 3, seed=1)  # the way back to the remote is learned
    run_in(c0.ns, ["ip", "link", "set", c0.cont_if, "mtu", "1500"], check=True)
    run_in(None, ["ip", "link", "set", c0.host_if, "mtu", "1500"], check=True)
    sink = socket_in(h.remote_ns, socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((h.remote_overlay_ip, 7008))
    sink.settimeout(1)
    sender = socket_in(c0.ns, socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((c0.ip, HIGH_UDP))  # the HIGH port as its source: HIGH
    try:
        sender.sendto(b"x" * 1472, (h.remote_overlay_ip, 7008))  # 1500 B inside, 1550 outside
        sender.sendto(b"small", (h.remote_overlay_ip, 7008))
        assert sink.recv(2048) == b"small"
        k = kernel_high.kernel()
        assert k.too_big == 1 and k.failed == 0
    finally:
        sender.close()
        sink.close()


def test_vanilla_never_takes_the_kernel_path(testbed: Testbed) -> None:
    """Vanilla reproduces the stock kernel's order: every class through the one queue."""
    host = create_overlay_host(testbed, PREFIX, containers=1, offloads="stock")
    dp = Datapath(DatapathParams(host.uplink.host_if, mode="vanilla", high_path="kernel"), host.specs(),
                  host.vteps())
    with running(dp):
        dp.set_port(HIGH_UDP, native.PRISM_CLASS_HIGH)
        udp_echo(host, HIGH_UDP, 50, seed=3)
        assert dp.programs.kernel is not None
        k = dp.programs.kernel.counters()
        assert k.decap == k.encap == 0
        assert dp.steer.counters().steered[native.PRISM_CLASS_LOW] >= 50


def test_a_bad_high_path_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="forwarding.high_path"):
        DatapathParams("lo", high_path="fast").check()


def test_closing_leaves_no_tc_program(testbed: Testbed) -> None:
    """One tcx program per device while open; none once closed (a crash: test_daemon)."""
    host = create_overlay_host(testbed, PREFIX, containers=1)
    dp = Datapath(DatapathParams(host.uplink.host_if, high_path="kernel"), host.specs(), host.vteps())
    try:
        assert all(len(native.tcx_query(xdp.ifindex_of(i), i)) == 1 for i in interfaces(host))
    finally:
        dp.close()
    deadline = time.monotonic() + 2
    while any(native.tcx_query(xdp.ifindex_of(i), i) for i in interfaces(host)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [native.tcx_query(xdp.ifindex_of(i), i) for i in interfaces(host)] == [[]] * len(interfaces(host))
