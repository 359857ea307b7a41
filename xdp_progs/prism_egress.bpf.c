/* prism_egress.bpf.c - on a container's host-side veth: classify what the container sends, with the uplink's rules, and steer every frame to its AF_XDP socket. */
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
 * The return path's first stage. A container's frames are the inner
 * packets of the overlay, so they are classified exactly like the inner
 * packet of a VXLAN frame on the uplink (same rule maps, reused), and the
 * class picks the socket as on ingress. Every frame goes to user space —
 * ARP included, so containers resolve their peers through the overlay —
 * except while no socket is there (daemon starting or gone), when the
 * kernel gets it. A frame too short to classify is still the container's
 * traffic: it goes to LOW and the pipeline judges it.
 */

SEC("xdp")
int xdp_prism_egress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct prism_steer_counters *cnt;
	struct prism_steer_config *conf;
	__u32 zero = 0;
	int cls;

	cnt = bpf_map_lookup_elem(&steer_counters, &zero);
	conf = bpf_map_lookup_elem(&steer_config, &zero);
	if (!cnt || !conf)
		return XDP_PASS;

	cls = classify_inner(data, end, (__u32)(end - data), conf->vni);
	if (cls < 0) {
		__u32 reason = -cls - 1;

		if (reason < PRISM_MAL_MAX)
			cnt->malformed[reason]++;
		cls = PRISM_CLASS_LOW;
	}
	if (kernel_high(conf, cls, data, end, conf->vni, &kernel_tunnels))
		return XDP_PASS; /* prism_kencap sends it */
	return steer_to_socket(ctx, conf, cnt, cls, end - data);
}

char LICENSE[] SEC("license") = "GPL";
