/* prism_gso_encap.bpf.c - the uplink's tcx egress: VXLAN headers in front of a GSO packet the daemon merged from a container's TCP segments, so that the kernel (or the NIC) segments it as a UDP tunnel's packet. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "prism_common.h"
#include "prism_encap.h"

/*
 * Why here. AF_XDP TX makes one skb per frame, and a packet socket's
 * virtio-net header has no UDP tunnel GSO type: the daemon alone cannot
 * hand the kernel an encapsulated 64 KB packet. It sends the inner GSO
 * packet (TCP, CHECKSUM_PARTIAL) through a packet socket on the uplink
 * instead, marked with the VTEP and the outer source port it would have
 * written; bpf_skb_adjust_room() with the ENCAP flags inserts the outer
 * headers and sets SKB_GSO_UDP_TUNNEL and the inner offsets, as a VXLAN
 * device's transmit does. Every segment then leaves with the headers the
 * daemon writes on the AF_XDP path, except the IPv4 ID, which the
 * segmentation counts up. Unmarked packets (the host's own, the daemon's
 * single frames, already encapsulated) pass untouched.
 */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PRISM_GSO_VTEPS);
	__type(key, __u32);
	__type(value, struct prism_gso_vtep);
} gso_vteps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct prism_gso_counters);
} gso_counters SEC(".maps");

SEC("tc")
int tc_prism_gso_encap(struct __sk_buff *skb)
{
	__u32 mark = skb->mark, zero = 0, slot;
	struct prism_gso_counters *cnt;
	struct prism_gso_vtep *v;
	struct encap_outer out = {};
	struct encap_hdr h = {};

	if ((mark & PRISM_GSO_MARK_MASK) != PRISM_GSO_MARK)
		return TC_ACT_OK;
	cnt = bpf_map_lookup_elem(&gso_counters, &zero);
	if (!cnt)
		return TC_ACT_OK;
	skb->mark = 0; /* ours alone: nothing further down sees it */
	slot = mark & 0xff;
	v = bpf_map_lookup_elem(&gso_vteps, &slot);
	if (!v || !v->valid) {
		cnt->no_vtep++;
		return TC_ACT_SHOT;
	}
	/* The outer IPv4 length must fit (the daemon merges no more than that). */
	if (skb->len + ENCAP_GROW_LEN - ETH_HLEN > 0xffff ||
	    bpf_skb_load_bytes(skb, 0, &h.inner, sizeof(h.inner))) {
		cnt->failed++;
		return TC_ACT_SHOT;
	}
	out.dst_mac = v->remote_mac;
	out.src_mac = v->local_mac;
	out.saddr = v->local_ip;
	out.daddr = v->remote_ip;
	out.ttl = v->ttl;
	out.ip_id = (__u16)bpf_get_prandom_u32();
	out.sport = (__u16)(mark >> 8);
	out.dport = v->vxlan_port;
	out.vni = v->vni;
	/* FIXED_GSO: gso_size stays the inner payload per segment; the outer
	 * headers come on top of each segment, as the daemon sized them.
	 */
	if (encap_push(skb, &h, &out, BPF_F_ADJ_ROOM_FIXED_GSO)) {
		cnt->failed++;
		return TC_ACT_SHOT;
	}
	cnt->encap++;
	cnt->encap_bytes += skb->len; /* with the outer headers */
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
