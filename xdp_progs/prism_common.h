/* prism_common.h - map names, record layouts and limits shared by the BPF programs, the C helpers and Python. */
#ifndef PRISM_COMMON_H
#define PRISM_COMMON_H

/*
 * Python has no copy of these: the cffi build declares every #define here to
 * the compiler, and prism_xdp/dataplane/native.py exports the compiled values.
 */

/* Priority classes per queue. Class 0 is LOW, the default for every packet
 * no rule matches; a higher class is more urgent and is drained first. Two
 * classes (LOW, HIGH) are PRISM's; the maps leave room for more.
 */
#define PRISM_NCLASS 4
#define PRISM_CLASS_LOW 0
#define PRISM_CLASS_HIGH 1

/* XSKMAP slot of (rx queue q, class c) is q * PRISM_NCLASS + c. */
#define PRISM_MAX_QUEUES 64
#define PRISM_XSKMAP_SIZE (PRISM_MAX_QUEUES * PRISM_NCLASS)

/* Rule tables. Ports and DSCP are arrays indexed by value (constant-time
 * lookup, no limit of 10 ports as in the kernel patch); VNIs are 24 bits
 * wide, so they live in a hash.
 */
#define PRISM_NPORTS 65536
#define PRISM_NDSCP 64
#define PRISM_MAX_VNI_RULES 4096

#define PRISM_VXLAN_PORT_DEFAULT 4789
#define PRISM_ETH_HLEN 14
#define PRISM_VXLAN_HLEN 8
/* Outer Ethernet + IPv4 (no options) + UDP + VXLAN: what decap strips and
 * encap writes into the headroom.
 */
#define PRISM_ENCAP_LEN 50

/* Steering modes, switchable at runtime through the config map. */
#define PRISM_STEER_CLASSIFY 0 /* PRISM: each class to its own socket */
#define PRISM_STEER_VANILLA 1 /* stock: every VXLAN packet to class 0 */

/* Why a VXLAN packet was judged malformed (counted, then dropped). */
#define PRISM_MAL_VXLAN_TRUNC 0 /* UDP to the VXLAN port, VXLAN header cut */
#define PRISM_MAL_VXLAN_FLAGS 1 /* VXLAN I flag not set */
#define PRISM_MAL_INNER_ETH 2 /* inner Ethernet header (or its VLAN tags) cut */
#define PRISM_MAL_INNER_IP 3 /* inner IPv4 header cut, IHL < 5 or length wrong */
#define PRISM_MAL_INNER_L4 4 /* inner TCP/UDP header cut */
#define PRISM_MAL_MAX 5

/* Value of the single entry of the "steer_config" array map. */
struct prism_steer_config {
	__u16 vxlan_port; /* host byte order */
	__u8 mode; /* PRISM_STEER_* */
	__u8 nclass; /* classes that have sockets; higher classes fold down */
	__u32 vni; /* prism_egress: the container's VNI, for VNI rules */
	__u32 flags; /* PRISM_STEER_F_* */
	__u8 ttl; /* prism_kencap: the outer TTL (forwarding's ttl) */
	__u8 pad[3];
};

/* Steering flags. META: 8 bytes of metadata are put in front of every
 * packet sent to a socket, and the receiver strips them: bits 56-63 hold
 * the class the rules gave the packet (before vanilla or the socket count
 * folded it), so user space records the class XDP decided and never
 * classifies again; with TIMESTAMP, bits 0-55 hold bpf_ktime_get_ns()
 * (CLOCK_MONOTONIC, 2.28 years before they wrap), so the receiver knows how
 * long the packet waited on its RX ring. TIMESTAMP implies META.
 */
#define PRISM_STEER_F_TIMESTAMP 1
#define PRISM_STEER_F_META 2
/* forwarding.high_path = "kernel": a HIGH frame whose destination the kernel
 * path knows is passed to the kernel, where the TC programs prism_kdecap
 * (uplink) and prism_kencap (container veth) finish it at once.
 */
#define PRISM_STEER_F_KERNEL_HIGH 4
#define PRISM_TS_LEN 8
#define PRISM_META_CLASS_SHIFT 56

