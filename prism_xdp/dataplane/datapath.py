"""datapath.py - one worker's data path on one queue: the XDP programs, the sockets on the uplink and on every container veth, one UMEM, the overlay stages, and the loop that drives them."""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import itertools
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from prism_xdp.dataplane import hostinfo, native
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.checksum import ChecksumPolicy
from prism_xdp.dataplane.checksum import resolve as resolve_checksum
from prism_xdp.dataplane.classes import CLASS_NAMES
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.gsoencap import check_uplink_delivery, resolve_uplink_delivery
from prism_xdp.dataplane.kernelpath import check_high_path
from prism_xdp.dataplane.ops import DatapathOps, Source
from prism_xdp.dataplane.overlay import UPLINK_PORT, ContainerSpec, Overlay, VtepSpec
from prism_xdp.dataplane.pktsock import Delivery, open_packet_socket
from prism_xdp.dataplane.programs import Programs
from prism_xdp.dataplane.sched import Engine, Mode, check_batch
from prism_xdp.dataplane.snooping import Snooping, SnoopingParams
from prism_xdp.dataplane.steer import Steering
from prism_xdp.dataplane.umem import Umem, UmemParams
from prism_xdp.dataplane.xdp import AttachMode
from prism_xdp.dataplane.xsk import XskParams, XskSocket

POLL_MODES = ("busy", "blocking")
BLOCK_MS = 100  # a blocked worker still notices a stop or a request this often
MULTIBUF_COUNTERS = ("rx_multibuf", "rx_multibuf_parts")


