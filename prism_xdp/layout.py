"""layout.py - Python's copy of the constants and record layouts of xdp_progs/prism_common.h (a unit test checks them against the compiled header)."""

from __future__ import annotations

# Priority classes: 0 is LOW (the default), higher is more urgent.
PRISM_NCLASS = 4
PRISM_CLASS_LOW = 0
PRISM_CLASS_HIGH = 1

PRISM_MAX_QUEUES = 64
PRISM_XSKMAP_SIZE = PRISM_MAX_QUEUES * PRISM_NCLASS

PRISM_NPORTS = 65536
PRISM_NDSCP = 64
PRISM_MAX_VNI_RULES = 4096

PRISM_VXLAN_PORT_DEFAULT = 4789
PRISM_ETH_HLEN = 14
PRISM_VXLAN_HLEN = 8
PRISM_ENCAP_LEN = 50

PRISM_STEER_CLASSIFY = 0
PRISM_STEER_VANILLA = 1
PRISM_STEER_F_TIMESTAMP = 1
PRISM_STEER_F_META = 2
PRISM_TS_LEN = 8
PRISM_META_CLASS_SHIFT = 56

PRISM_MAL_VXLAN_TRUNC = 0
PRISM_MAL_VXLAN_FLAGS = 1
PRISM_MAL_INNER_ETH = 2
PRISM_MAL_INNER_IP = 3
PRISM_MAL_INNER_L4 = 4
PRISM_MAL_MAX = 5

MALFORMED_REASONS = {
    PRISM_MAL_VXLAN_TRUNC: "vxlan_truncated",
    PRISM_MAL_VXLAN_FLAGS: "vxlan_bad_flags",
    PRISM_MAL_INNER_ETH: "inner_eth_truncated",
    PRISM_MAL_INNER_IP: "inner_ipv4_bad",
    PRISM_MAL_INNER_L4: "inner_l4_truncated",
}

CLASS_NAMES = {PRISM_CLASS_LOW: "low", PRISM_CLASS_HIGH: "high", 2: "class2", 3: "class3"}

# struct prism_steer_counters, in u64 words: steered[4], steered_bytes[4],
# no_socket[4], passed, malformed[5].
COUNTER_FIELDS = (
    [("steered", c) for c in range(PRISM_NCLASS)]
    + [("steered_bytes", c) for c in range(PRISM_NCLASS)]
    + [("no_socket", c) for c in range(PRISM_NCLASS)]
    + [("passed", None)]
    + [("malformed", r) for r in range(PRISM_MAL_MAX)]
)
PRISM_COUNTER_WORDS = len(COUNTER_FIELDS)


def xsk_slot(queue: int, cls: int) -> int:
    """XSKMAP slot of (rx queue, class), as the BPF program computes it."""
    if not 0 <= queue < PRISM_MAX_QUEUES:
        raise ValueError(f"queue {queue} out of range 0..{PRISM_MAX_QUEUES - 1}")
    if not 0 <= cls < PRISM_NCLASS:
        raise ValueError(f"class {cls} out of range 0..{PRISM_NCLASS - 1}")
    return queue * PRISM_NCLASS + cls
