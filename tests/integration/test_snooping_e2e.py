"""test_snooping_e2e.py - MLD snooping on a real test host: containers with the kernel's default link-local IPv6 answer the daemon's query, each one's solicited-node group is learned, IPv6 neighbour discovery works from the remote and between containers, and a solicitation reaches its target and no other container (it does without snooping)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from socket import AF_INET6, inet_pton

import pytest
from conftest import PREFIX
from conftest import running as running_datapath
from scapy.layers.inet6 import ICMPv6ND_NS
from scapy.layers.l2 import Ether
from scapy.utils6 import in6_getnsma, in6_getnsmac

from prism_xdp.dataplane import xdp
from prism_xdp.dataplane.checksum import ChecksumPolicy
from prism_xdp.dataplane.datapath import Datapath, DatapathParams
from prism_xdp.dataplane.snooping import SnoopingParams
from prism_xdp.lab.testhost import OverlayHost, Testbed, create_overlay_host, run_in, socket_in

ETH_P_ALL = 0x0003
READY_S = 5.0  # the first query, the containers' answers (1 s at most), the margin


@dataclass
class Running:
    host: OverlayHost
    dp: Datapath
    snooping: bool


@pytest.fixture(params=[True, False], ids=["snooping", "flooding"])
def running(testbed: Testbed, request: pytest.FixtureRequest) -> Iterator[Running]:
    host = create_overlay_host(testbed, PREFIX, containers=3)  # link-local IPv6 on, as the kernel has it
    params = DatapathParams(host.uplink.host_if, checksum=ChecksumPolicy("software", accept_partial=True),
                            snooping=SnoopingParams() if request.param else None)
    dp = Datapath(params, host.specs(), host.vteps())
    with running_datapath(dp):
        yield Running(host, dp, request.param)
    for ifname in [host.uplink.host_if] + [c.host_if for c in host.containers]:
        assert xdp.attached(ifname) is None, f"XDP program left on {ifname}"


def link_local(ns: str, ifname: str) -> str:
    out = run_in(ns, ["ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link"],
                 capture_output=True, text=True, check=True).stdout
    return out.split("inet6 ")[1].split("/")[0]


def solicited_mac(addr: str) -> bytes:
    return bytes.fromhex(in6_getnsmac(in6_getnsma(inet_pton(AF_INET6, addr))).replace(":", ""))


def ping6(ns: str, addr: str, ifname: str, count: int = 3) -> int:
    r = run_in(ns, ["ping", "-6", "-c", str(count), "-i", "0.1", "-w", "5", f"{addr}%{ifname}"],
               capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def wait_learned(dp: Datapath, want: int) -> dict[str, int]:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        counters = dp.mld_stats()
        if counters["groups"] >= want and dp.queries >= 2:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # pruning starts max_response_ms + a margin after the first query
    return dp.mld_stats()


class Sniffer:
    """Neighbour solicitations for target that arrive on a container's interface."""

    def __init__(self, ns: str, ifname: str, target: str) -> None:
        self.sock = socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.target, self.seen = target, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return  # the interface went away (a failed test's teardown)
            ns = Ether(frame).getlayer(ICMPv6ND_NS)
            if ns is not None and ns.tgt == self.target:
                self.seen += 1

    def stop(self) -> int:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        return self.seen


@pytest.mark.parametrize("running", [True], ids=["snooping"], indirect=True)
def test_each_container_reports_its_group_and_ipv6_works(running: Running) -> None:
    h = running.host
    counters = wait_learned(running.dp, len(h.containers))
    assert counters["queries"] >= 2 and counters["reports"] >= len(h.containers) and counters["malformed"] == 0
    now = time.monotonic_ns()
    for port, c in enumerate(h.containers, start=1):
        addr = link_local(c.ns, c.cont_if)
        assert running.dp.snooping is not None
        assert running.dp.snooping.members(h.vni, solicited_mac(addr), now) == [port], c.name
    c0, c1, _ = h.containers
    assert ping6(h.remote_ns, link_local(c1.ns, c1.cont_if), h.vxlan_if) == 3  # remote -> container
    assert ping6(c0.ns, link_local(c1.ns, c1.cont_if), c0.cont_if) == 3  # container -> container
    assert ping6(c1.ns, link_local(h.remote_ns, h.vxlan_if), c1.cont_if) == 3  # container -> remote


def test_a_solicitation_reaches_its_target_and_no_other_container(running: Running) -> None:
    h = running.host
    c0, c1, c2 = h.containers
    if running.snooping:
        wait_learned(running.dp, len(h.containers))
    target = link_local(c1.ns, c1.cont_if)
    at_target = Sniffer(c1.ns, c1.cont_if, target)
    bystander = Sniffer(c2.ns, c2.cont_if, target)
    try:
        for ns, ifname in ((c0.ns, c0.cont_if), (h.remote_ns, h.vxlan_if)):
            run_in(ns, ["ip", "-6", "neigh", "flush", "dev", ifname], check=True)  # so that it solicits
            assert ping6(ns, target, ifname, count=1) >= 1
    finally:
        seen_target, seen_bystander = at_target.stop(), bystander.stop()
    assert seen_target >= 2  # one solicitation from c0, one from the remote
    if running.snooping:
        assert seen_bystander == 0
        assert running.dp.stats()["stages"]["mcast_pruned"] >= 2
    else:
        assert seen_bystander >= 2  # flooded, as a bridge without snooping does
