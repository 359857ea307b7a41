"""test_daemon.py - `prism-xdp run` as users run it, from a venv without the lab extra: traffic, ctl and top, SIGHUP, SIGTERM leaves nothing, kill -9 then restart, refused configs, garbage and non-root peers on the control socket, Prometheus.

One file past 400 lines: every test here shares the Daemon runner and the venv fixture, and
reads as one story of the daemon's life."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import PREFIX
from prometheus_client.parser import text_string_to_metric_families

from prism_xdp.daemon.control import ControlClient
from prism_xdp.dataplane import native, xdp
from prism_xdp.lab.procinfo import children
from prism_xdp.lab.testhost import OverlayHost, Testbed, create_overlay_host, popen_in, run_in

# Every prism-xdp command here (run, ctl, top) runs from a real venv without the lab extra
# (tests/labless.py: cffi, prometheus_client and the checkout only), as on a host where the
# daemon was installed alone; the fixtures themselves use the lab to build the test host.
LAB_ONLY = ("scapy", "matplotlib", "pyroute2")
PRISM: list[str] = []  # filled by the module's venv fixture below


@pytest.fixture(scope="module", autouse=True)
def labless_prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import labless

    python = labless.create(tmp_path_factory.mktemp("labless") / "venv")
    PRISM[:] = [str(python), "-m", "prism_xdp.daemon.cli"]
    yield
    PRISM.clear()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 5.0) -> object:
    """condition()'s first true value, polled until timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def config_text(host: OverlayHost, tmp: Path, extra: str = "", rules: str = "ports = [7000]",
                socket_dir: Path | None = None) -> str:
    containers = "".join(f'\n[[container]]\nname = "{c.name}"\nhost_if = "{c.host_if}"\nmac = "{c.mac}"\n'
                         f"vni = {c.vni}\n" for c in host.containers)
    return (f'[uplink]\ninterface = "{host.uplink.host_if}"\n\n[control]\nsocket = "{socket_dir or tmp}/ctl.sock"\n'
            f'pid_file = "{tmp}/prism.pid"\n{extra}\n[[vtep]]\nip = "{host.uplink.remote_ip}"\nvni = {host.vni}\n'
            f"{containers}\n[rules]\n{rules}\n")


RUNNING: list[Daemon] = []  # every daemon a test started; teardown stops what a failure left


class Daemon:
    def __init__(self, host: OverlayHost, tmp: Path, extra: str = "", socket_dir: Path | None = None) -> None:
        self.host, self.tmp = host, tmp
        self.config = tmp / "prism.toml"
        if not self.config.exists():
            self.config.write_text(config_text(host, tmp, extra, socket_dir=socket_dir))
        self.socket = (socket_dir or tmp) / "ctl.sock"
        self.proc = subprocess.Popen([*PRISM, "run", "--config", str(self.config)], stderr=subprocess.PIPE, text=True)
        RUNNING.append(self)
        # Ready when it answers (a crashed daemon's socket file may still be there).
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                if self.call("status")["pid"] == self.proc.pid:  # type: ignore[index]
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "daemon did not come up"
            time.sleep(0.05)

    def call(self, cmd: str, **fields: object) -> object:
        with ControlClient(str(self.socket)) as c:
            return c.call(cmd, **fields)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PRISM, "ctl", "--socket", str(self.socket), *args], capture_output=True, text=True,
                              timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.stderr:
                self.proc.stderr.close()


@pytest.fixture
def host(testbed: Testbed) -> Iterator[OverlayHost]:
    h = create_overlay_host(testbed, PREFIX, containers=2)
    yield h
    while RUNNING:
        d = RUNNING.pop()
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)
    for ifname in [h.uplink.host_if] + [c.host_if for c in h.containers]:
        if xdp.attached(ifname) is not None:  # a test failed midway: clean, then fail
            xdp.detach_stale(ifname)
            raise AssertionError(f"XDP program left on {ifname}")


