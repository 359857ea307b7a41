"""test_overlay_e2e.py - end to end through prism_xdp: a remote host's kernel VXLAN device <-> uplink <-> containers, with stock offloads (checksums finished by the kernel or in software), with TX checksum offload off, and delivering to containers through the packet socket (TCP merged into GSO packets, both ways: toward the uplink encapsulated by prism_gso_encap) or AF_XDP, and with generic-mode XDP on the uplink (the remote's GSO packets whole, multi-buffer); ping, UDP echo, 50 MB TCP both ways, container to container, a corrupted checksum dropped, drops counted, frames accounted."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import PREFIX, running

from prism_xdp.dataplane import native, xdp
from prism_xdp.dataplane.checksum import ChecksumPolicy
from prism_xdp.dataplane.classes import CLASS_NAMES
from prism_xdp.dataplane.datapath import Datapath, DatapathParams, Runner
from prism_xdp.dataplane.pktsock import Delivery
from prism_xdp.lab.packets import Inner, Outer, encapsulate, inner_packet, malformed_packets
from prism_xdp.lab.testhost import (
    OverlayHost,
    Testbed,
    create_overlay_host,
    link_mac,
    run_in,
    socket_in,
)


@dataclass
class Running:
    host: OverlayHost
    dp: Datapath
    runner: Runner


# (senders' TX checksum offload, how prism_xdp finishes checksums, how it
# delivers to containers, the uplink's XDP mode): stock containers with the
# kernel's offload and with software sums, the "tx off" containers that
# AF_XDP data paths used to ask for, delivery on AF_XDP's TX ring instead of
# the packet socket (both ways: to the containers and to the uplink), and
# generic-mode XDP on the uplink, which keeps the remote's TSO: its 64 KB GSO
# packets come as multi-buffer packets.
VARIANTS = [("stock", "offload", "packet", "native"), ("stock", "software", "packet", "native"),
            ("tx-off", "offload", "packet", "native"), ("stock", "offload", "xsk", "native"),
            ("stock", "offload", "packet", "skb")]
MODES = {"native": xdp.AttachMode.NATIVE, "skb": xdp.AttachMode.SKB}


@pytest.fixture(params=VARIANTS, ids=[f"{o}-{m}-{d}-{x}" for o, m, d, x in VARIANTS])
def overlay(testbed: Testbed, request: pytest.FixtureRequest) -> Iterator[Running]:
    offloads, method, delivery, mode = request.param
    host = create_overlay_host(testbed, PREFIX, containers=2, offloads=offloads)
    policy = ChecksumPolicy(method, accept_partial=True)  # the uplink is a veth
    dp = Datapath(DatapathParams(host.uplink.host_if, checksum=policy, delivery=Delivery(delivery),
                                 attach_mode=MODES[mode], uplink_delivery="auto" if delivery == "packet" else "xsk"),
                  host.specs(), host.vteps())
    with running(dp) as runner:
        yield Running(host, dp, runner)
    for ifname in [host.uplink.host_if] + [c.host_if for c in host.containers]:
        assert xdp.attached(ifname) is None, f"XDP program left on {ifname}"
        assert native.tcx_query(xdp.ifindex_of(ifname), ifname, egress=True) == [], f"TC program left on {ifname}"


def ping(ns: str, dst: str, count: int = 3, size: int = 56, extra: tuple[str, ...] = (),
         wait: int = 5) -> int:
    """Replies received."""
    r = run_in(ns, ["ping", "-c", str(count), "-i", "0.05", "-w", str(wait), "-s", str(size), *extra, dst],
               capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def settle_and_account(dp: Datapath) -> dict[str, int]:
    """Stop-the-world view of the frames once traffic is over: every frame is in the pool or on a fill ring."""
    deadline = time.monotonic() + 2
    while True:
        account = dp.umem.account()
        if account.kernel_tx == 0 and account.user == 0 or time.monotonic() > deadline:
            return account.as_dict() | {"balanced": int(account.balanced)}
        time.sleep(0.01)


def test_ping_both_ways_and_between_containers(overlay: Running) -> None:
    h = overlay.host
    c0, c1 = h.containers
    assert ping(h.remote_ns, c0.ip) == 3  # remote -> container (decap), replies encapsulated
    assert ping(c1.ns, h.remote_overlay_ip) == 3  # container -> remote first
    assert ping(c1.ns, c0.ip) == 3  # same host, same VNI: no tunnel
    stats = overlay.dp.stats()["stages"]
    assert stats["decap_out"] >= 6 and stats["encap_out"] >= 6 and stats["local_out"] >= 3
    assert stats["learned"] >= 1
    assert overlay.dp.overlay.lookup(h.vni, c0.mac) == ("local", 1)


def udp_echo(host: OverlayHost, port: int, count: int, seed: int) -> None:
    """count random payloads of 1-1400 B from the remote host to a UDP echo in container c0;
    each reply must be its request, byte for byte (a lost one times out)."""
    c0 = host.containers[0]
    server = socket_in(c0.ns, socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((c0.ip, port))
    server.settimeout(0.1)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            server.sendto(data, peer)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    client = socket_in(host.remote_ns, socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    rng = random.Random(seed)
    try:
        for _ in range(count):
            p = os.urandom(rng.randint(1, 1400))
            client.sendto(p, (c0.ip, port))
            assert client.recv(65535) == p
    finally:
        stop.set()
        t.join(2)
        client.close()
        server.close()


def test_udp_echo_payloads_arrive_byte_identical(overlay: Running) -> None:
    udp_echo(overlay.host, 7007, 2000, seed=7)


def tcp_transfer(server_ns: str, server_ip: str, client_ns: str, nbytes: int) -> tuple[int, str, str]:
    """Send nbytes of random data over one TCP connection; (bytes received, sent sha256, received sha256)."""
    listener = socket_in(server_ns, socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((server_ip, 5301))
    listener.listen(1)
    listener.settimeout(10)
    received = {"n": 0, "sha": hashlib.sha256()}

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(20)
        with conn:
            while chunk := conn.recv(1 << 20):
                received["n"] += len(chunk)
                received["sha"].update(chunk)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    sent = hashlib.sha256()
    block = os.urandom(1 << 20)
    client = socket_in(client_ns, socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(20)
    try:
        client.connect((server_ip, 5301))
        left = nbytes
        while left:
            piece = block[: min(left, len(block))]
            client.sendall(piece)
            sent.update(piece)
            left -= len(piece)
        client.shutdown(socket.SHUT_WR)
    finally:
        client.close()
        t.join(30)
        listener.close()
    return received["n"], sent.hexdigest(), received["sha"].hexdigest()


def test_tcp_50_megabytes_each_way(overlay: Running) -> None:
    h = overlay.host
    c1 = h.containers[1]
    size = 50 * 1024 * 1024
    n, sent, got = tcp_transfer(c1.ns, c1.ip, h.remote_ns, size)  # remote -> container
    assert (n, got) == (size, sent)
    merged = overlay.dp.stats()["stages"]
    if overlay.dp.multi_buffer:  # the remote's GSO packets, whole, each one GSO packet to the container
        parts = sum(s.xsk.counters()["rx_multibuf_parts"] for s in overlay.dp.sources if s.from_uplink)
        assert merged["agg_in"] > 300 and parts > 4 * merged["agg_in"]
        assert merged["drop_aggregate"] == 0
    elif overlay.dp.params.delivery.method == "packet":  # the container took GSO packets, not every segment
        assert merged["gro_packets"] > 100 and merged["gro_segments"] > 4 * merged["gro_packets"]
    else:
        assert merged["gro_packets"] == 0
    n, sent, got = tcp_transfer(h.remote_ns, h.remote_overlay_ip, c1.ns, size)  # container -> remote
    assert (n, got) == (size, sent)
    stats = overlay.dp.stats()
    # 36000 segments each way: remote -> container as segments or far fewer aggregates,
    # then the remote's ACKs of container -> remote (fewer when it took GSO packets) came back.
    assert stats["stages"]["decap_out"] > 1000 and stats["stages"]["encap_out"] > 30000
    gso = overlay.dp.programs.gso
    if gso is not None:  # toward the uplink: merged, then encapsulated on its egress, every one
        assert stats["stages"]["gso_out_packets"] > 100
        assert stats["stages"]["gso_out_segments"] > 4 * stats["stages"]["gso_out_packets"]
        assert gso.counters().as_dict() == {"encap": stats["stages"]["gso_out_packets"],
                                            "encap_bytes": gso.counters().encap_bytes, "no_vtep": 0, "failed": 0}
    else:
        assert stats["stages"]["gso_out_packets"] == 0
    overlay.runner.stop()
    account = settle_and_account(overlay.dp)
    assert account["balanced"] and account["batches"] == 0 and account["tx_ring"] == 0


def test_tcp_between_containers(overlay: Running) -> None:
    c0, c1 = overlay.host.containers
    size = 20 * 1024 * 1024
    n, sent, got = tcp_transfer(c0.ns, c0.ip, c1.ns, size)
    assert (n, got) == (size, sent)
    assert overlay.dp.stats()["stages"]["local_out"] > 10000


def udp_in_csum_errors(ns: str) -> int:
    text = run_in(ns, ["cat", "/proc/net/snmp"], capture_output=True, text=True, check=True).stdout
    head, values = [line.split() for line in text.splitlines() if line.startswith("Udp:")][:2]
    return int(dict(zip(head, values, strict=True))["InCsumErrors"])


def intact_and_corrupted(h: OverlayHost, port: int) -> tuple[bytes, bytes]:
    """A UDP frame "intact payload" from the remote to container c0's port, as the wire carries
    it (encapsulated), and the same frame with one bit flipped after the sender's checksum."""
    up, c0 = h.uplink, h.containers[0]
    outer = Outer(up.remote_mac, up.host_mac, up.remote_ip, up.host_ip)
    inner = Inner(src_mac=link_mac(h.vxlan_if, h.remote_ns), dst_mac=c0.mac, src_ip=h.remote_overlay_ip,
                  dst_ip=c0.ip)
    good = bytes(inner_packet(inner, 40000, port, "udp", b"intact payload"))
    bad = bytearray(good)
    bad[-1] ^= 0x01
    return encapsulate(outer, good, h.vni), encapsulate(outer, bytes(bad), h.vni)


