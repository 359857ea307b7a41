/* prism_redirect.bpf.c - redirect every packet to its queue's class-0 AF_XDP socket, without parsing (benchmark baseline, raw ports). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "prism_common.h"

/*
 * The cheapest program that feeds AF_XDP: no parsing, one map lookup. It is
 * the reference the classifier's cost is measured against, and the program
 * of a socket that takes a device's whole traffic (a container's veth).
 * With no socket in the slot the kernel keeps the packet.
 */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, PRISM_XSKMAP_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

SEC("xdp")
int xdp_prism_redirect(struct xdp_md *ctx)
{
	if (ctx->rx_queue_index >= PRISM_MAX_QUEUES)
		return XDP_PASS;
	return bpf_redirect_map(&xsks, ctx->rx_queue_index * PRISM_NCLASS, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