/* Value of the single entry of the per-CPU "steer_counters" map. */
struct prism_steer_counters {
	__u64 steered[PRISM_NCLASS]; /* redirected to the class's socket */
	__u64 steered_bytes[PRISM_NCLASS];
	__u64 no_socket[PRISM_NCLASS]; /* class's slot empty: fell back to LOW */
	__u64 passed; /* not VXLAN (ARP, host traffic, IPv6): to the kernel */
	__u64 malformed[PRISM_MAL_MAX]; /* dropped, by reason */
};

/* The kernel HIGH path's maps: containers by (inner MAC, VNI) on the way in,
 * and the tunnels learned from what came in, by (remote inner MAC, VNI), for
 * the way back.
 */
#define PRISM_MAX_KERNEL_PORTS 1024
#define PRISM_MAX_KERNEL_TUNNELS 4096

struct prism_kernel_key {
	__u8 mac[6];
	__u16 pad; /* zero */
	__u32 vni;
};

/* Outer headers of the tunnel back to a remote inner MAC, as they came in. */
struct prism_kernel_tunnel {
	__u8 remote_mac[6]; /* the remote VTEP's (outer source on the way in) */
	__u8 local_mac[6]; /* our uplink's */
	__u32 local_ip; /* network order */
	__u32 remote_ip; /* network order */
	__u32 uplink_ifindex;
};

/* Value of the single entry of the per-CPU "kernel_counters" map. */
struct prism_kernel_counters {
	__u64 decap; /* uplink -> container, in the kernel */
	__u64 decap_bytes;
	__u64 encap; /* container -> uplink, in the kernel */
	__u64 encap_bytes;
	__u64 no_port; /* HIGH to a MAC that is no container: left to the kernel */
	__u64 no_tunnel; /* HIGH back to a MAC not learned (or aged out): dropped */
	__u64 failed; /* the skb could not be resized: dropped */
	__u64 aggregate; /* a GRO aggregate (only with a VXLAN socket on the host): left to the kernel */
	__u64 too_big; /* too big for the uplink once encapsulated: dropped, as the daemon drops it */
};

#define PRISM_KERNEL_COUNTER_WORDS (sizeof(struct prism_kernel_counters) / sizeof(__u64))

/* forwarding.uplink_delivery = "packet": the daemon sends a container's
 * merged TCP segments out of the uplink as one inner GSO packet through a
 * packet socket, and prism_gso_encap (the uplink's tcx egress) writes the
 * VXLAN headers in front, where the kernel can mark the packet as a UDP
 * tunnel's for segmentation. The packet's mark says which VTEP and which
 * outer source port: PRISM_GSO_MARK, the port in bits 8-23, the VTEP's
 * index (the daemon's order, = the "gso_vteps" slot) in bits 0-7.
 */
#define PRISM_GSO_MARK 0xa0000000u
#define PRISM_GSO_MARK_MASK 0xff000000u
#define PRISM_GSO_VTEPS 256 /* = PRISM_MAX_VTEPS */

/* A "gso_vteps" slot: the outer headers toward one VTEP, as the daemon writes them. */
struct prism_gso_vtep {
	__u8 remote_mac[6];
	__u8 local_mac[6];
	__u32 local_ip; /* network order */
	__u32 remote_ip; /* network order */
	__u32 vni;
	__u16 vxlan_port; /* host order */
	__u8 ttl;
	__u8 valid; /* 0: an empty slot */
};

/* Value of the single entry of the per-CPU "gso_counters" map. */
struct prism_gso_counters {
	__u64 encap; /* GSO packets encapsulated */
	__u64 encap_bytes; /* their bytes with the outer headers */
	__u64 no_vtep; /* marked for an empty slot: dropped */
	__u64 failed; /* too long for one outer IPv4 packet, or not resized: dropped */
};

#define PRISM_GSO_COUNTER_WORDS (sizeof(struct prism_gso_counters) / sizeof(__u64))

#define PRISM_COUNTER_WORDS (sizeof(struct prism_steer_counters) / sizeof(__u64))

#endif /* PRISM_COMMON_H */
