/* prism_kencap.bpf.c - the kernel HIGH path's way out: on a container veth's TC ingress, encapsulate a HIGH frame for its learned tunnel and send it out of the uplink. */
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
#include "prism_encap.h"

/*
 * The answer to what prism_kdecap delivered. prism_egress passes a HIGH
 * frame up (XDP_PASS) when kernel_tunnels knows its destination; this
 * program writes outer Ethernet/IPv4/UDP/VXLAN in front of it, with the
 * addresses the request came with, and redirects it to the uplink's
 * transmit path. The headers are the daemon's (TTL from forwarding's ttl)
 * and the kernel VXLAN device's defaults: UDP checksum zero, no DF, source port from the inner flow's hash. A
 * partial inner checksum stays partial (skb->encapsulation tells the device
 * or the receiver where it is).
 */

/* The kernel's udp_flow_src_port() range (ip_local_port_range's default). */
#define SPORT_MIN 32768
#define SPORT_SPAN (61000 - SPORT_MIN)

SEC("tc")
int tc_prism_kencap(struct __sk_buff *skb)
{
	struct prism_kernel_counters *cnt;
	struct prism_steer_config *conf;
	struct prism_kernel_tunnel *tun;
	struct prism_kernel_key key = {};
	struct encap_hdr h = {};
	struct encap_outer out = {};
	struct ethhdr *eth;
	void *data, *end;
	__u32 zero = 0, len, hash, mtu_len;
	int cls;

	conf = bpf_map_lookup_elem(&steer_config, &zero);
	cnt = bpf_map_lookup_elem(&kernel_counters, &zero);
	if (!conf || !cnt || !(conf->flags & PRISM_STEER_F_KERNEL_HIGH))
		return TC_ACT_OK;
	if (skb->len < ETH_HLEN + sizeof(struct iphdr))
		return TC_ACT_OK;
	/* All of the frame in the linear part, for the classifier's length check
	 * (a container's frames are linear as a rule: XDP on its veth took GSO).
	 */
	if (bpf_skb_pull_data(skb, skb->len))
		return TC_ACT_OK;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	cls = classify_inner(data, end, (__u32)(end - data), conf->vni);
	if (!kernel_high(conf, cls, data, end, conf->vni, &kernel_tunnels))
		return TC_ACT_OK;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	__builtin_memcpy(key.mac, eth->h_dest, ETH_ALEN);
	key.vni = conf->vni;
	tun = bpf_map_lookup_elem(&kernel_tunnels, &key);
	if (!tun) { /* aged out since XDP looked */
		cnt->no_tunnel++;
		return TC_ACT_SHOT;
	}
	/* The daemon drops what no longer fits the uplink once encapsulated
	 * (drop_mtu); so does this path, rather than leave it to the device.
	 */
	mtu_len = skb->len + ENCAP_GROW_LEN - ETH_HLEN;
	if (bpf_check_mtu(skb, tun->uplink_ifindex, &mtu_len, 0, 0)) {
		cnt->too_big++;
		return TC_ACT_SHOT;
	}
	__builtin_memcpy(&h.inner, eth, sizeof(h.inner));
	hash = bpf_get_hash_recalc(skb);

	out.dst_mac = tun->remote_mac;
	out.src_mac = tun->local_mac;
	out.saddr = tun->local_ip;
	out.daddr = tun->remote_ip;
	out.ttl = conf->ttl ? conf->ttl : 64;
	out.sport = SPORT_MIN + (__u16)(((__u64)hash * SPORT_SPAN) >> 32);
	out.dport = conf->vxlan_port;
	out.vni = conf->vni;
	if (encap_push(skb, &h, &out, 0)) {
		cnt->failed++;
		return TC_ACT_SHOT;
	}
	len = skb->len; /* with the outer headers */
	cnt->encap++;
	cnt->encap_bytes += len;
	return bpf_redirect(tun->uplink_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
