/* prism_classify.h - the maps and the inner-packet classifier shared by the uplink (prism_steer) and container (prism_egress) XDP programs. */
#ifndef PRISM_CLASSIFY_H
#define PRISM_CLASSIFY_H

/*
 * Each program object gets its own copy of these maps. The container side
 * programs reuse the uplink program's rule maps (libbpf map reuse before
 * load), so one rule change applies to both directions, as the kernel
 * patch classifies egress too.
 */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, PRISM_XSKMAP_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct prism_steer_config);
} steer_config SEC(".maps");

/* Class of an inner L4 port (host byte order); 0 = no rule. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PRISM_NPORTS);
	__type(key, __u32);
	__type(value, __u8);
} port_rules SEC(".maps");

/* Class of an inner DSCP value; 0 = no rule. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PRISM_NDSCP);
	__type(key, __u32);
	__type(value, __u8);
} dscp_rules SEC(".maps");

/* Class of a VNI (host byte order, 24 bits). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PRISM_MAX_VNI_RULES);
	__type(key, __u32);
	__type(value, __u8);
} vni_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct prism_steer_counters);
} steer_counters SEC(".maps");

/* The kernel HIGH path's maps (prism_common.h); every object shares the
 * uplink program's copies.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PRISM_MAX_KERNEL_PORTS);
	__type(key, struct prism_kernel_key);
	__type(value, __u32); /* the container's host-side veth */
} kernel_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PRISM_MAX_KERNEL_TUNNELS);
	__type(key, struct prism_kernel_key);
	__type(value, struct prism_kernel_tunnel);
} kernel_tunnels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct prism_kernel_counters);
} kernel_counters SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct vxlan_hdr {
	__be32 flags; /* I flag is 0x08000000 */
	__be32 vni; /* VNI in the upper 24 bits */
};

#define VXLAN_FLAG_I bpf_htonl(0x08000000)

/* Step over an Ethernet header and up to two VLAN tags; return the
 * EtherType in network order and leave *pos after the headers, or 0 when
 * they are cut short.
 */
static __always_inline __be16 parse_eth(void **pos, void *end)
{
	struct ethhdr *eth = *pos;
	struct vlan_hdr *vlan;
	__be16 proto;
	int i;

	if ((void *)(eth + 1) > end)
		return 0;
	proto = eth->h_proto;
	*pos = eth + 1;
#pragma unroll
	for (i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		vlan = *pos;
		if ((void *)(vlan + 1) > end)
			return 0;
		proto = vlan->proto;
		*pos = vlan + 1;
	}
	return proto;
}

static __always_inline __u8 max_class(__u8 a, __u8 b)
{
	return a > b ? a : b;
}

static __always_inline __u8 rule_lookup(void *map, __u32 key)
{
	__u8 *cls = bpf_map_lookup_elem(map, &key);

	return cls ? *cls : 0;
}

/* Classify the inner frame at pos; returns the class or -(1 + malformed
 * reason). end bounds what may be read (a multi-buffer packet's first
 * part); avail is the frame's length from pos over all its parts.
 */
static __always_inline int classify_inner(void *pos, void *end, __u32 avail, __u32 vni)
{
	void *start = pos;
	struct iphdr *ip;
	struct udphdr *l4;
	__be16 proto;
	__u32 ihl, tot_len, l4len;
	__u8 cls;

	cls = rule_lookup(&vni_rules, vni);

	proto = parse_eth(&pos, end);
	if (!proto)
		return -(1 + PRISM_MAL_INNER_ETH);
	/* ARP, IPv6, ... inside the tunnel: valid, classified by VNI only. */
	if (proto != bpf_htons(ETH_P_IP))
		return cls;

	ip = pos;
	if ((void *)(ip + 1) > end)
		return -(1 + PRISM_MAL_INNER_IP);
	ihl = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	if (ihl < sizeof(*ip) || tot_len < ihl || (__u32)(pos - start) + tot_len > avail)
		return -(1 + PRISM_MAL_INNER_IP);

	cls = max_class(cls, rule_lookup(&dscp_rules, ip->tos >> 2));

	/* Only a first fragment carries the L4 ports. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return cls;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return cls;

	l4 = pos + ihl;
	l4len = ip->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(*l4);
	/* The checks against end are for the verifier; the one against the IP
	 * length catches a header that is cut inside a padded frame.
	 */
	if ((void *)(l4 + 1) > end || ihl + l4len > tot_len)
		return -(1 + PRISM_MAL_INNER_L4);
	if (ip->protocol == IPPROTO_TCP && (void *)l4 + sizeof(struct tcphdr) > end)
		return -(1 + PRISM_MAL_INNER_L4);

	cls = max_class(cls, rule_lookup(&port_rules, bpf_ntohs(l4->source)));
	cls = max_class(cls, rule_lookup(&port_rules, bpf_ntohs(l4->dest)));
	return cls;
}

