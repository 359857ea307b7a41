"""offloads.py - interfaces' ethtool features read and set in their namespaces, so that a configuration can turn TX checksum offload off and put back exactly what was there."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from prism_xdp.lab.testhost.netns import run_in

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


def read(ifname: str, ns: str | None) -> dict[str, Feature]:
    return parse_features(run_in(ns, ["ethtool", "-k", ifname], check=True).stdout)


def set_features(ifname: str, ns: str | None, wanted: dict[str, bool]) -> None:
    if wanted:
        args = [x for name, on in sorted(wanted.items()) for x in (name, "on" if on else "off")]
        run_in(ns, ["ethtool", "-K", ifname, *args], check=True)


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
                self._saved.append((ifname, ns, read(ifname, ns)))
                run_in(ns, ["ethtool", "-K", ifname, "tx", "off"], check=True)
        except BaseException:
            self.restore()
            raise
        return self

    def restore(self) -> None:
        for ifname, ns, before in reversed(self._saved):
            set_features(ifname, ns, changes(before, read(ifname, ns)))
        self._saved = []

    def __exit__(self, *exc: object) -> None:
        self.restore()