@pytest.fixture
def daemon(host: OverlayHost, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(host, tmp_path)
    yield d
    d.stop()


def ping(ns: str, dst: str, count: int = 3) -> int:
    """Echo replies received (at most count: ping stops there)."""
    r = run_in(ns, ["ping", "-c", str(count), "-i", "0.05", "-w", "3", dst], capture_output=True, text=True)
    got = next((int(line.split(",")[1].split()[0]) for line in r.stdout.splitlines() if "received" in line), 0)
    return min(got, count)


def nothing_left(host: OverlayHost, tmp: Path) -> None:
    for ifname in [host.uplink.host_if] + [c.host_if for c in host.containers]:
        assert xdp.attached(ifname) is None, f"XDP program left on {ifname}"
        assert native.tcx_query(xdp.ifindex_of(ifname), ifname) == [], f"TC program left on {ifname}"
        assert native.tcx_query(xdp.ifindex_of(ifname), ifname, egress=True) == [], f"TC egress left on {ifname}"
    assert not (tmp / "ctl.sock").exists() and not (tmp / "prism.pid").exists()


def send_udp(host: OverlayHost, port: int, count: int) -> None:
    c = host.containers[0]
    r = run_in(host.remote_ns, [sys.executable, "-m", "prism_xdp.lab.udpflows", "send", "--dst", c.ip, "--ports",
                                str(port), "--count", str(count)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_traffic_rules_and_mode_through_ctl(host: OverlayHost, daemon: Daemon) -> None:
    c0, c1 = host.containers
    assert ping(host.remote_ns, c0.ip) == 3 and ping(c1.ns, c0.ip) == 3
    send_udp(host, 9000, 50)
    high0 = daemon.call("stats")["totals"]["steer"]["steered"]["high"]  # type: ignore[index]
    r = daemon.ctl("rule", "add", "port", "9000")
    assert r.returncode == 0 and "port 9000: high" in r.stdout
    send_udp(host, 9000, 50)
    stats = daemon.call("stats")
    assert stats["totals"]["steer"]["steered"]["high"] >= high0 + 50  # type: ignore[index]
    assert stats["totals"]["latency"]["high"]["latency_us"]["count"] >= 50  # type: ignore[index]
    assert daemon.ctl("mode", "sync").stdout.strip() == "sync"
    status = daemon.call("status")
    assert status["mode"] == "sync"  # type: ignore[index]
    # This kernel (>= 6.11) takes checksum requests; the uplink is a veth.
    assert status["checksum"]["method"] == "offload"  # type: ignore[index]
    assert status["checksum"]["partial_from_uplink"] == "accept"  # type: ignore[index]
    assert "checksum" in daemon.ctl("status").stdout
    # Containers are reached through packet sockets, TCP merged into GSO packets of up to 64 segments.
    assert status["delivery"] == {"method": "packet", "gro_segments": 64,  # type: ignore[index]
                                  "how": "AF_PACKET with a virtio-net header (GSO, CHECKSUM_PARTIAL)"}
    assert ping(host.remote_ns, c1.ip) == 3
    rules = daemon.ctl("rules").stdout
    assert "7000" in rules and "9000" in rules
    assert daemon.ctl("rule", "del", "port", "9000").returncode == 0
    assert daemon.call("rules") == {"port": {"7000": 1}, "dscp": {}, "vni": {}}
    bad = daemon.ctl("rule", "add", "port", "70000")
    assert bad.returncode == 1 and "a port must be in 1..65535" in bad.stderr
    top = subprocess.run([*PRISM, "top", "--socket", str(daemon.socket), "--count", "2", "--interval", "0.2"],
                         capture_output=True, text=True, timeout=30)
    assert top.returncode == 0 and top.stdout.count("mode sync") == 2 and "/s" in top.stdout
    as_json = json.loads(daemon.ctl("--json", "stats").stdout)
    assert as_json["totals"]["stages"]["deliver_out"] > 0


def test_sigterm_removes_everything(host: OverlayHost, tmp_path: Path) -> None:
    d = Daemon(host, tmp_path)
    assert ping(host.remote_ns, host.containers[0].ip) == 3
    assert xdp.attached(host.uplink.host_if) is not None
    assert d.stop(signal.SIGTERM) == 0
    nothing_left(host, tmp_path)


def test_kill_9_under_load_then_restart_recovers(host: OverlayHost, tmp_path: Path) -> None:
    d = Daemon(host, tmp_path)
    assert ping(host.remote_ns, host.containers[0].ip) == 3
    c = host.containers[0]
    load = popen_in(host.remote_ns, [sys.executable, "-m", "prism_xdp.lab.udpflows", "send", "--dst", c.ip,
                                           "--ports", "9000,9001", "--count", "20000", "--burst", "64",
                                           "--gap-us", "200"], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: d.call("stats")["totals"]["steer"]["steered"]["low"] > 500,  # type: ignore[index]
                 "the load reaches the daemon")
        d.stop(signal.SIGKILL)
        # The programs were attached through BPF links: they went with the daemon.
        assert xdp.attached(host.uplink.host_if) is None
        assert all(xdp.attached(k.host_if) is None for k in host.containers)
        # The host's own traffic flows at once.
        assert ping(host.remote_ns, host.uplink.host_ip) == 3
        t0 = time.monotonic()
        d2 = Daemon(host, tmp_path)  # stale pid file and socket file are replaced
        assert ping(host.containers[1].ns, host.remote_overlay_ip) == 3
        assert time.monotonic() - t0 < 5.0, "a restart forwards again within 5 s"
    finally:
        load.kill()
        load.wait()
    assert d2.stop() == 0
    nothing_left(host, tmp_path)


def test_kernel_high_path_kill_9_then_restart_then_sigterm(host: OverlayHost, tmp_path: Path) -> None:
    """forwarding.high_path = "kernel": HIGH through the TC programs, reported in status; its
    tcx links go with a killed daemon like the XDP links, and a restart takes over."""
    from test_overlay_e2e import udp_echo

    (tmp_path / "prism.toml").write_text(config_text(host, tmp_path, '[forwarding]\nhigh_path = "kernel"\n',
                                                     rules="ports = [7007]"))
    d = Daemon(host, tmp_path)
    udp_echo(host, 7007, 100, seed=5)
    status = d.call("status")["high_path"]  # type: ignore[index]
    assert status["high_path"] == "kernel" and status["decap"] >= 100 and status["encap"] >= 99
    d.stop(signal.SIGKILL)
    for ifname in [host.uplink.host_if] + [c.host_if for c in host.containers]:
        assert native.tcx_query(xdp.ifindex_of(ifname), ifname) == [], f"TC program left on {ifname}"
    d2 = Daemon(host, tmp_path)
    udp_echo(host, 7007, 100, seed=6)
    assert d2.call("status")["high_path"]["decap"] >= 100  # type: ignore[index]
    assert d2.stop() == 0
    nothing_left(host, tmp_path)


def test_a_generic_mode_uplink_takes_the_remotes_gso_packets_whole(host: OverlayHost, tmp_path: Path) -> None:
    """uplink.xdp_mode = "skb": the classifier in generic mode on the uplink (the containers'
    veths stay native), reported in status; a remote's TCP stream arrives in 64 KB GSO packets,
    each delivered whole; kill -9 leaves nothing and a restart serves again."""
    from test_overlay_e2e import tcp_transfer

    text = config_text(host, tmp_path).replace("[uplink]\n", '[uplink]\nxdp_mode = "skb"\n', 1)
    (tmp_path / "prism.toml").write_text(text)
    d = Daemon(host, tmp_path)
    up = xdp.attached(host.uplink.host_if)
    assert up is not None and up.mode == native.lib.XDP_ATTACHED_SKB
    assert all(getattr(xdp.attached(c.host_if), "mode", None) == native.lib.XDP_ATTACHED_DRV for c in host.containers)
    assert d.call("status")["xdp"] == {"uplink": "skb", "containers": "native", "multi_buffer": True}
    c1 = host.containers[1]
    size = 20 * 1024 * 1024
    n, sent, got = tcp_transfer(c1.ns, c1.ip, host.remote_ns, size)
    assert (n, got) == (size, sent)
    totals = d.call("stats")["totals"]  # type: ignore[index]
    assert totals["stages"]["agg_in"] > 100 and totals["stages"]["drop_aggregate"] == 0
    mb = totals["multi_buffer"]
    # Most came in several 4 KB parts; a short aggregate fits one frame (agg_in counts it, not these).
    assert mb["rx_multibuf"] > 100 and mb["rx_multibuf_parts"] > 4 * mb["rx_multibuf"]
    assert "multi-buffer packets from the uplink" in d.ctl("stats").stdout
    d.stop(signal.SIGKILL)
    assert xdp.attached(host.uplink.host_if) is None
    d2 = Daemon(host, tmp_path)
    n, sent, got = tcp_transfer(c1.ns, c1.ip, host.remote_ns, size)
    assert (n, got) == (size, sent)
    assert d2.stop() == 0
    nothing_left(host, tmp_path)


def test_container_tcp_leaves_the_uplink_in_gso_packets(host: OverlayHost, tmp_path: Path) -> None:
    """The default forwarding.uplink_delivery on this kernel: prism_gso_encap on the uplink's tcx
    egress, reported in status; a container's TCP stream leaves merged and arrives intact; kill -9
    takes the link along and a restart serves again; "xsk" sends frame by frame, with no program.
    The remote is the second VTEP (a first one, never answered, takes slot 0), so a merged packet
    reaches it only if its mark names the right slot."""
    from test_overlay_e2e import tcp_transfer

    decoy = f'[[vtep]]\nip = "10.201.0.250"\nvni = {host.vni}\nmac = "02:00:00:00:00:fa"\n\n[[vtep]]'
    (tmp_path / "prism.toml").write_text(config_text(host, tmp_path).replace("[[vtep]]", decoy, 1))
    d = Daemon(host, tmp_path)
    uplink = xdp.ifindex_of(host.uplink.host_if)
    assert len(native.tcx_query(uplink, host.uplink.host_if, egress=True)) == 1
    status = d.call("status")["uplink_delivery"]  # type: ignore[index]
    assert status["method"] == "packet" and status["encap"] == 0
    size = 20 * 1024 * 1024
    n, sent, got = tcp_transfer(host.remote_ns, host.remote_overlay_ip, host.containers[1].ns, size)
    assert (n, got) == (size, sent)
    stages = d.call("stats")["totals"]["stages"]  # type: ignore[index]
    status = d.call("status")["uplink_delivery"]  # type: ignore[index]
    assert stages["gso_out_packets"] > 50 and stages["gso_out_segments"] > 4 * stages["gso_out_packets"]
    assert status["encap"] == stages["gso_out_packets"] and status["no_vtep"] == status["failed"] == 0
    d.stop(signal.SIGKILL)
    assert native.tcx_query(uplink, host.uplink.host_if, egress=True) == []
    d2 = Daemon(host, tmp_path)
    n, sent, got = tcp_transfer(host.remote_ns, host.remote_overlay_ip, host.containers[1].ns, size)
    assert (n, got) == (size, sent)
    assert d2.stop() == 0
    nothing_left(host, tmp_path)

    (tmp_path / "prism.toml").write_text(config_text(host, tmp_path, '[forwarding]\nuplink_delivery = "xsk"\n'))
    d3 = Daemon(host, tmp_path)
    assert native.tcx_query(uplink, host.uplink.host_if, egress=True) == []
    n, sent, got = tcp_transfer(host.remote_ns, host.remote_overlay_ip, host.containers[1].ns, size)
    assert (n, got) == (size, sent)
    assert d3.call("status")["uplink_delivery"]["method"] == "xsk"  # type: ignore[index]
    assert d3.call("stats")["totals"]["stages"]["gso_out_packets"] == 0  # type: ignore[index]
    assert d3.stop() == 0
    nothing_left(host, tmp_path)


def test_sighup_reloads_the_rules(host: OverlayHost, daemon: Daemon) -> None:
    def reloads() -> dict[str, object]:
        return daemon.call("status")["reloads"]  # type: ignore[index,no-any-return]

    assert reloads() == {"ok": 0, "refused": 0, "last_error": None}
    daemon.config.write_text(config_text(host, daemon.tmp, rules="ports = [7000, 8000]\ndscp = [46]"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads()["ok"] == 1, "the reload is done")
    assert daemon.call("rules") == {"port": {"7000": 1, "8000": 1}, "dscp": {"46": 1}, "vni": {}}
    daemon.config.write_text("[uplink\n")  # broken: refused, rules kept, daemon runs on
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: reloads()["refused"] == 1, "the broken reload is refused")
    done = reloads()
    assert done["ok"] == 1 and f"{daemon.config}: not valid TOML" in str(done["last_error"]), done
    assert daemon.proc.poll() is None and daemon.call("rules")["port"] == {"7000": 1, "8000": 1}  # type: ignore[index]
    assert "refused=1" in daemon.ctl("status").stdout


def test_without_the_lab_its_commands_say_what_is_missing() -> None:
    """The venv the daemon runs from here has none of the lab's packages: the lab's
    commands say so in one line (and the daemon's tests passing in it show the daemon needs none)."""
    for argv in (["topo", "show"], ["inject", "--high", "7000"]):
        r = subprocess.run([*PRISM, *argv], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, r.stderr
        line = f"prism-xdp {argv[0]}: needs the lab extra: pip install prism_xdp[lab] (missing: "
        assert r.stderr.startswith(line) and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.rstrip()[len(line):-1] in LAB_ONLY, r.stderr


@pytest.mark.parametrize("mistake,message", [
    ('[uplink]\ninterface = "pxt-none"\n', "uplink.interface: no interface 'pxt-none'"),
    ('[uplink]\ninterface = "eth0"\nqueues = 0\n', "uplink.queues: must be in 1..64"),
    ('[uplink]\ninterface = "eth0"\n[scheduler]\nmode = "fast"\n', "scheduler.mode: must be one of"),
])
def test_bad_config_is_refused_before_anything_is_attached(tmp_path: Path, mistake: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(mistake + f'[control]\nsocket = "{tmp_path}/ctl.sock"\npid_file = "{tmp_path}/p.pid"\n')
    r = subprocess.run([*PRISM, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert xdp.attached("eth0") is None
    assert not (tmp_path / "ctl.sock").exists() and not (tmp_path / "p.pid").exists()


def test_garbage_and_strangers_on_the_control_socket(host: OverlayHost, tmp_path: Path) -> None:
    # A directory others may enter, so that a non-root process can reach the socket file.
    sock_dir = Path(tempfile.mkdtemp(prefix="pxt-ctl-"))
    sock_dir.chmod(0o755)
    daemon = Daemon(host, tmp_path, socket_dir=sock_dir)
    try:
        garbage_and_strangers(host, daemon)
    finally:
        assert daemon.stop() == 0
        sock_dir.rmdir()  # empty again: the daemon removed its socket


def garbage_and_strangers(host: OverlayHost, daemon: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(daemon.socket))
        f = s.makefile("rb")
        for junk in (b"hello\n", b'{"cmd": "rule-add", "kind": "port"}\n', b"\xff\x00\x01\n", b"[]\n"):
            s.sendall(junk)
            reply = json.loads(f.readline())
            assert reply["ok"] is False and reply["error"]
        s.sendall(b"x" * 70000 + b"\n")
        assert "longer than" in json.loads(f.readline())["error"]
    assert daemon.call("rules") == {"port": {"7000": 1}, "dscp": {}, "vni": {}}
    assert ping(host.remote_ns, host.containers[0].ip) == 3
    assert oct(os.stat(daemon.socket).st_mode & 0o777) == "0o600"
    # A non-root peer that gets past the file mode is still refused by its credentials.
    os.chmod(daemon.socket, 0o666)
    stranger = textwrap.dedent(f"""
        import os, socket
        os.setgid(65534)
        os.setuid(65534)
        s = socket.socket(socket.AF_UNIX)
        s.connect({str(daemon.socket)!r})
        reply = s.makefile()
        try:
            s.sendall(b'{{"cmd": "rules-clear"}}\\n')
        except OSError:
            pass  # refused and closed before the request went out
        print(reply.readline())
    """)
    child = subprocess.run([sys.executable, "-c", stranger], capture_output=True, text=True, timeout=10)
    assert "root only" in child.stdout, child.stderr
    assert daemon.call("rules") == {"port": {"7000": 1}, "dscp": {}, "vni": {}}


def test_prometheus_endpoint(host: OverlayHost, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "prism.toml").write_text(config_text(host, tmp_path, extra=f'prometheus = "127.0.0.1:{port}"'))
    d = Daemon(host, tmp_path)
    try:
        assert ping(host.remote_ns, host.containers[0].ip) == 3
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "prism_xdp_stage_packets_total" in text and 'prism_xdp_mode_info{mode="batch"} 1' in text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert fams["prism_xdp_stage_packets"].type == "counter" and fams["prism_xdp_frames"].type == "gauge"
        decap = {s.labels["counter"]: s.value for s in fams["prism_xdp_stage_packets"].samples}["decap_in"]
        assert decap >= 3  # the pings
        lat = fams["prism_xdp_latency_seconds"]
        assert lat.type == "histogram"
        low = [s for s in lat.samples if s.labels["class"] == "low" and s.labels["from"] == "xdp"]
        buckets = [s.value for s in low if s.name.endswith("_bucket")]
        [count] = [s.value for s in low if s.name.endswith("_count")]
        [total] = [s.value for s in low if s.name.endswith("_sum")]
        assert count >= 3 and buckets[-1] == count and buckets == sorted(buckets) and 0 < total < count
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).status == 200
    finally:
        assert d.stop() == 0
    nothing_left(host, tmp_path)


def test_two_queues_two_worker_processes(testbed: Testbed, tmp_path: Path) -> None:
    host = create_overlay_host(testbed, PREFIX, containers=1, queues=2)
    text = config_text(host, tmp_path).replace("[uplink]\n", "[uplink]\nqueues = 2\n")
    (tmp_path / "prism.toml").write_text(text)
    d = Daemon(host, tmp_path)
    try:
        assert ping(host.remote_ns, host.containers[0].ip) == 3
        c = host.containers[0]
        for sport in range(40000, 40032):  # flows hash onto both of the remote's transmit queues
            r = run_in(host.remote_ns, [sys.executable, "-c",
                                        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                                        f"s.bind(('{host.remote_overlay_ip}', {sport})); "
                                        f"[s.sendto(b'x' * 32, ('{c.ip}', 9000)) for _ in range(5)]"],
                       capture_output=True, timeout=10)
            assert r.returncode == 0
        stats = d.call("stats")
        per_queue = {q: s["stages"]["decap_in"] for q, s in stats["queues"].items()}  # type: ignore[index]
        assert set(per_queue) == {"0", "1"} and all(n > 0 for n in per_queue.values()), per_queue
        assert len(children(d.proc.pid)) == 2  # one worker process per queue
        # MLD snooping's table is one for both workers: learned in a worker, read by the daemon
        deadline = time.monotonic() + 5
        while d.call("status")["snooping"]["groups"] < 1 and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.2)
        snooping = d.call("status")["snooping"]
        assert snooping["enabled"] and snooping["groups"] >= 1 and snooping["reports"] >= 1, snooping  # type: ignore[index]
        assert d.call("stats")["totals"]["mld"]["queries"] >= 1  # type: ignore[index]
    finally:
        assert d.stop() == 0
    for ifname in (host.uplink.host_if, host.containers[0].host_if):
        assert xdp.attached(ifname) is None


def test_a_dead_worker_stops_the_daemon_cleanly(host: OverlayHost, tmp_path: Path) -> None:
    d = Daemon(host, tmp_path)
    [worker] = children(d.proc.pid)
    os.kill(worker, signal.SIGKILL)
    assert d.proc.wait(20) == 1  # noticed, reported, and everything removed in order
    nothing_left(host, tmp_path)


def test_busy_poll_socket_options(host: OverlayHost, tmp_path: Path) -> None:
    text = config_text(host, tmp_path).replace("[control]", "[scheduler]\nbusy_poll_usecs = 50\nbusy_poll_budget = 32\n\n[control]")
    (tmp_path / "prism.toml").write_text(text)
    d = Daemon(host, tmp_path)
    try:
        assert ping(host.remote_ns, host.containers[0].ip) == 3 and ping(host.containers[1].ns, host.containers[0].ip) == 3
    finally:
        assert d.stop() == 0
    nothing_left(host, tmp_path)


def test_statistics_hammered_during_traffic_change_nothing(host: OverlayHost, tmp_path: Path) -> None:
    """ctl stats, top and /metrics at full speed while a UDP echo and a TCP transfer run: every
    payload arrives once and intact, every accounting snapshot is sane, and it balances after."""
    from test_overlay_e2e import tcp_transfer, udp_echo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "prism.toml").write_text(config_text(host, tmp_path, extra=f'prometheus = "127.0.0.1:{port}"'))
    d = Daemon(host, tmp_path)
    stop = threading.Event()
    snapshots: list[dict[str, int]] = []
    calls = {"stats": 0, "metrics": 0}

    def hammer_stats() -> None:
        with ControlClient(str(d.socket)) as c:
            while not stop.is_set():
                snapshots.append(c.call("stats")["queues"]["0"]["frames"])
                calls["stats"] += 1

    def hammer_metrics() -> None:
        while not stop.is_set():
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            calls["metrics"] += 1

    threads = [threading.Thread(target=hammer_stats), threading.Thread(target=hammer_metrics)]
    top = subprocess.Popen([*PRISM, "top", "--socket", str(d.socket), "--interval", "0.01", "--count", "100000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    c1 = host.containers[1]
    for t in threads:
        t.start()
    try:
        udp_echo(host, 7011, 2000, seed=3)  # lost: timeout; duplicated or corrupted: a wrong reply
        size = 20 * 1024 * 1024
        n, sent, got = tcp_transfer(c1.ns, c1.ip, host.remote_ns, size)
        assert (n, got) == (size, sent)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        top.terminate()
        top.wait(10)
    assert calls["stats"] > 20 and calls["metrics"] > 20 and top.returncode is not None
    frames = snapshots[0]["frames"]
    assert all(0 <= s[k] <= frames for s in snapshots for k in ("fill_ring", "rx_ring", "tx_ring", "comp_ring"))
    deadline = time.monotonic() + 3
    while True:  # idle now: frames come back from the kernel's transmit path
        final = d.call("stats")["queues"]["0"]["frames"]  # type: ignore[index]
        in_tx = final["tx_ring"] + final["comp_ring"] + final["kernel_tx_held"]
        if final["batches"] == 0 and in_tx == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    places = ("pool", "fill_ring", "rx_ring", "kernel_rx_held", "batches", "tx_ring", "comp_ring", "kernel_tx_held")
    assert sum(final[k] for k in places) == final["frames"]
    assert final["batches"] == 0 and final["tx_ring"] == 0 and final["kernel_tx_held"] == 0
    assert d.stop() == 0
    nothing_left(host, tmp_path)


def test_classes_2_and_3_are_real_or_refused(host: OverlayHost, tmp_path: Path) -> None:
    """Two classes (the default): a class3 rule is refused, naming the setting; four: class2 and
    class3 traffic is steered to sockets of its own and measured under its own name."""
    d = Daemon(host, tmp_path)
    refused = d.ctl("rule", "add", "port", "9000", "class3")
    assert refused.returncode != 0 and "class3 needs scheduler.classes = 4" in refused.stderr + refused.stdout
    assert d.call("rules") == {"port": {"7000": 1}, "dscp": {}, "vni": {}}
    assert d.stop() == 0
    four = tmp_path / "four"
    four.mkdir()
    (four / "prism.toml").write_text(config_text(host, four, extra="\n[scheduler]\nclasses = 4\n",
                                                 rules='ports = { "9000" = "class3", "9001" = "class2" }'))
    d = Daemon(host, four)
    try:
        assert d.call("status")["classes"] == ["low", "high", "class2", "class3"]  # type: ignore[index]
        send_udp(host, 9000, 30)
        send_udp(host, 9001, 20)
        stats = d.call("stats")["totals"]  # type: ignore[index]
        assert stats["steer"]["steered"]["class3"] >= 30 and stats["steer"]["steered"]["class2"] >= 20
        assert stats["latency"]["class3"]["latency_us"]["count"] >= 30
        assert stats["latency"]["class2"]["latency_us"]["count"] >= 20
        assert "class3" in d.ctl("stats").stdout
    finally:
        assert d.stop() == 0
    nothing_left(host, four)


def test_mode_switches_across_two_queues_lose_and_reorder_nothing(testbed: Testbed, tmp_path: Path) -> None:
    """100 switches, vanilla/batch/sync in turn, while 16 flows spread over both queues: every
    worker holds, the steering flips once, every worker resumes; no flow loses or reorders."""
    host = create_overlay_host(testbed, PREFIX, containers=1, queues=2)
    text = config_text(host, tmp_path, rules="ports = [9000, 9001, 9002, 9003]")
    (tmp_path / "prism.toml").write_text(text.replace("[uplink]\n", "[uplink]\nqueues = 2\n"))
    d = Daemon(host, tmp_path)
    c = host.containers[0]
    ports = ",".join(str(p) for p in range(9000, 9016))  # some HIGH, most LOW; hashed onto both queues
    count = 1500
    recv = popen_in(c.ns, [sys.executable, "-m", "prism_xdp.lab.udpflows", "recv", "--bind", c.ip, "--ports", ports,
                                 "--expect", str(16 * count), "--timeout", "5"], stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        assert recv.stdout.readline().strip() == "ready"
        send = popen_in(host.remote_ns, [sys.executable, "-m", "prism_xdp.lab.udpflows", "send", "--dst", c.ip,
                                               "--ports", ports, "--count", str(count), "--burst", "16",
                                               "--gap-us", "1000"], stdout=subprocess.PIPE, text=True)
        modes = ["vanilla", "batch", "sync"]
        for i in range(100):
            assert d.call("mode-set", mode=modes[i % 3]) == {"mode": modes[i % 3]}
        assert send.wait(60) == 0
        out, _ = recv.communicate(timeout=30)
        result = json.loads(out)
        flows = {p: result[p] for p in ports.split(",")}
        assert all(f["received"] == count for f in flows.values()), flows
        assert all(f["out_of_order"] == 0 for f in flows.values()), result.get("late")
        per_queue = {q: s["stages"]["decap_in"] for q, s in d.call("stats")["queues"].items()}  # type: ignore[index]
        assert all(n > 0 for n in per_queue.values()), per_queue  # both queues carried flows
        assert all(s["sched"]["switches"] >= 99 for s in d.call("stats")["queues"].values())  # type: ignore[index]
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
        assert d.stop() == 0
    nothing_left(host, tmp_path)
