/* prism_encap.h - the VXLAN headers the TC programs write in front of a frame (outer Ethernet / IPv4 / UDP / VXLAN, then the frame's own Ethernet header), as the daemon's encap stage writes them. */
#ifndef PRISM_ENCAP_H
#define PRISM_ENCAP_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct encap_hdr {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	__be32 vx_flags; /* VXLAN: I, the VNI is valid */
	__be32 vx_vni; /* the VNI in the top 24 bits */
	struct ethhdr inner;
} __attribute__((packed));

/* What bpf_skb_adjust_room() inserts after the frame's Ethernet header:
 * the frame's header moves behind the new ones and becomes the inner one.
 */
#define ENCAP_GROW_LEN ((int)(sizeof(struct encap_hdr) - ETH_HLEN))

/* Where an outer header goes: addresses (network order), TTL, ports (host order), VNI. */
struct encap_outer {
	const __u8 *dst_mac;
	const __u8 *src_mac;
	__be32 saddr;
	__be32 daddr;
	__u8 ttl;
	__u16 ip_id;
	__u16 sport;
	__u16 dport;
	__u32 vni;
};

static __always_inline __u16 encap_fold_csum(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The outer headers of a packet len bytes long in all (outer Ethernet
 * included) into h; h->inner is the caller's. UDP checksum zero, as RFC
 * 7348 allows over IPv4 and the daemon and the kernel's VXLAN device send
 * it; no DF, as the kernel's VXLAN device by default.
 */
static __always_inline void encap_fill(struct encap_hdr *h, const struct encap_outer *o, __u32 len)
{
	struct iphdr ip = {}; /* aligned, for the checksum helper */
	__s64 sum;

	__builtin_memcpy(h->eth.h_dest, o->dst_mac, ETH_ALEN);
	__builtin_memcpy(h->eth.h_source, o->src_mac, ETH_ALEN);
	h->eth.h_proto = bpf_htons(ETH_P_IP);
	ip.version = 4;
	ip.ihl = 5;
	ip.tot_len = bpf_htons(len - ETH_HLEN);
	ip.id = bpf_htons(o->ip_id);
	ip.ttl = o->ttl;
	ip.protocol = IPPROTO_UDP;
	ip.saddr = o->saddr;
	ip.daddr = o->daddr;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ip, sizeof(ip), 0);
	ip.check = encap_fold_csum(sum < 0 ? 0 : (__u64)sum);
	__builtin_memcpy(&h->ip, &ip, sizeof(ip));
	h->udp.source = bpf_htons(o->sport);
	h->udp.dest = bpf_htons(o->dport);
	h->udp.len = bpf_htons(len - ETH_HLEN - sizeof(struct iphdr));
	h->udp.check = 0;
	h->vx_flags = bpf_htonl(0x08000000);
	h->vx_vni = bpf_htonl(o->vni << 8);
}

/* Room for the outer headers after the frame's Ethernet header, marked as
 * a VXLAN-style tunnel (the kernel sets skb->encapsulation, the inner
 * offsets and, for a GSO packet, SKB_GSO_UDP_TUNNEL), then the headers for
 * o: 0, or -1 when the skb could not take them. flags: more
 * BPF_F_ADJ_ROOM_* (FIXED_GSO for a GSO packet sized for the tunnel).
 */
static __always_inline int encap_push(struct __sk_buff *skb, struct encap_hdr *h,
				      const struct encap_outer *o, __u64 flags)
{
	if (bpf_skb_adjust_room(skb, ENCAP_GROW_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
					BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
					BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN) | flags))
		return -1;
	encap_fill(h, o, skb->len);
	return bpf_skb_store_bytes(skb, 0, h, sizeof(*h), 0) ? -1 : 0;
}

#endif /* PRISM_ENCAP_H */