/* The class a steering config lets through: vanilla folds every packet to
 * LOW; classes above the configured count fold to the highest one.
 */
static __always_inline int fold_class(const struct prism_steer_config *conf, int cls)
{
	if (conf->mode == PRISM_STEER_VANILLA)
		cls = PRISM_CLASS_LOW;
	if (cls >= conf->nclass)
		cls = conf->nclass ? conf->nclass - 1 : 0;
	return cls;
}

/* forwarding.high_path = "kernel": does this frame (inner Ethernet header at
 * eth) go to the kernel's HIGH path? Only a HIGH IPv4 frame whose
 * destination is in map: a container (kernel_ports) on the uplink, a learned
 * tunnel (kernel_tunnels) on a container's veth. Everything else, vanilla
 * included (it folds every class to LOW), stays on the sockets.
 */
static __always_inline int kernel_high(const struct prism_steer_config *conf, int cls,
				       void *eth_pos, void *end, __u32 vni, void *map)
{
	struct prism_kernel_key key = {};
	struct ethhdr *eth = eth_pos;

	if (!(conf->flags & PRISM_STEER_F_KERNEL_HIGH) || cls < 0 ||
	    fold_class(conf, cls) < PRISM_CLASS_HIGH)
		return 0;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	__builtin_memcpy(key.mac, eth->h_dest, ETH_ALEN);
	key.vni = vni;
	return bpf_map_lookup_elem(map, &key) != NULL;
}

/* Redirect to the socket in slot, first putting the metadata in front of
 * the packet when the config asks for it (prism_common.h,
 * PRISM_STEER_F_META): the rule class, and the time with TIMESTAMP.
 */
static __always_inline int redirect_stamped(struct xdp_md *ctx,
					    const struct prism_steer_config *conf, __u32 slot,
					    int rule_cls)
{
	if (conf->flags & (PRISM_STEER_F_META | PRISM_STEER_F_TIMESTAMP)) {
		void *data, *end;
		__u64 meta = (__u64)(rule_cls & (PRISM_NCLASS - 1)) << PRISM_META_CLASS_SHIFT;

		if (conf->flags & PRISM_STEER_F_TIMESTAMP)
			meta |= bpf_ktime_get_ns() & ((1ull << PRISM_META_CLASS_SHIFT) - 1);
		if (bpf_xdp_adjust_head(ctx, -PRISM_TS_LEN))
			return XDP_DROP; /* no headroom: never hand out a frame without it */
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		if (data + PRISM_TS_LEN > end)
			return XDP_DROP;
		__builtin_memcpy(data, &meta, PRISM_TS_LEN);
	}
	return bpf_redirect_map(&xsks, slot, XDP_DROP);
}

/* The last step of both programs: class cls of this queue goes to its
 * socket. An empty slot falls back to the queue's LOW socket; with no socket
 * at all (daemon not ready, or gone) the kernel keeps the packet.
 */
static __always_inline int steer_to_socket(struct xdp_md *ctx,
					   const struct prism_steer_config *conf,
					   struct prism_steer_counters *cnt, int cls, __u64 bytes)
{
	int rule_cls = cls;
	__u32 slot;

	cls = fold_class(conf, cls);
	if (cls < 0 || cls >= PRISM_NCLASS || ctx->rx_queue_index >= PRISM_MAX_QUEUES)
		goto pass;
	/* A no-op after the check, but the verifier then sees the bound on the
	 * very register the compiler indexes the counters with.
	 */
	cls &= PRISM_NCLASS - 1;
	slot = ctx->rx_queue_index * PRISM_NCLASS + cls;
	if (!bpf_map_lookup_elem(&xsks, &slot)) {
		cnt->no_socket[cls]++;
		slot = ctx->rx_queue_index * PRISM_NCLASS;
		cls = PRISM_CLASS_LOW;
		if (!bpf_map_lookup_elem(&xsks, &slot))
			goto pass;
	}
	cnt->steered[cls]++;
	cnt->steered_bytes[cls] += bytes;
	return redirect_stamped(ctx, conf, slot, rule_cls);

pass:
	cnt->passed++;
	return XDP_PASS;
}

#endif /* PRISM_CLASSIFY_H */
