"""snooping.py - MLD snooping for a daemon: the membership table its workers share, and the querier's schedule and frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prism_xdp.dataplane import mld, native
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.native import ffi

COUNTER_NAMES = tuple(name for name, _ in ffi.typeof("struct prism_mcast_counters").fields)
STARTUP_GAP_S = 1.0  # a second query after the first, in case a container missed it (RFC 3810's startup queries)
READY_MARGIN_MS = 500  # after the containers' longest answer delay, before pruning starts


@dataclass(frozen=True)
class SnoopingParams:
    """The querier's settings (RFC 3810 names); the kernel bridge's defaults but a 1 s response delay."""

    query_interval_s: int = 125
    max_response_ms: int = 1000
    robustness: int = 2
    max_per_port: int = 64  # memberships a container may hold; past it, it gets every group

    def check(self) -> None:
        if not 2 <= self.query_interval_s <= 31744:
            raise ConfigError(f"query_interval_s must be in 2..31744, not {self.query_interval_s}")
        if not 100 <= self.max_response_ms <= 10_000 or self.max_response_ms >= self.query_interval_s * 1000:
            raise ConfigError(f"max_response_ms must be in 100..10000 and below the query interval, "
                              f"not {self.max_response_ms}")
        if not 1 <= self.robustness <= 7:
            raise ConfigError(f"robustness must be in 1..7, not {self.robustness}")
        if not 1 <= self.max_per_port <= 8192:
            raise ConfigError(f"max_per_port must be in 1..8192, not {self.max_per_port}")

    @property
    def membership_s(self) -> int:
        """How long a report keeps a membership: robustness x query interval + response delay."""
        return self.robustness * self.query_interval_s + -(-self.max_response_ms // 1000)

    def schedule(self) -> list[float]:
        """Seconds before each of the first queries; then every query_interval_s."""
        return [0.0, STARTUP_GAP_S]


class Snooping:
    """The membership table (shared memory: made before the workers fork, it is theirs too)."""

    def __init__(self, params: SnoopingParams | None = None) -> None:
        self.params = params or SnoopingParams()
        self.params.check()
        self._ptr: Any = native.mcast_new(self.params.membership_s, self.params.max_per_port)
        self.ready_at_ns = 0  # when pruning starts (this process's view; 0: no query sent yet)

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise ValueError("the snooping table is closed")
        return self._ptr

    def query_frame(self, src_mac: bytes) -> bytes:
        p = self.params
        return mld.general_query(src_mac, p.max_response_ms, p.query_interval_s, p.robustness)

    def queried(self, now_ns: int) -> None:
        """The first query left at now_ns: prune once every container had time to answer."""
        self.ready_at_ns = now_ns + (self.params.max_response_ms + READY_MARGIN_MS) * 1_000_000
        native.mcast_set_ready(self.ptr, self.ready_at_ns)

    def pruning(self, now_ns: int) -> bool:
        """Whether a group's frames go to its members only by now (as seen by the querier's process)."""
        return 0 < self.ready_at_ns <= now_ns

    def members(self, vni: int, group_mac: bytes, now_ns: int) -> list[int]:
        """Ports a frame for (vni, group MAC) goes to now (once pruning has started)."""
        return native.mcast_members(self.ptr, vni, group_mac, now_ns)

    def counters(self) -> dict[str, int]:
        out = native.mcast_counters(self.ptr)
        return {name: int(getattr(out, name)) for name in COUNTER_NAMES}

    def close(self) -> None:
        if self._ptr is not None:
            native.mcast_delete(self._ptr)
            self._ptr = None
