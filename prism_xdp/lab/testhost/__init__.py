"""prism_xdp.lab.testhost - test hosts in network namespaces, built for a test or a command and removed after.

Read from the bottom up, each module builds on the ones before it:

- netns.py: being inside a namespace: `inside(ns)`, `socket_in`, `run_in`, `popen_in`,
  `send_frame` (a raw frame past a veth's backpressure), `route(ns)` (a pyroute2 handle).
- links.py: one interface's queries and settings, in its namespace: `link_index`,
  `link_mac`, `link_exists`, `link_counter`; ethtool features (`set_tx_checksum`,
  `set_gro`, `TxChecksumOff`, which puts back what was there) and RPS (`set_rps`).
- testbed.py: `Testbed`: the namespaces, veths, VXLAN devices and bridges of one test or
  command, removed in reverse order; `tb.name(prefix, tag)` names them all (a fixed
  prefix, pxt for tests and pxd for `prism-xdp topo`, and a random suffix unless the
  testbed makes fixed names).
- uplink.py: `Uplink`, the pair host: the host's uplink veth with a remote namespace
  behind it (`Uplink.create(tb, prefix)`); the AF_XDP tests use it alone.
- overlay.py: `OverlayHost`, the overlay host: an Uplink whose remote has a kernel VXLAN
  device, and `Container`s as namespaces on veth pairs (`create_overlay_host`);
  `add_kernel_overlay` adds the kernel's own VXLAN + bridge path on the host.
- topo.py: the saved topology of `prism-xdp topo up|down|show|config`: an overlay host
  with fixed names that outlives the command, recorded in /run/prism-xdp/topo
  (`topo.up(TopoSpec(...))`, `topo.down(name)`, `topo.host_of(state)`).

Receiving from AF_XDP sockets in tests (`drain`) is prism_xdp.lab.rx.
"""

from prism_xdp.lab.testhost import topo
from prism_xdp.lab.testhost.links import (
    TxChecksumOff,
    link_counter,
    link_exists,
    link_index,
    link_mac,
    set_gro,
    set_rps,
    set_tx_checksum,
)
from prism_xdp.lab.testhost.netns import inside, popen_in, route, run_in, send_frame, socket_in
from prism_xdp.lab.testhost.overlay import (
    Container,
    OverlayHost,
    add_kernel_overlay,
    container_ip,
    create_overlay_host,
    set_offloads,
    tx_checksum_interfaces,
)
from prism_xdp.lab.testhost.testbed import Testbed
from prism_xdp.lab.testhost.topo import TopoSpec
from prism_xdp.lab.testhost.uplink import Uplink

__all__ = [
    "Container", "OverlayHost", "Testbed", "TopoSpec", "TxChecksumOff", "Uplink", "add_kernel_overlay",
    "container_ip", "create_overlay_host", "inside", "link_counter", "link_exists", "link_index", "link_mac",
    "popen_in", "route", "run_in", "send_frame", "set_gro", "set_offloads", "set_rps", "set_tx_checksum",
    "socket_in", "topo", "tx_checksum_interfaces",
]