@dataclass(frozen=True)
class DatapathParams:
    """How one worker is built; the daemon's config maps onto this."""

    uplink: str
    queue: int = 0
    vxlan_port: int = native.PRISM_VXLAN_PORT_DEFAULT
    local_ip: str | None = None  # default: the uplink's first IPv4 address
    uplink_mtu: int | None = None  # default: the uplink's MTU
    ttl: int = 64
    nclass: int = 2  # sockets per device: LOW and HIGH
    batch_size: int = 64
    # PRISM modes: LOW batches while HIGH traffic is active (0: batch_size). Each
    # LOW TX kick then hands the kernel less work for HIGH to wait behind; LOW
    # loses some throughput while HIGH flows (docs/benchmarks.md, issue 17).
    low_batch_with_high: int = 4  # with GRO delivery; 8 before it (docs/benchmarks.md)
    # PRISM modes: up to this many LOW TCP segments per port wait for the next (cut)
    # batches' to leave as one GSO packet ("the hold", prism_api.h); 0: off.
    low_gro_hold: int = 0
    uplink_fill: int = 2048  # frames kept on the uplink's fill ring
    container_fill: int = 256  # frames kept on each container veth's fill ring
    frame_size: int = 2048
    xsk: XskParams = field(default_factory=XskParams)
    attach_mode: AttachMode = AttachMode.NATIVE
    learn: bool = True
    fdb_ageing_s: int = 300  # learned remote MACs age out, as in the kernel bridge
    fdb_max_per_vtep: int = 4096  # live learned MACs per VTEP: a flood of source MACs cannot fill the table
    mode: str = "batch"  # vanilla | batch | sync (scheduling; vanilla also steers all to class 0)
    poll: str = "busy"  # busy: spin; blocking: poll() when idle, no CPU while idle
    cpu: int | None = None  # pin the worker's thread to this CPU
    # XDP stamps each packet with the time it saw it, so latency includes the
    # wait on the RX ring; off saves a clock read per packet on the receiving
    # CPU (latency is then measured from the worker's poll).
    timestamps: bool = True
    # How containers' checksums are finished; None: decided for this kernel
    # and uplink (checksum.resolve("auto", "auto", uplink)).
    checksum: ChecksumPolicy | None = None
    # MLD snooping: an IPv6 group's frames reach the containers that joined it
    # only (None: flood them to every container of the VNI, as a bridge
    # without snooping does). The querier worker (one per daemon) sends the queries.
    snooping: SnoopingParams | None = field(default_factory=SnoopingParams)
    mld_querier: bool = True
    # How frames reach containers: a packet socket with TCP segments merged
    # into GSO packets (the default), or AF_XDP TX, one skb per frame.
    delivery: Delivery = field(default_factory=Delivery)
    # Where HIGH frames are finished: "daemon" (the scheduler of `mode`), or
    # "kernel": TC programs in the receiving softirq (kernelpath.py), an option.
    high_path: str = "daemon"
    # How frames leave on the uplink: "packet" merges a container's TCP
    # segments into GSO packets that prism_gso_encap encapsulates (gsoencap.py),
    # "xsk" sends every frame on the AF_XDP ring; "auto": "packet" where the
    # kernel has tcx hooks. With shared programs, theirs decides.
    uplink_delivery: str = "auto"

    def check(self) -> None:
        Mode.parse(self.mode)
        if self.poll not in POLL_MODES:
            raise ConfigError(f"poll must be one of {', '.join(POLL_MODES)}, not {self.poll!r}")
        check_batch(self.batch_size, self.low_batch_with_high)
        if not 1 <= self.nclass <= native.PRISM_NCLASS:
            raise ConfigError(f"nclass must be in 1..{native.PRISM_NCLASS}, not {self.nclass}")
        if not 0 <= self.queue < native.PRISM_MAX_QUEUES:
            raise ConfigError(f"queue must be in 0..{native.PRISM_MAX_QUEUES - 1}, not {self.queue}")
        if not 1 <= self.fdb_ageing_s <= 1_000_000:
            raise ConfigError(f"fdb_ageing_s must be in 1..1000000, not {self.fdb_ageing_s}")
        if not 1 <= self.fdb_max_per_vtep <= 8192:
            raise ConfigError(f"fdb_max_per_vtep must be in 1..8192, not {self.fdb_max_per_vtep}")
        if not 1 <= self.ttl <= 255:
            raise ConfigError(f"ttl must be in 1..255, not {self.ttl}")
        if self.snooping is not None:
            self.snooping.check()
        self.delivery.check()
        self.delivery.check_with_uplink(self.attach_mode is AttachMode.SKB)
        check_high_path(self.high_path, self.attach_mode is AttachMode.SKB)
        check_uplink_delivery(self.uplink_delivery)
        if self.cpu is not None and self.cpu not in hostinfo.online_cpus():
            raise ConfigError(f"cpu {self.cpu} is not available to this process")
        for name in ("uplink_fill", "container_fill"):
            value = getattr(self, name)
            if not 1 <= value <= 1 << 16:
                raise ConfigError(f"{name} must be in 1..65536, not {value}")


