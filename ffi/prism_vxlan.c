/* prism_vxlan.c - the overlay's VXLAN stages, a batch per call: decap (uplink -> containers) and encap (containers -> VTEPs or another container), with flooding and the checksum each frame asks for. */
#include <errno.h>
#include <string.h>

#include <linux/in.h>

#include "prism_overlay.h"

/*
 * Nothing is copied except the extra frames of a flood (one per additional
 * target): decap moves the descriptor past the outer headers, encap writes
 * them into the headroom that AF_XDP leaves in front of every received
 * packet (XDP_PACKET_HEADROOM plus the UMEM's own).
 */

#define OUTER_IP_UDP_VXLAN 36 /* what the uplink's MTU must also hold */
#define SPORT_MIN 32768 /* the kernel's default ip_local_port_range */
#define SPORT_MAX 60999

/* ---- helpers of the stages -------------------------------------------- */

static inline uint8_t *pkt(struct prism_overlay *o, uint64_t addr)
{
	return o->u->area + addr;
}

static inline int emit(struct prism_overlay *o, struct prism_batch *out, uint64_t addr,
		       uint32_t len, uint64_t ts, uint32_t port, uint8_t cls, uint32_t csum)
{
	uint64_t poll_ts = o->cur_poll_ts;

	if (out->n == out->cap) {
		drop(o, addr, &o->cnt.drop_batch_full);
		return -1;
	}
	out->addr[out->n] = addr;
	out->len[out->n] = len;
	out->ts[out->n] = ts;
	out->port[out->n] = port;
	out->cls[out->n] = cls;
	out->poll_ts[out->n] = poll_ts;
	out->csum[out->n] = csum;
	out->n++;
	return 0;
}

/* A fresh frame with the same headroom a received packet has; 0 when the
 * pool is empty.
 */
static uint64_t new_frame(struct prism_overlay *o)
{
	struct prism_umem *u = o->u;

	if (!u->pool_n) {
		o->cnt.drop_no_frame++;
		return 0;
	}
	u->user++;
	return u->pool[--u->pool_n] + u->headroom + XDP_PACKET_HEADROOM; /* never 0 */
}

/* A fresh frame holding a copy of len bytes at addr; 0 when the pool is empty. */
static uint64_t copy_frame(struct prism_overlay *o, uint64_t addr, uint32_t len)
{
	uint64_t copy = new_frame(o);

	if (!copy)
		return 0;
	memcpy(o->u->area + copy, o->u->area + addr, len);
	o->cnt.flood_copies++;
	return copy;
}

static inline int vni_local(const struct prism_overlay *o, uint32_t vni)
{
	uint32_t i;

	for (i = 0; i < o->nvnis; i++)
		if (o->vnis[i] == vni)
			return 1;
	return 0;
}

/* Outer Ethernet (two VLAN tags at most) / IPv4 / UDP to the VXLAN port /
 * VXLAN with the I flag: the length of those headers, or 0 if the packet is
 * not a well-formed VXLAN packet.
 */
static uint32_t parse_outer(const struct prism_overlay *o, const uint8_t *p, uint32_t len,
			    uint32_t *vni, uint32_t *src_ip)
{
	uint32_t off = ETH_HLEN, ihl, i;
	uint16_t proto;

	if (len < ETH_HLEN)
		return 0;
	proto = rd16(p + 12);
	for (i = 0; i < 2 && (proto == ETH_P_8021Q || proto == ETH_P_8021AD); i++) {
		if (len < off + 4)
			return 0;
		proto = rd16(p + off + 2);
		off += 4;
	}
	if (proto != ETH_P_IP || len < off + 20 || (p[off] >> 4) != 4)
		return 0;
	ihl = (p[off] & 0xf) * 4u;
	if (ihl < 20 || p[off + 9] != IPPROTO_UDP || (rd16(p + off + 6) & 0x3fff))
		return 0;
	memcpy(src_ip, p + off + 12, 4);
	off += ihl;
	if (len < off + 16 || rd16(p + off + 2) != o->cfg.vxlan_port)
		return 0;
	off += 8;
	if (!(p[off] & 0x08))
		return 0;
	*vni = (uint32_t)p[off + 4] << 16 | (uint32_t)p[off + 5] << 8 | p[off + 6];
	return off + 8;
}

