"""placement.py - where the A/B's tools and the daemon run (CPUs, priority, scheduling class): one named policy for every configuration, written into the results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from prism_xdp.dataplane.errors import ConfigError

ROLES = ("HIGH server", "HIGH client", "LOW servers", "LOW clients", "prism_gen", "daemon worker")
POLICIES = {
    "default": "what a user gets: nothing pinned, every process at nice 0 in SCHED_OTHER",
    "split": "the daemon's worker on the last CPU; every tool (servers, clients, prism_gen) on CPU 0",
}


@dataclass(frozen=True)
class Placement:
    """A policy applied the same way to every configuration: a tool never gets a CPU, a
    priority or a scheduling class in one configuration that it does not get in all."""

    name: str
    tool_cpus: tuple[int, ...] | None  # None: wherever the kernel's scheduler puts them
    worker_cpus: tuple[int, ...] | None  # the daemon's scheduler.cpus; None: the daemon's default
    pm_qos: bool = True  # /dev/cpu_dma_latency held at 0 for the whole bench

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """argv as this policy starts it: `taskset -c` when tools are pinned (visible in the
        recorded command lines), unchanged otherwise."""
        if self.tool_cpus is None:
            return list(argv)
        return ["taskset", "-c", ",".join(str(c) for c in self.tool_cpus), *argv]

    def generator_cpu(self) -> int | None:
        """The CPU of prism_gen's sending thread (it runs inside the bench process)."""
        return self.tool_cpus[0] if self.tool_cpus else None

    def record(self) -> dict[str, object]:
        """The policy as the results state it, role by role."""
        tools = f"CPUs {list(self.tool_cpus)}" if self.tool_cpus else "any CPU (not pinned)"
        worker = f"CPUs {list(self.worker_cpus)} (scheduler.cpus)" if self.worker_cpus else \
            "any CPU (daemon default, no scheduler.cpus)"
        roles = {r: f"{worker if r == 'daemon worker' else tools}, nice 0, SCHED_OTHER" for r in ROLES}
        roles["kernel softirq"] = "where the kernel runs it (not steered; the topology's RPS setting)"
        roles["bench runner"] = "not pinned, nice 0, SCHED_OTHER (sleeps while the tools run)"
        return {"name": self.name, "description": POLICIES[self.name], "roles": roles,
                "pm_qos": "/dev/cpu_dma_latency held at 0 for every configuration" if self.pm_qos
                else "not held", "same_for_every_configuration": True}


def policy(name: str, cpus: Sequence[int] | None = None) -> Placement:
    """The named policy on this machine's CPUs (default: those this process may use)."""
    cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if name == "default":
        return Placement("default", None, None)
    if name == "split":
        if len(cpus) < 2:
            raise ConfigError(f"--placement split: needs 2 or more CPUs, this machine has {len(cpus)}")
        return Placement("split", (cpus[0],), (cpus[-1],))
    raise ConfigError(f"--placement: {name!r} is not a policy; choose from {', '.join(POLICIES)}")