def test_a_corrupted_checksum_from_the_wire_reaches_no_socket(overlay: Running) -> None:
    """The frame keeps its checksum through prism_xdp, so the container's stack finds it wrong."""
    h = overlay.host
    c0 = h.containers[0]
    assert ping(h.remote_ns, c0.ip, count=1) == 1  # the remote's MAC is learned, ARP settled
    server = socket_in(c0.ns, socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((c0.ip, 7010))
    server.settimeout(0.5)
    good, bad = intact_and_corrupted(h, 7010)
    errors = udp_in_csum_errors(c0.ns)
    try:
        h.uplink.send(bad)
        with pytest.raises(TimeoutError):
            server.recv(2048)
        assert udp_in_csum_errors(c0.ns) == errors + 1
        h.uplink.send(good)  # and the intact one is delivered
        assert server.recv(2048) == b"intact payload"
    finally:
        server.close()


def test_bad_frames_are_counted_and_dropped_while_traffic_flows(overlay: Running) -> None:
    h = overlay.host
    up = h.uplink
    c0 = h.containers[0]
    outer = Outer(up.remote_mac, up.host_mac, up.remote_ip, up.host_ip)
    good_inner = inner_packet(Inner(dst_mac=c0.mac), 1000, 2000, payload=b"x" * 20)
    stranger = Outer(up.remote_mac, up.host_mac, "10.201.0.77", up.host_ip)
    bad = list(malformed_packets(outer, h.vni).values())
    result: list[int] = []
    pinger = threading.Thread(target=lambda: result.append(ping(h.remote_ns, c0.ip, count=20)))
    pinger.start()
    for _ in range(5):
        up.send(encapsulate(outer, good_inner, 4242))  # a VNI nobody serves
        up.send(encapsulate(stranger, good_inner, h.vni))  # a VTEP nobody configured
        up.send(*bad)
        time.sleep(0.05)
    pinger.join()
    assert result == [20]
    stats = overlay.dp.stats()
    assert stats["stages"]["drop_unknown_vni"] == 5
    assert stats["stages"]["drop_unknown_vtep"] == 5
    assert sum(stats["steer"]["malformed"].values()) == 5 * len(bad)


def test_a_frame_too_big_for_the_tunnel_is_dropped_and_counted(overlay: Running) -> None:
    h = overlay.host
    c0 = h.containers[0]
    # The container believes it may send 1500-byte packets; with 50 bytes of
    # tunnel they no longer fit the uplink.
    run_in(c0.ns, ["ip", "link", "set", c0.cont_if, "mtu", "1500"], check=True)
    run_in(None, ["ip", "link", "set", c0.host_if, "mtu", "1500"], check=True)
    assert ping(c0.ns, h.remote_overlay_ip, count=2) == 2
    assert ping(c0.ns, h.remote_overlay_ip, count=2, size=1472, extra=("-M", "do"), wait=1) == 0
    assert overlay.dp.stats()["stages"]["drop_mtu"] >= 2
    assert ping(c0.ns, h.remote_overlay_ip, count=2, size=1400) == 2


def test_frame_accounting_balances_after_traffic(overlay: Running) -> None:
    h = overlay.host
    for c in h.containers:
        assert ping(h.remote_ns, c.ip, count=5) == 5
    overlay.runner.stop()
    account = settle_and_account(overlay.dp)
    assert account["balanced"] and account["batches"] == 0
    # Everything is free or waiting to receive (a late IPv6 solicitation may sit on an RX ring).
    assert (account["pool"] + account["fill_ring"] + account["rx_ring"] + account["kernel_rx_held"]
            == account["frames"])


def test_without_timestamps_traffic_flows_and_latency_counts_from_the_poll(testbed: Testbed) -> None:
    """scheduler.timestamps = false: the programs write no stamp and the sockets expect none;
    frames arrive intact and latency is measured from the worker's poll only."""
    host = create_overlay_host(testbed, PREFIX, containers=1)
    dp = Datapath(DatapathParams(host.uplink.host_if, timestamps=False), host.specs(), host.vteps())
    runner = Runner(dp).start()
    try:
        assert not dp.programs.timestamps
        c0 = host.containers[0]
        assert ping(host.remote_ns, c0.ip, size=200) == 3
        assert ping(c0.ns, host.remote_overlay_ip) == 3
        latency = dp.run_on_worker(dp.latency)
        low = latency["low"]
        assert low["pipeline_us"]["count"] >= 6  # both directions
        # No arrival stamp: a packet's latency starts when the worker polled it.
        assert low["latency_us"] == low["pipeline_us"]
    finally:
        try:
            runner.stop()
        finally:
            dp.close()


def test_forty_containers_each_served_both_ways(testbed: Testbed) -> None:
    """82 sockets: every container's rings are polled, not only the first 64 sockets' (32 containers)."""
    host = create_overlay_host(testbed, PREFIX, containers=40)
    dp = Datapath(DatapathParams(host.uplink.host_if, container_fill=64), host.specs(), host.vteps())
    runner = Runner(dp).start()
    try:
        missing = [c.name for c in host.containers
                   if ping(host.remote_ns, c.ip, count=1) != 1 or ping(c.ns, host.remote_overlay_ip, count=1) != 1]
        assert missing == []
        ports = dp.stats()["ports"]
        assert all(ports[c.name]["tx_packets"] >= 2 for c in host.containers)
    finally:
        try:
            runner.stop()
        finally:
            dp.close()


def test_user_space_records_the_class_xdp_decided(testbed: Testbed) -> None:
    """One classifier: for every rule type, the class a packet is measured under is the class
    XDP steered it by (four classes, four sockets a device), also in vanilla mode where XDP
    steers everything to LOW; malformed frames never reach user space."""
    host = create_overlay_host(testbed, PREFIX, containers=1)
    dp = Datapath(DatapathParams(host.uplink.host_if, nclass=4), host.specs(), host.vteps())
    runner = Runner(dp).start()
    up, c0 = host.uplink, host.containers[0]
    outer = Outer(up.remote_mac, up.host_mac, up.remote_ip, up.host_ip)
    remote_mac = link_mac(host.vxlan_if, host.remote_ns)
    inner = Inner(src_mac=remote_mac, dst_mac=c0.mac, src_ip=host.remote_overlay_ip, dst_ip=c0.ip)
    sinks = []
    try:
        for port in (7000, 7001, 7002, 7003):  # listeners that never answer: ingress only
            s = socket_in(c0.ns, socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((c0.ip, port))
            sinks.append(s)
        dp.set_port(7001, 1)
        dp.set_dscp(46, 2)
        dp.set_port(7003, 3)
        frames = {  # expected class: frames
            0: [inner_packet(inner, 40000, 7000, "udp", b"a"), inner_packet(inner, 40000, 7000, "udp", b"b", dscp=10)],
            1: [inner_packet(inner, 40000, 7001, "udp", b"c"), inner_packet(inner, 7001, 7000, "udp", b"d")],
            2: [inner_packet(inner, 40000, 7002, "udp", b"e", dscp=46), inner_packet(inner, 40000, 7001, "udp", b"f", dscp=46)],
            3: [inner_packet(inner, 40000, 7003, "udp", b"g", dscp=46)],
        }

        def recorded() -> list[int]:
            lat = dp.run_on_worker(dp.latency)
            return [lat[CLASS_NAMES[c]]["pipeline_us"]["count"] for c in range(4)]

        def settle(want: list[int]) -> list[int]:
            """Classes 1-3 exactly; LOW may also count what the container sends itself (IPv6 ND)."""
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                got = recorded()
                if got[1:] == want[1:] and got[0] >= want[0]:
                    break
                time.sleep(0.02)
            return [min(got[0], want[0])] + got[1:]

        for vanilla in (False, True):
            dp.run_on_worker(lambda v=vanilla: dp.switch_mode("vanilla" if v else "batch"))
            before, steered0 = recorded(), dp.steer.counters().steered
            for pkts in frames.values():
                for p in pkts:
                    up.send(encapsulate(outer, bytes(p), host.vni))
            up.send(*malformed_packets(outer, host.vni).values())
            want = [before[c] + len(frames[c]) for c in range(4)]
            assert settle(want) == want, f"vanilla={vanilla}"
            steered = [a - b for a, b in zip(dp.steer.counters().steered, steered0, strict=True)]
            # XDP's own decision: per class (batch), or everything folded to LOW (vanilla). LOW
            # may also count the remote's own VXLAN traffic (IPv6 neighbour discovery).
            want_steered = [sum(map(len, frames.values())), 0, 0, 0] if vanilla else [len(frames[c]) for c in range(4)]
            assert steered[1:] == want_steered[1:] and steered[0] >= want_steered[0], steered
        malformed = dp.steer.counters().malformed
        assert sum(malformed.values()) == 2 * len(malformed_packets(outer, host.vni))
    finally:
        for s in sinks:
            s.close()
        try:
            runner.stop()
        finally:
            dp.close()


@pytest.mark.parametrize("mode", ["batch", "sync"])
def test_held_low_segments_arrive_whole_and_in_order_both_ways(testbed: Testbed, mode: str) -> None:
    """scheduler.low_gro_hold: with HIGH traffic active, LOW is cut to batches of 4 and its TCP
    segments wait across batches to leave together; 20 MB each way arrive byte-identical, the
    hold counts what it held and why it sent it, and no frame stays held after the worker stops."""
    host = create_overlay_host(testbed, PREFIX, containers=2)
    dp = Datapath(DatapathParams(host.uplink.host_if, mode=mode, low_batch_with_high=4, low_gro_hold=64),
                  host.specs(), host.vteps())
    runner = Runner(dp).start()
    stop = threading.Event()

    def high() -> None:  # a HIGH datagram to c0 every millisecond keeps the LOW cut on
        with socket_in(host.remote_ns, socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(60_000):
                if stop.wait(0.001):
                    return
                s.sendto(b"h" * 64, (host.containers[0].ip, 7000))

    prober = threading.Thread(target=high, daemon=True)
    try:
        dp.run_on_worker(lambda: dp.set_port(7000))
        prober.start()
        c1, size = host.containers[1], 20 * 1024 * 1024
        for server_ns, server_ip, client_ns in ((c1.ns, c1.ip, host.remote_ns),  # remote -> container
                                                (host.remote_ns, host.remote_overlay_ip, c1.ns)):  # and back
            n, sent, got = tcp_transfer(server_ns, server_ip, client_ns, size)
            assert (n, got) == (size, sent)
        stages = dp.stats()["stages"]
        sent_for = sum(stages[k] for k in ("hold_flush_full", "hold_flush_psh", "hold_flush_idle",
                                           "hold_flush_age", "hold_flush_other"))
        assert stages["hold_frames"] > 1000 and sent_for > 0, stages
        assert stages["hold_frames"] > 4 * sent_for, "held segments must leave several cut batches at a time"
        assert dp.run_on_worker(dp.latency)["high"]["latency_us"]["count"] > 100, "HIGH was active"
    finally:
        stop.set()
        prober.join(5)
        try:
            runner.stop()
        finally:
            account = settle_and_account(dp)
            dp.close()
    assert account["balanced"] and account["batches"] == 0, account