/* ---- checksums: what a frame asks of the kernel when it is sent ------- */

/* Offload needs room for the TX metadata in front of the frame (always
 * there for a received frame: the kernel leaves XDP_PACKET_HEADROOM).
 */
static inline int csum_can_offload(const struct prism_overlay *o, uint64_t addr, uint32_t extra)
{
	return o->cfg.checksum == PRISM_CSUM_OFFLOAD &&
	       addr - frame_base(o->u, addr) >= extra + o->u->txmd_len;
}

/* A frame a container sent: its checksum may be partial (the veth's TX
 * offload), so it is always finished; see prism_csum.c. Ethernet padding
 * is cut, since an offloaded sum runs to the frame's end. Returns the TX
 * request, relative to the frame's first byte (0 when done here).
 */
static uint32_t csum_local(struct prism_overlay *o, uint64_t addr, uint32_t *len)
{
	uint8_t *f = pkt(o, addr);
	struct prism_l4 l;

	if (!prism_l4_locate(f, *len, &l))
		return 0;
	*len = l.end;
	/* PRISM_ENCAP_LEN: it may yet be encapsulated in front */
	if (csum_can_offload(o, addr, PRISM_ENCAP_LEN)) {
		prism_l4_write_seed(f, &l);
		o->cnt.csum_offload++;
		return PRISM_CSUM_REQ(l.start, l.offset);
	}
	prism_l4_complete(f, &l);
	o->cnt.csum_software++;
	return 0;
}

/* A frame from the wire keeps its checksum, so that the container's stack
 * verifies it and drops a corrupted one (the frame reaches it as
 * CHECKSUM_NONE). The exception is accept_partial (a veth uplink on a test
 * host): a field holding exactly the pseudo-header seed was left partial
 * by the sender's veth, and is finished like a container's. A corrupted
 * frame passes that way only if its field happened to equal the seed.
 */
static uint32_t csum_ingress(struct prism_overlay *o, uint64_t addr, uint32_t *len)
{
	uint8_t *f = pkt(o, addr);
	struct prism_l4 l;

	if (!o->cfg.accept_partial || !prism_l4_locate(f, *len, &l) || !prism_l4_is_seed(f, &l))
		return 0;
	o->cnt.csum_partial_in++;
	*len = l.end;
	if (csum_can_offload(o, addr, 0)) {
		o->cnt.csum_offload++;
		return PRISM_CSUM_REQ(l.start, l.offset);
	}
	prism_l4_complete(f, &l);
	o->cnt.csum_software++;
	return 0;
}

/* A GSO aggregate from the uplink (longer than a wire frame: in chained
 * frames, or in one when it fits): generic-mode XDP kept the sender's GSO
 * packet whole, or the kernel's GRO made it. It can reach a container only
 * as a GSO packet, which the container's kernel takes as CHECKSUM_PARTIAL
 * without verifying it; so its checksum is settled here, from the headers
 * alone (the first part holds them: the kernel fills a part before the
 * next). A GSO sender and GRO both leave the pseudo-header seed over the
 * whole length in the field (GRO merges only segments whose checksums it
 * verified); any other field is not such a packet. Returns the checksum
 * request, or 0 to drop: not TCP over IPv4 behind a plain Ethernet header
 * (nothing else is sent as GSO), headers not in the first part, or not the
 * seed.
 */
