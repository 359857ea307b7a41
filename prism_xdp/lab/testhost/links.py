"""links.py - one interface's queries and settings, in its namespace: index, MAC, counters, ethtool features (TX checksum offload, GRO; set and put back as they were) and receive steering (RPS)."""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.lab.testhost.netns import route, run_in


def _index(ipr: Any, ifname: str, ns: str | None) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise OSError(errno.ENODEV, f"no interface {ifname} in {ns or 'root namespace'}")
    return int(found[0])


def link_index(ifname: str, ns: str | None = None) -> int:
    with route(ns) as ipr:
        return _index(ipr, ifname, ns)


def link_mac(ifname: str, ns: str | None = None) -> str:
    with route(ns) as ipr:
        return str(ipr.get_links(_index(ipr, ifname, ns))[0].get_attr("IFLA_ADDRESS"))


def link_exists(ifname: str, ns: str | None = None) -> bool:
    try:
        link_index(ifname, ns)
        return True
    except OSError:
        return False


def link_counter(ifname: str, ns: str | None, counter: str = "rx_packets") -> int:
    """One IFLA_STATS64 counter of an interface (rx_packets, tx_packets, rx_dropped, ...)."""
    with route(ns) as ipr:
        return int(ipr.get_links(_index(ipr, ifname, ns))[0].get_attr("IFLA_STATS64")[counter])


# ---- ethtool features ---------------------------------------------------------------

# `ethtool -k` prints these group names (from the old ioctl interface); `ethtool -K`
# does not take them. The features inside a group are listed on indented lines and
# are set by their own names, so restoring those restores the group.
LEGACY_GROUPS = frozenset({
    "rx-checksumming", "tx-checksumming", "scatter-gather", "tcp-segmentation-offload",
    "udp-fragmentation-offload", "generic-segmentation-offload", "generic-receive-offload",
    "large-receive-offload", "rx-vlan-offload", "tx-vlan-offload", "ntuple-filters", "receive-hashing",
})
_LINE = re.compile(r"^(\s*)([a-z0-9_-]+): (on|off)(?: \[(fixed|requested (?:on|off))\])?\s*$")


@dataclass(frozen=True)
class Feature:
    active: bool
    wanted: bool  # what was asked for: a feature can be wanted on but held off by another
    fixed: bool


def parse_features(text: str) -> dict[str, Feature]:
    """The settable features of `ethtool -k` output (group lines left out, see LEGACY_GROUPS)."""
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        indent, name, state, note = m.groups()
        if not indent and name in LEGACY_GROUPS:
            continue
        active = state == "on"
        wanted = note.endswith(" on") if note and note.startswith("requested") else active
        out[name] = Feature(active, wanted, note == "fixed")
    return out


def changes(before: dict[str, Feature], now: dict[str, Feature]) -> dict[str, bool]:
    """What to ask for so that `now` wants what `before` wanted (fixed features cannot change)."""
    return {name: f.wanted for name, f in before.items()
            if not f.fixed and name in now and now[name].wanted != f.wanted}


def read_features(ifname: str, ns: str | None) -> dict[str, Feature]:
    return parse_features(run_in(ns, ["ethtool", "-k", ifname], check=True).stdout)


def set_features(ifname: str, ns: str | None, wanted: dict[str, bool]) -> None:
    if wanted:
        args = [x for name, on in sorted(wanted.items()) for x in (name, "on" if on else "off")]
        run_in(ns, ["ethtool", "-K", ifname, *args], check=True)


def set_tx_checksum(ifname: str, ns: str | None, on: bool) -> None:
    """TX checksum offload of one interface (ethtool -K IF tx on|off).

    Stock veths leave TCP/UDP checksums to "hardware" (the pseudo-header
    seed only); prism_xdp finishes them (prism_xdp/dataplane/checksum.py). "tx off"
    is what AF_XDP data paths without that (Open vSwitch's) ask containers
    for; the bench measures the kernel path that way too, for comparison.
    """
    set_features(ifname, ns, {"tx": on})


def set_gro(ifname: str, ns: str | None, on: bool) -> None:
    """GRO of one interface. A veth receives frames redirected into it by XDP (the
    generator) only in NAPI mode: with an XDP program, or with GRO on."""
    set_features(ifname, ns, {"gro": on})


class TxChecksumOff:
    """TX checksum offload off on the given interfaces while inside, then every feature put
    back as it was wanted before (turning checksums off also holds back TSO; restoring the
    checksum features lets it come back)."""

    def __init__(self, links: Iterable[tuple[str, str | None]]) -> None:
        self.links = list(links)
        self._saved: list[tuple[str, str | None, dict[str, Feature]]] = []

    def __enter__(self) -> TxChecksumOff:
        try:
            for ifname, ns in self.links:
                self._saved.append((ifname, ns, read_features(ifname, ns)))
                set_tx_checksum(ifname, ns, False)
        except BaseException:
            self.restore()
            raise
        return self

    def restore(self) -> None:
        for ifname, ns, before in reversed(self._saved):
            set_features(ifname, ns, changes(before, read_features(ifname, ns)))
        self._saved = []

    def __exit__(self, *exc: object) -> None:
        self.restore()


# ---- receive steering ---------------------------------------------------------------

def check_rps_mask(mask: str, what: str = "container_rps") -> str:
    """A hex CPU mask as sysfs takes it (1, 3, ff), or ConfigError naming `what`."""
    if not re.fullmatch(r"[0-9a-fA-F]{1,16}", mask):
        raise ConfigError(f"{what}: must be a hex CPU mask such as 1 or 3, not {mask!r}")
    return mask


def set_rps(ifname: str, ns: str, mask: str) -> None:
    """Steer an interface's receive processing to the CPUs of a hex mask (RPS; "0" = off).

    A poll-mode data path transmits into a container from its worker's CPU,
    and the container's receive path would run there too, inside the TX kick;
    RPS moves it to the CPUs given. Needs the namespace's own sysfs, hence
    `ip netns exec`.
    """
    check_rps_mask(mask)  # it goes into a shell command line
    run_in(None, ["ip", "netns", "exec", ns, "sh", "-c",
                  f"echo {mask} > /sys/class/net/{ifname}/queues/rx-0/rps_cpus"], check=True)
