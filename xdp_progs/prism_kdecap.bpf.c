/* prism_kdecap.bpf.c - the kernel HIGH path's way in: on the uplink's TC ingress, decapsulate a HIGH VXLAN frame and hand it straight to its container. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "prism_common.h"
#include "prism_classify.h"

/*
 * forwarding.high_path = "kernel" (an option, off by default). PRISM-sync's
 * promise is that a HIGH packet is carried to its socket at once, in the
 * context that received it. Here that context is the uplink's receive
 * softirq: prism_steer passes the HIGH frame up (XDP_PASS) instead of to a
 * socket, and this program, the first thing the skb meets, strips the outer
 * headers and moves it with bpf_redirect_peer() into the container's
 * namespace - no queue, no daemon crossing, no second softirq. It also
 * learns the outer headers the frame came with, so prism_kencap can send
 * the container's answer back the same way.
 *
 * It re-checks what prism_steer checked (same rules, same config map) so a
 * frame that XDP passed for another reason (not VXLAN, no socket yet) is
 * left to the kernel untouched.
 */

/* Outer IPv4 (no options) + UDP + VXLAN + inner Ethernet: what decap removes
 * after the outer Ethernet header, whose place the inner one takes.
 */
#define STRIP_LEN \
	((int)(sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct vxlan_hdr) + ETH_HLEN))

/* BPF has no memcmp: compare the 24-byte record a word at a time. */
static __always_inline int same_tunnel(const struct prism_kernel_tunnel *a,
				       const struct prism_kernel_tunnel *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	__u32 diff = 0;
	int i;

#pragma unroll
	for (i = 0; i < (int)(sizeof(*a) / sizeof(__u32)); i++)
		diff |= x[i] ^ y[i];
	return !diff;
}

SEC("tc")
int tc_prism_kdecap(struct __sk_buff *skb)
{
	struct prism_kernel_tunnel tun = {}, *known;
	struct prism_kernel_key key = {}, back = {};
	struct prism_kernel_counters *cnt;
	struct prism_steer_config *conf;
	struct ethhdr *outer, *inner;
	struct ethhdr inner_copy;
	void *data, *end;
	struct vxlan_hdr *vx;
	struct udphdr *udp;
	struct iphdr *ip;
	__u32 zero = 0, *port, vni, len;
	int cls;

	conf = bpf_map_lookup_elem(&steer_config, &zero);
	cnt = bpf_map_lookup_elem(&kernel_counters, &zero);
	if (!conf || !cnt || !(conf->flags & PRISM_STEER_F_KERNEL_HIGH))
		return TC_ACT_OK;
	len = sizeof(*outer) + sizeof(*ip) + sizeof(*udp) + sizeof(*vx) + sizeof(*inner) +
	      sizeof(struct iphdr);
	if (skb->len < len)
		return TC_ACT_OK;
	/* GRO merges VXLAN frames only where the host has a VXLAN socket of its
	 * own on the port, and then that device can take the aggregate; BPF
	 * cannot clear the tunnel's GSO bits after stripping it, so it goes
	 * there. HIGH traffic is rarely merged: requests and answers are small.
	 */
	if (skb->gso_segs > 1) {
		cnt->aggregate++;
		return TC_ACT_OK;
	}
	/* The classifier checks the inner IPv4 length against the data it sees:
	 * all of it must be in the linear part (it already is, as a rule).
	 */
	if (bpf_skb_pull_data(skb, skb->len))
		return TC_ACT_OK;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;

	outer = data;
	ip = (void *)(outer + 1);
	if ((void *)(ip + 1) > end || outer->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	/* Outer options or fragments: not what prism_steer passes for us. */
	if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff)))
		return TC_ACT_OK;
	udp = (void *)(ip + 1);
	vx = (void *)(udp + 1);
	inner = (void *)(vx + 1);
	if ((void *)(inner + 1) > end || udp->dest != bpf_htons(conf->vxlan_port) ||
	    !(vx->flags & VXLAN_FLAG_I))
		return TC_ACT_OK;
	vni = bpf_ntohl(vx->vni) >> 8;
	cls = classify_inner(inner, end, (__u32)(end - (void *)inner), vni);
	if (!kernel_high(conf, cls, inner, end, vni, &kernel_ports))
		return TC_ACT_OK;

	__builtin_memcpy(key.mac, inner->h_dest, ETH_ALEN);
	key.vni = vni;
	port = bpf_map_lookup_elem(&kernel_ports, &key);
	if (!port) { /* gone since XDP looked */
		cnt->no_port++;
		return TC_ACT_OK;
	}

	/* Learn the way back: the remote inner MAC sits behind this tunnel. */
	__builtin_memcpy(back.mac, inner->h_source, ETH_ALEN);
	back.vni = vni;
	__builtin_memcpy(tun.remote_mac, outer->h_source, ETH_ALEN);
	__builtin_memcpy(tun.local_mac, outer->h_dest, ETH_ALEN);
	tun.local_ip = ip->daddr;
	tun.remote_ip = ip->saddr;
	tun.uplink_ifindex = skb->ifindex;
	known = bpf_map_lookup_elem(&kernel_tunnels, &back);
	if (!known || !same_tunnel(known, &tun))
		bpf_map_update_elem(&kernel_tunnels, &back, &tun, BPF_ANY);

	__builtin_memcpy(&inner_copy, inner, sizeof(inner_copy));
	/* Remove outer IPv4/UDP/VXLAN and the inner Ethernet header right after
	 * the outer Ethernet header, then write the inner one in its place. A
	 * partial checksum keeps pointing at the inner L4 header, which does
	 * not move; a verified one is reset, so the container checks it.
	 */
	if (bpf_skb_adjust_room(skb, -STRIP_LEN, BPF_ADJ_ROOM_MAC, 0) ||
	    bpf_skb_store_bytes(skb, 0, &inner_copy, sizeof(inner_copy), 0)) {
		cnt->failed++;
		return TC_ACT_SHOT;
	}
	cnt->decap++;
	cnt->decap_bytes += skb->len;
	return bpf_redirect_peer(*port, 0);
}

char LICENSE[] SEC("license") = "GPL";