static uint32_t csum_aggregate(struct prism_overlay *o, uint64_t addr, uint32_t *len)
{
	uint8_t *f = pkt(o, addr);
	uint32_t first = is_chained(o->u, addr) ?
				 (uint32_t)(o->u->part_end[frame_of(o->u, addr)] - addr) :
				 *len;
	struct prism_l4 l;

	if (!prism_l4_locate(f, *len, &l) || l.proto != IPPROTO_TCP || l.l3 != ETH_HLEN ||
	    l.start + 20 > first || l.start + (f[l.start + 12] >> 4) * 4u > first ||
	    !prism_l4_is_seed(f, &l))
		return 0;
	*len = l.end;
	return PRISM_CSUM_REQ(l.start, l.offset | PRISM_CSUM_AGG);
}

/* ---- flooding: a frame that is not for one port ----------------------- */

/* The ports of vni other than src_port, as a bitmap; their number. */
static uint32_t vni_ports(const struct prism_overlay *o, uint32_t vni, uint32_t src_port,
			  uint64_t *sel)
{
	uint32_t p, n = 0;

	memset(sel, 0, PRISM_MCAST_WORDS * sizeof(*sel));
	for (p = 1; p < o->nports; p++)
		if (p != src_port && o->ports[p].vni == vni) {
			sel[p / 64] |= 1ull << (p % 64);
			n++;
		}
	return n;
}

/* The local ports a broadcast, multicast or unknown unicast frame f from
 * src_port (the uplink or a container) goes to, as a bitmap; their number.
 * *vni_n gets the number of ports flooding would reach. Without snooping,
 * or before it is ready, that is every other port of the VNI; with it, an
 * IPv6 group's frame goes to the group's members and an MLD report to no
 * container (a container's report is learned here).
 */
static uint32_t flood_targets(struct prism_overlay *o, uint32_t vni, uint32_t src_port,
			      const uint8_t *f, uint32_t len, uint64_t *sel, uint32_t *vni_n)
{
	uint64_t now = o->cur_poll_ts, members[PRISM_MCAST_WORDS] = { 0 };
	struct prism_mcast *m = o->mc;
	uint32_t n, w, kept = 0;
	int kind;

	n = *vni_n = vni_ports(o, vni, src_port, sel);
	if (!m || !(f[0] & 1))
		return n;
	kind = prism_mcast_classify(f, len);
	if (kind == PRISM_MC_ALL)
		return n;
	mcast_lock(m);
	if (kind == PRISM_MC_REPORT) {
		if (src_port != PRISM_UPLINK_PORT)
			prism_mcast_learn_locked(m, vni, src_port, f, len, now);
	} else if (prism_mcast_pruning(m, now)) {
		prism_mcast_select(m, vni, f, now, members);
	} else {
		mcast_unlock(m);
		return n; /* not ready: the containers may not have reported yet */
	}
	mcast_unlock(m);
	for (w = 0; w < PRISM_MCAST_WORDS; w++) {
		sel[w] &= members[w];
		kept += (uint32_t)__builtin_popcountll(sel[w]);
	}
	o->cnt.mcast_pruned += n - kept;
	return kept;
}

/* The frame to the n ports of sel: a copy for each, except that the last
 * takes the original when no other target (more) follows.
 */
static void emit_ports(struct prism_overlay *o, struct prism_batch *out, uint64_t addr,
		       uint32_t len, uint64_t ts, uint8_t cls, uint32_t csum, const uint64_t *sel,
		       uint32_t n, uint32_t more, uint64_t *passed)
{
	uint32_t w;

	for (w = 0; w < PRISM_MCAST_WORDS; w++) {
		uint64_t bits = sel[w];

		while (bits) {
			uint32_t p = w * 64 + (uint32_t)__builtin_ctzll(bits);
			uint64_t frame = addr;

			bits &= bits - 1;
			if (--n || more) {
				frame = copy_frame(o, addr, len);
				if (!frame)
					continue;
			}
			if (!emit(o, out, frame, len, ts, p, cls, csum))
				(*passed)++;
		}
	}
}

int prism_overlay_inject(struct prism_overlay *o, const uint8_t *frame, uint32_t len,
			 struct prism_batch *out)
{
	uint32_t p, made = 0;

