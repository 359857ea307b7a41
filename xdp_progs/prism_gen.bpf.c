/* prism_gen.bpf.c - traffic generator for benchmarks: run with BPF_PROG_RUN live frames, it transmits each frame through a devmap into a veth. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tx_port SEC(".maps");

SEC("xdp")
int xdp_prism_gen(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_port, 0, 0);
}

char LICENSE[] SEC("license") = "GPL";