class Datapath:
    """Everything one worker owns, built in order and torn down in reverse.

    Frames: one UMEM; the uplink and every container veth each have a fill
    and completion ring pair on it. A frame received on the uplink leaves on
    a container veth (decap) and the other way round (encap) without a copy.
    """

    def __init__(self, params: DatapathParams, containers: list[ContainerSpec],
                 vteps: list[VtepSpec], programs: Programs | None = None,
                 snooping: Snooping | None = None) -> None:
        """programs: shared with other queues' workers (the daemon attaches them once all
        workers exist); without it the Datapath makes, attaches and removes its own.
        snooping: the daemon's MLD table, shared likewise; without it (and with
        params.snooping) the Datapath has its own."""
        params.check()
        for i, c in enumerate(containers):
            c.check(f"containers[{i}]")
        for i, v in enumerate(vteps):
            v.check(f"vteps[{i}]")
        self.params = params
        self.containers = list(containers)
        self.vteps = list(vteps)
        self._own_programs = programs is None
        self._programs = programs
        # Generic-mode XDP on the uplink keeps the remote's GSO packets whole:
        # they come as multi-buffer packets (docs/benchmarks.md, issue 14).
        self.multi_buffer = params.attach_mode is AttachMode.SKB
        self.snooping = snooping
        self.queries = 0  # MLD general queries sent
        self._undo = contextlib.ExitStack()
        try:
            self._build()
        except BaseException:
            self._undo.close()
            raise

    def _build(self) -> None:
        p = self.params
        local_ip = p.local_ip or hostinfo.ipv4_address(p.uplink)
        ipaddress.IPv4Address(local_ip)
        mtu = p.uplink_mtu or hostinfo.link_mtu(p.uplink)
        frames = 2 * p.uplink_fill + len(self.containers) * 2 * p.container_fill + 8 * p.batch_size + 1024
        ring = max(2048, 1 << (p.uplink_fill - 1).bit_length())
        self.umem = Umem(UmemParams(frame_count=frames, frame_size=p.frame_size,
                                    fill_size=ring, comp_size=ring,
                                    multi_buffer=self.multi_buffer))
        self._undo.callback(self._close_umem)

        if self._programs is None:
            uplink_gso = resolve_uplink_delivery(p.uplink_delivery)[0] == "packet"
            self._programs = Programs(p.vxlan_port, p.nclass, Mode.parse(p.mode) is Mode.VANILLA,
                                      self.containers, timestamps=p.timestamps,
                                      kernel_high=p.high_path == "kernel", ttl=p.ttl,
                                      multi_buffer=self.multi_buffer, uplink_gso=uplink_gso)
            self._undo.callback(self._programs.close)
        self.programs = self._programs
        self.steer = self.programs.uplink
        self.egress = self.programs.egress

        checksum = p.checksum or resolve_checksum("auto", "auto", p.uplink, self.umem.tx_metadata)
        uplink_mac = hostinfo.link_mac(p.uplink)
        if self.snooping is None and p.snooping is not None:
            self.snooping = Snooping(p.snooping)
            self._undo.callback(self.snooping.close)  # after the overlay, which points to it
        self.overlay = Overlay(self.umem, p.vxlan_port, uplink_mac, local_ip,
                               mtu, p.ttl, p.learn, checksum, p.fdb_ageing_s, p.fdb_max_per_vtep)
        self._undo.callback(self.overlay.close)
        if self.snooping is not None:
            self.overlay.set_snooping(self.snooping.ptr)
            self._query_frame = self.snooping.query_frame(bytes.fromhex(uplink_mac.replace(":", "")))

        self.sources: list[Source] = []
        uplink_socks = self._sockets(p.uplink, self.steer,
                                     replace(p.xsk, multi_buffer=True) if self.multi_buffer else p.xsk)
        self.overlay.set_uplink(uplink_socks, p.uplink)
        self.sources += [Source(UPLINK_PORT, c, s, True) for c, s in enumerate(uplink_socks)]

        for spec, eg in zip(self.containers, self.egress, strict=True):
            socks = self._sockets(spec.host_if, eg, p.xsk)
            port = self.overlay.add_container(socks, spec.vni, spec.mac, spec.name)
            self.sources += [Source(port, c, s, False) for c, s in enumerate(socks)]
            if p.delivery.method == "packet":
                pkt = open_packet_socket(spec.host_if)
                self._undo.callback(pkt.close)
                self.overlay.set_packet_delivery(port, pkt.fileno(), p.delivery.gro_segments)

        gso = self.programs.gso
        for vtep in self.vteps:
            mac = vtep.mac or hostinfo.resolve_mac(p.uplink, vtep.ip)
            index = self.overlay.add_vtep(vtep.vni, vtep.ip, mac)
            if gso is not None:
                gso.set_vtep(index, vtep.vni, vtep.ip, mac, local_ip, uplink_mac, p.vxlan_port, p.ttl)
        if gso is not None:
            # Not past the device's qdisc: its egress hook is where merged packets get their tunnel.
            pkt = open_packet_socket(p.uplink, qdisc_bypass=False)
            self._undo.callback(pkt.close)
            self.overlay.set_packet_delivery(UPLINK_PORT, pkt.fileno(), p.delivery.gro_segments)

        # Frames first, programs last: a program steers to sockets that
        # already have frames to receive into.
        self.service()
        if self._own_programs:
            self.programs.attach(p.uplink, p.attach_mode)
            # Undone first: no new packets reach the sockets while they close.
            self._undo.callback(self.programs.detach)

        self.ops = DatapathOps(self.sources, self.overlay, p.batch_size, self.service, self.set_vanilla,
                               hold=p.low_gro_hold)
        self._undo.callback(self.ops.close)
        self.engine = Engine(self.ops, p.mode, p.batch_size, low_batch_with_high=p.low_batch_with_high)
        self._requests: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._poller = select.poll()
        for src in self.sources:
            self._poller.register(src.xsk.fd, select.POLLIN)

    def _sockets(self, ifname: str, steer: Steering, params: XskParams) -> list[XskSocket]:
        socks = []
        for cls in range(self.params.nclass):
            sock = XskSocket(self.umem, ifname, self.params.queue, params)
            self._undo.callback(sock.close)
            sock.set_rx_stamped(True)  # the shared programs put metadata in front of every packet
            steer.add_socket(sock, cls)
            # A closed socket leaves its XSKMAP slot by itself; saying so
            # explicitly keeps a shared program clean while other queues run.
            self._undo.callback(self._unsteer, steer, self.params.queue, cls)
            socks.append(sock)
        return socks

    @staticmethod
    def _unsteer(steer: Steering, queue: int, cls: int) -> None:
        with contextlib.suppress(Exception):
            steer.remove_socket(queue, cls)

    def _close_umem(self) -> None:
        for sock in list(self.umem.sockets):
            sock.close()
        self.umem.close()

    # the stages, for the schedulers ------------------------------------------
    def service(self) -> int:
        p = self.params
        return self.overlay.service(p.uplink_fill, p.container_fill)

    def run(self, stop: threading.Event) -> None:
        """Loop until stop is set. busy: spin; blocking: sleep in poll() while nothing arrives."""
        if self.params.cpu is not None:
            # A worker that migrates between CPUs hands its transmitted frames
            # to different per-CPU backlogs, which the kernel may deliver out of
            # order; pinned, a flow stays in order (and caches stay warm).
            os.sched_setaffinity(0, {self.params.cpu})
        blocking = self.params.poll == "blocking"
        step, requests, engine = self.engine.step, self._requests, self.engine
        querier = self._start_querier()
        try:
            while not stop.is_set():
                if not requests.empty():
                    while not requests.empty():
                        requests.get_nowait()()
                if step():
                    continue
                if blocking and not engine.sched.in_flight() and not self.ops.pending():
                    self._poller.poll(BLOCK_MS)
        finally:
            querier.set()
        # Stopped: what was taken off a ring leaves, and what the kernel has
        # sent comes back to the pool, so no frame stays in a batch or on a
        # completion ring.
        engine.sched.drain()
        self.ops.flush_tx()
        self.ops.service(now=True)

    # MLD querier ----------------------------------------------------------
    def _start_querier(self) -> threading.Event:
        """A thread that asks the worker's loop for a general query at start, again a
        moment later, then every query interval; stops when the returned event is set."""
        done = threading.Event()
        if self.snooping is None or not self.params.mld_querier or not self.containers:
            return done
        p = self.snooping.params
        delays = itertools.chain(p.schedule(), itertools.repeat(float(p.query_interval_s)))

        def timer() -> None:
            for delay in delays:
                if done.wait(delay):
                    return
                self.call_soon(self.send_query)

        threading.Thread(target=timer, name="prism-mld-querier", daemon=True).start()
        return done

    def send_query(self) -> int:
        """On the worker's thread: an MLD general query to every container; copies sent.
        The first one starts pruning once the containers had time to answer."""
        if self.snooping is None:
            raise ValueError("MLD snooping is off")
        batch = Batch(len(self.containers) + 1)
        self.overlay.inject(self._query_frame, batch)
        sent = self.overlay.deliver(native.PRISM_CLASS_LOW, batch)
        if self.queries == 0:
            self.snooping.queried(time.monotonic_ns())
        self.queries += 1
        return sent

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run fn on the worker's thread between two steps (rings are single-threaded)."""
        self._requests.put(fn)

    def run_on_worker(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run fn on the running worker's thread and wait for its result (or its exception)."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def task() -> None:
            try:
                box["result"] = fn()
            except Exception as exc:
                box["error"] = exc
            done.set()

        self.call_soon(task)
        if not done.wait(timeout):
            raise TimeoutError("the worker thread did not answer")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    # control -----------------------------------------------------------------
    def set_vanilla(self, on: bool) -> None:
        self.programs.set_vanilla(on)

    @property
    def mode(self) -> Mode:
        return self.engine.mode

    def switch_mode(self, mode: Mode | str) -> None:
        """Change the scheduling mode; call on the worker's thread (or through call_soon)."""
        self.engine.switch(mode)

    def set_port(self, port: int, cls: int = native.PRISM_CLASS_HIGH) -> None:
        """A port rule for both directions; measurement records the class XDP puts in each packet."""
        self.steer.set_port(port, cls)

    def set_dscp(self, dscp: int, cls: int = native.PRISM_CLASS_HIGH) -> None:
        self.steer.set_dscp(dscp, cls)

    def latency(self) -> dict[str, Any]:
        """Per class (what the rules say, whatever socket carried it), in µs:
        latency_us from XDP to the TX kick (RX ring wait included),
        pipeline_us from the RX poll to the TX kick; deliver batch sizes."""
        out = {}
        for cls in range(self.params.nclass):
            h, sizes = self.overlay.histogram(cls)
            hp, _ = self.overlay.histogram(cls, from_poll=True)
            out[CLASS_NAMES[cls]] = {"latency_us": h.summary(), "pipeline_us": hp.summary(),
                                       "batch_sizes": {f"{1 << i}+": n for i, n in enumerate(sizes) if n}}
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "queue": self.params.queue,
            "mode": self.engine.mode.value,
            "sched": self.engine.sched.stats.as_dict() | {"switches": self.engine.switches},
            "latency": self.latency(),
            "xsk": {f"{s.xsk.ifname}/{CLASS_NAMES[s.cls]}": s.xsk.statistics() for s in self.sources},
            "stages": self.overlay.counters(),
            "ports": self.overlay.port_counters(),
            "steer": self.steer.counters().as_dict(),
            "egress": {c.name: eg.counters().as_dict() for c, eg in zip(self.containers, self.egress, strict=True)},
            "frames": self.umem.account().as_dict(),
            "mld": self.mld_stats(),
            "multi_buffer": self.multi_buffer_stats(),
        }

    def multi_buffer_stats(self) -> dict[str, int]:
        """The uplink sockets' multi-buffer packets (uplink.xdp_mode = "skb") and their parts."""
        out = dict.fromkeys(MULTIBUF_COUNTERS, 0)
        for s in self.sources:
            if s.from_uplink:
                counters = s.xsk.counters()
                for k in MULTIBUF_COUNTERS:
                    out[k] += counters[k]
        return out

    def mld_stats(self) -> dict[str, Any]:
        """The snooping table's counters (daemon-wide: the table is shared) and this worker's queries."""
        if self.snooping is None:
            return {"snooping": False}
        return {"snooping": True, "queries": self.queries} | self.snooping.counters()

    def close(self) -> None:
        """Detach programs first (no new packets), then sockets, then memory."""
        self._undo.close()

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runner:
    """Runs a Datapath's loop on a thread until stopped (tests, tools).

    The C calls release the GIL, so other threads keep moving; with poll
    "blocking" the worker sleeps in poll() while nothing arrives.
    """

    def __init__(self, dp: Datapath) -> None:
        self.dp = dp
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="prism-worker", daemon=True)

    def _work(self) -> None:
        try:
            self.dp.run(self._stop)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> Runner:
        # Objects that exist now live as long as the worker: a full collection
        # need not walk them (a collection pauses every thread, this one too).
        gc.freeze()
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def cpu_seconds(self) -> float:
        """CPU time the worker thread has used so far (user + system)."""
        # The thread's own CPU clock; only while it runs (a finished thread's id is no longer valid).
        ident = self._thread.ident
        if ident is None or not self._thread.is_alive():
            raise RuntimeError("the worker thread is not running")
        return time.clock_gettime(time.pthread_getcpuclockid(ident))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