	if (len < ETH_HLEN || len > o->u->frame_size - o->u->headroom - XDP_PACKET_HEADROOM)
		return -EINVAL;
	for (p = 1; p < o->nports; p++) {
		uint64_t addr = new_frame(o);

		if (!addr)
			continue;
		memcpy(pkt(o, addr), frame, len);
		if (!emit(o, out, addr, len, 0, p, 0, 0))
			made++;
	}
	return (int)made;
}

/* ---- decap: uplink -> containers -------------------------------------- */

int prism_decap_batch(struct prism_overlay *o, struct prism_batch *in, struct prism_batch *out)
{
	uint32_t i, n = in->n, before = out->n;

	mark_busy(o, PRISM_UPLINK_PORT); /* its fill ring gave frames */

	for (i = 0; i < n; i++) {
		uint64_t addr = in->addr[i], ts = in->ts[i];
		uint32_t len = in->len[i], vni, src_ip, hdr, idx, csum, n, vni_n;
		uint64_t sel[PRISM_MCAST_WORDS];
		const uint8_t *inner;
		int kind, agg;
		uint8_t pcls;

		o->cnt.decap_in++;
		o->cur_poll_ts = in->poll_ts[i];
		hdr = parse_outer(o, pkt(o, addr), len, &vni, &src_ip);
		if (!hdr) {
			drop(o, addr, &o->cnt.drop_malformed_outer);
			continue;
		}
		if (len < hdr + ETH_HLEN) {
			drop(o, addr, &o->cnt.drop_malformed_inner);
			continue;
		}
		if (!vni_local(o, vni)) {
			drop(o, addr, &o->cnt.drop_unknown_vni);
			continue;
		}
		kind = vtep_of(o, vni, src_ip);
		if (kind < 0) {
			drop(o, addr, &o->cnt.drop_unknown_vtep);
			continue;
		}
		addr += hdr;
		len -= hdr;
		inner = pkt(o, addr);
		pcls = in->cls[i];
		/* Longer than a wire frame: only generic-mode XDP (a multi-buffer
		 * UMEM) passes such a packet; a short one fits one frame.
		 */
		agg = o->u->multibuf &&
		      (is_chained(o->u, addr) || len > o->cfg.uplink_mtu - OUTER_IP_UDP_VXLAN);
		csum = agg ? csum_aggregate(o, addr, &len) : csum_ingress(o, addr, &len);
		if (agg && !csum) {
			drop(o, addr, &o->cnt.drop_aggregate);
			continue;
		}
		if (o->cfg.learn && !(inner[6] & 1))
			prism_fdb_learn(&o->fdb, vni, inner + 6, (uint16_t)kind, o->cur_poll_ts);

		if (!(inner[0] & 1)) {
			kind = overlay_lookup(o, vni, inner, &idx);
			if (kind == FDB_LOCAL) {
				if (!emit(o, out, addr, len, ts, idx, pcls, csum)) {
					o->cnt.decap_out++;
					o->cnt.agg_in += agg;
				}
				continue;
			}
			if (kind == FDB_REMOTE) { /* lives where it came from */
				drop(o, addr, &o->cnt.drop_unknown_dst);
				continue;
			}
			/* Unknown: flood locally, as a bridge would. */
		}
		if (agg) { /* one GSO packet to one container, never a flood's copies */
			drop(o, addr, &o->cnt.drop_aggregate);
			continue;
		}
		n = flood_targets(o, vni, PRISM_UPLINK_PORT, inner, len, sel, &vni_n);
		if (!n) {
			drop(o, addr, vni_n ? &o->cnt.drop_no_listener : &o->cnt.drop_unknown_dst);
			continue;
		}
		emit_ports(o, out, addr, len, ts, pcls, csum, sel, n, 0, &o->cnt.decap_out);
	}
	in->n = 0;
	return out->n - before;
}

/* ---- encap: containers -> uplink (or another container) -------------- */

