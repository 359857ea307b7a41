/* prism_steer.bpf.c - classify VXLAN packets by their inner headers and steer each class to its AF_XDP socket. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "prism_common.h"
#include "prism_classify.h"

/*
 * This is PRISM's classifier (skb_is_high_priority() in the kernel patch)
 * moved to the first stage: the NIC queue, before any copy. It looks through
 * outer Ethernet / IPv4 / UDP / VXLAN at the inner IPv4 TCP or UDP ports.
 * Anything that is not VXLAN goes to the kernel untouched, so ARP, ssh and
 * ping to the host keep working while the program is attached. A packet that
 * claims to be VXLAN but is cut short or carries bad flags is counted and
 * dropped: it must never reach a container.
 */

SEC("xdp")
int xdp_prism_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct prism_steer_counters *cnt;
	struct prism_steer_config *conf;
	struct vxlan_hdr *vx;
	struct udphdr *udp;
	struct iphdr *ip;
	void *pos = data;
	__u32 zero = 0, ihl, whole;
	__be16 proto;
	int cls;

	cnt = bpf_map_lookup_elem(&steer_counters, &zero);
	conf = bpf_map_lookup_elem(&steer_config, &zero);
	if (!cnt || !conf)
		return XDP_PASS;

	proto = parse_eth(&pos, end);
	if (proto != bpf_htons(ETH_P_IP))
		goto pass;
	ip = pos;
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
		goto pass;
	ihl = ip->ihl * 4;
	/* Outer fragments are the kernel's to reassemble. */
	if (ihl < sizeof(*ip) || (ip->frag_off & bpf_htons(0x3fff)))
		goto pass;
	udp = pos + ihl;
	if ((void *)(udp + 1) > end || udp->dest != bpf_htons(conf->vxlan_port))
		goto pass;

	/* From here on the packet claims to be VXLAN. */
	vx = (void *)(udp + 1);
	if ((void *)(vx + 1) > end) {
		cnt->malformed[PRISM_MAL_VXLAN_TRUNC]++;
		return XDP_DROP;
	}
	if (!(vx->flags & VXLAN_FLAG_I)) {
		cnt->malformed[PRISM_MAL_VXLAN_FLAGS]++;
		return XDP_DROP;
	}

	/* A multi-buffer packet (generic mode, xdp.frags) continues past end. */
	whole = bpf_xdp_get_buff_len(ctx);
	cls = classify_inner(vx + 1, end, whole - (__u32)((void *)(vx + 1) - data),
			     bpf_ntohl(vx->vni) >> 8);
	if (cls < 0) {
		__u32 reason = -cls - 1;

		if (reason < PRISM_MAL_MAX)
			cnt->malformed[reason]++;
		return XDP_DROP;
	}
	/* prism_kdecap strips an untagged outer Ethernet and a 20-byte outer
	 * IPv4 header only.
	 */
	if ((void *)ip == data + sizeof(struct ethhdr) && ihl == sizeof(*ip) &&
	    kernel_high(conf, cls, vx + 1, end, bpf_ntohl(vx->vni) >> 8, &kernel_ports))
		return XDP_PASS; /* prism_kdecap delivers it */
	return steer_to_socket(ctx, conf, cnt, cls, whole);

pass:
	cnt->passed++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
