"""pktsock.py - a port's packet socket: delivery with a virtio-net header, so that TCP segments merged in C reach a container (or leave the uplink) as one GSO packet."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from prism_xdp.dataplane import native
from prism_xdp.dataplane.errors import ConfigError

DELIVERY = ("packet", "xsk")

# <linux/if_packet.h>; Python's socket module names neither.
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
SO_SNDBUFFORCE = 32  # <asm-generic/socket.h>
SNDBUF = 4 << 20  # room for a batch of 64 KB GSO packets while the container's stack takes them


@dataclass(frozen=True)
class Delivery:
    """How frames reach a container's veth.

    "packet": an AF_PACKET socket with PACKET_VNET_HDR; up to gro_segments
    consecutive TCP segments of a flow go as one GSO packet (1: none), as
    the kernel's GRO would hand them to the container (a deliver call in
    which nothing merges uses the AF_XDP ring, cheaper per frame). "xsk": the AF_XDP
    socket's TX ring, one skb per frame (MTU-sized segments only: a veth
    drops longer frames that are not GSO).
    """

    method: str = "packet"
    gro_segments: int = 64

    def check(self) -> None:
        if self.method not in DELIVERY:
            raise ConfigError(f"forwarding.delivery: must be one of {', '.join(DELIVERY)}, not {self.method!r}")
        if not 1 <= self.gro_segments <= native.PRISM_GRO_MAX_SEGS:
            raise ConfigError(f"forwarding.gro_segments: must be in 1..{native.PRISM_GRO_MAX_SEGS}, "
                              f"not {self.gro_segments}")

    def check_with_uplink(self, multi_buffer: bool) -> None:
        """Generic-mode XDP on the uplink brings a remote's GSO packets whole (up to 64 KB,
        multi-buffer); only a packet socket hands such a packet to a container."""
        if multi_buffer and self.method != "packet":
            raise ConfigError('uplink.xdp_mode = "skb" needs forwarding.delivery = "packet": the uplink then '
                              "brings 64 KB GSO packets, which AF_XDP's TX ring cannot send to a container")

    def describe(self) -> dict[str, object]:
        if self.method == "xsk":
            return {"method": "xsk", "how": "AF_XDP TX ring, one frame per skb", "gro_segments": 1}
        return {"method": "packet", "how": "AF_PACKET with a virtio-net header (GSO, CHECKSUM_PARTIAL)",
                "gro_segments": self.gro_segments}


def open_packet_socket(ifname: str, qdisc_bypass: bool = True) -> socket.socket:
    """A send-only packet socket on ifname (protocol 0: it receives nothing) that takes a
    virtio-net header in front of every message and skips the device's qdisc, as AF_XDP's
    TX does; without qdisc_bypass, its packets pass the device's egress hooks (the uplink's,
    where prism_gso_encap encapsulates)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        if qdisc_bypass:
            sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SNDBUF)
        sock.bind((ifname, 0))
    except OSError:
        sock.close()
        raise
    return sock