/* The kernel picks the outer UDP source port from a hash of the inner flow
 * (udp_flow_src_port), so that ECMP and RSS spread flows; same idea here:
 * addresses and ports of an inner IPv4 packet, else the MAC addresses.
 */
static uint16_t flow_sport(const uint8_t *f, uint32_t len)
{
	uint32_t h = 0x811c9dc5, i, n = 12, start = 0;

	if (len >= ETH_HLEN + 20 && rd16(f + 12) == ETH_P_IP) {
		uint32_t ihl = (f[ETH_HLEN] & 0xf) * 4u;
		uint8_t proto = f[ETH_HLEN + 9];

		start = ETH_HLEN + 12; /* saddr, daddr */
		n = 8;
		for (i = 0; i < n; i++)
			h = (h ^ f[start + i]) * 0x01000193;
		h = (h ^ proto) * 0x01000193;
		if ((proto == IPPROTO_TCP || proto == IPPROTO_UDP) && len >= ETH_HLEN + ihl + 4 &&
		    !(rd16(f + ETH_HLEN + 6) & 0x1fff))
			for (i = 0; i < 4; i++)
				h = (h ^ f[ETH_HLEN + ihl + i]) * 0x01000193;
	} else {
		for (i = 0; i < n; i++)
			h = (h ^ f[start + i]) * 0x01000193;
	}
	h ^= h >> 16;
	return (uint16_t)(SPORT_MIN +
			  (uint32_t)(((uint64_t)h * (SPORT_MAX - SPORT_MIN + 1)) >> 32));
}

/* Write Ethernet/IPv4/UDP/VXLAN in front of the frame at *addr; on success
 * *addr and *len describe the whole packet. Returns 0 or a drop counter.
 */
static uint64_t *encap_one(struct prism_overlay *o, uint64_t *addr, uint32_t *len,
			   const struct vtep *v)
{
	uint32_t ip_len = *len + OUTER_IP_UDP_VXLAN;
	uint16_t sport;
	uint8_t *h;

	if (ip_len > o->cfg.uplink_mtu)
		return &o->cnt.drop_mtu;
	if (*addr - frame_base(o->u, *addr) < PRISM_ENCAP_LEN)
		return &o->cnt.drop_no_headroom; /* csum_local checked the metadata's room */
	sport = flow_sport(pkt(o, *addr), *len);
	*addr -= PRISM_ENCAP_LEN;
	*len += PRISM_ENCAP_LEN;
	h = pkt(o, *addr);

	memcpy(h, v->mac, ETH_ALEN);
	memcpy(h + 6, o->cfg.local_mac, ETH_ALEN);
	h[12] = ETH_P_IP >> 8;
	h[13] = ETH_P_IP & 0xff;

	h += ETH_HLEN; /* IPv4, no options */
	h[0] = 0x45;
	h[1] = 0;
	h[2] = ip_len >> 8;
	h[3] = ip_len & 0xff;
	o->ip_id++;
	h[4] = o->ip_id >> 8;
	h[5] = o->ip_id & 0xff;
	h[6] = 0;
	h[7] = 0;
	h[8] = o->cfg.ttl;
	h[9] = IPPROTO_UDP;
	memcpy(h + 12, &o->cfg.local_ip, 4);
	memcpy(h + 16, &v->ip, 4);
	ipv4_write_csum(h);

	h += 20; /* UDP, checksum 0 as RFC 7348 allows over IPv4 */
	h[0] = sport >> 8;
	h[1] = sport & 0xff;
	h[2] = o->cfg.vxlan_port >> 8;
	h[3] = o->cfg.vxlan_port & 0xff;
	h[4] = (ip_len - 20) >> 8;
	h[5] = (ip_len - 20) & 0xff;
	h[6] = h[7] = 0;

	h += 8; /* VXLAN: I flag, VNI */
	h[0] = 0x08;
	h[1] = h[2] = h[3] = 0;
	h[4] = v->vni >> 16;
	h[5] = (v->vni >> 8) & 0xff;
	h[6] = v->vni & 0xff;
	h[7] = 0;
	return NULL;
}

static void send_to_vtep(struct prism_overlay *o, struct prism_batch *out, uint64_t addr,
			 uint32_t len, uint64_t ts, const struct vtep *v, uint8_t cls,
			 uint32_t csum)
{
	uint64_t *reason = encap_one(o, &addr, &len, v);

	if (reason) {
		drop(o, addr, reason);
		return;
	}
	if (csum) /* the checksum moved back with the packet's start */
		csum += PRISM_CSUM_REQ(PRISM_ENCAP_LEN, 0);
	if (!emit(o, out, addr, len, ts, PRISM_UPLINK_PORT, cls, csum))
		o->cnt.encap_out++;
}

int prism_encap_batch(struct prism_overlay *o, uint32_t src_port, struct prism_batch *in,
		      struct prism_batch *out)
{
	uint32_t i, count = in->n, before = out->n, vni, idx, v;

	if (src_port == PRISM_UPLINK_PORT || src_port >= o->nports) {
		for (i = 0; i < count; i++)
			drop(o, in->addr[i], &o->cnt.drop_no_port);
		in->n = 0;
		return -EINVAL;
	}
	vni = o->ports[src_port].vni;
	mark_busy(o, src_port); /* its fill ring gave frames */
	for (i = 0; i < count; i++) {
		uint64_t addr = in->addr[i], ts = in->ts[i], copy, sel[PRISM_MCAST_WORDS];
		uint32_t len = in->len[i], vteps = 0, csum, n, vni_n;
		const uint8_t *f = pkt(o, addr);
		uint8_t pcls;
		int kind;

		o->cnt.encap_in++;
		o->cur_poll_ts = in->poll_ts[i];
		if (len < ETH_HLEN) {
			drop(o, addr, &o->cnt.drop_malformed_inner);
			continue;
		}
		if (is_chained(o->u, addr)) { /* nothing here segments it for the wire */
			drop(o, addr, &o->cnt.drop_aggregate);
			continue;
		}
		pcls = in->cls[i];
		csum = csum_local(o, addr, &len); /* before flooding copies it */
		if (!(f[0] & 1)) {
			kind = overlay_lookup(o, vni, f, &idx);
			if (kind == FDB_LOCAL) {
				if (idx == src_port)
					drop(o, addr, &o->cnt.drop_unknown_dst); /* no hairpin */
				else if (!emit(o, out, addr, len, ts, idx, pcls, csum))
					o->cnt.local_out++;
				continue;
			}
			if (kind == FDB_REMOTE && idx < o->nvteps) {
				send_to_vtep(o, out, addr, len, ts, &o->vteps[idx], pcls, csum);
				continue;
			}
		}
		/* Flood: the local targets take copies; the last VTEP (or, with
		 * none, the last port) takes the original, copies being made
		 * before it is encapsulated.
		 */
		n = flood_targets(o, vni, src_port, f, len, sel, &vni_n);
		for (v = 0; v < o->nvteps; v++)
			vteps += o->vteps[v].vni == vni;
		if (!n && !vteps) {
			drop(o, addr, vni_n ? &o->cnt.drop_no_listener : &o->cnt.drop_unknown_dst);
			continue;
		}
		emit_ports(o, out, addr, len, ts, pcls, csum, sel, n, vteps, &o->cnt.local_out);
		for (v = 0; vteps && v < o->nvteps; v++) {
			if (o->vteps[v].vni != vni)
				continue;
			if (--vteps == 0) {
				send_to_vtep(o, out, addr, len, ts, &o->vteps[v], pcls, csum);
				break;
			}
			copy = copy_frame(o, addr, len);
			if (copy)
				send_to_vtep(o, out, copy, len, ts, &o->vteps[v], pcls, csum);
		}
	}
	in->n = 0;
	return out->n - before;
}
