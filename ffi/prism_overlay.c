/* prism_overlay.c - the overlay's per-packet work: forwarding table, VXLAN decap and encap in place, flooding, and delivery to each port's socket. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/if_ether.h>
#include <linux/in.h>
#include <xdp/xsk.h>

#include "prism.h"
#include "prism_fdb.h"
#include "prism_internal.h"

/*
 * Every function here takes a whole batch. Nothing is copied except the
 * extra frames of a flood (one per additional target): decap moves the
 * descriptor past the outer headers, encap writes them into the headroom
 * that AF_XDP leaves in front of every received packet (XDP_PACKET_HEADROOM
 * plus the UMEM's own).
 *
 * Forwarding follows the kernel's VXLAN device and bridge: containers are
 * static entries (VNI, MAC) -> port; remote MACs are learned from the inner
 * source of decapsulated frames, (VNI, MAC) -> the VTEP that sent them;
 * broadcast, multicast and unknown unicast are flooded — to the local
 * ports of the VNI when they came from the uplink (split horizon), and to
 * the other local ports and every VTEP of the VNI when a container sent them.
 */

#define OUTER_IP_UDP_VXLAN 36 /* what the uplink's MTU must also hold */
#define SPORT_MIN 32768 /* the kernel's default ip_local_port_range */
#define SPORT_MAX 60999

struct port {
	struct prism_xsk *xsk[PRISM_NCLASS];
	uint32_t vni;
	uint8_t mac[ETH_ALEN];
	struct prism_port_counters cnt;
};

struct vtep {
	uint32_t vni;
	uint32_t ip; /* network order */
	uint8_t mac[ETH_ALEN];
};

struct prism_overlay {
	struct prism_umem *u;
	struct prism_overlay_config cfg;
	struct port ports[PRISM_MAX_PORTS];
	uint32_t nports; /* port 0, the uplink, counts once set */
	struct vtep vteps[PRISM_MAX_VTEPS];
	uint32_t nvteps;
	uint32_t vnis[PRISM_MAX_PORTS]; /* VNIs with a local port */
	uint32_t nvnis;
	uint16_t ip_id;
	struct prism_overlay_counters cnt;
	struct prism_hist hist[PRISM_NCLASS]; /* arrival (XDP stamp) to TX kick */
	struct prism_hist hist_poll[PRISM_NCLASS]; /* RX poll to TX kick */
	uint64_t cur_poll_ts; /* poll time of the packet a stage is working on */
	/* Ports whose rings moved since the last service (a TX, or an RX that took
	 * fill-ring frames): service walks only these, and every port now and then.
	 */
	uint64_t busy[(PRISM_MAX_PORTS + 63) / 64];
	uint32_t services;
	uint32_t *order; /* deliver's counting sort */
	uint32_t order_cap;
	struct prism_fdb fdb;
};

/* ---- forwarding table (prism_fdb.c) ---------------------------------- */

_Static_assert(PRISM_FDB_VTEPS == PRISM_MAX_VTEPS, "a learned entry's VTEP indexes the FDB's counts");

int prism_overlay_lookup(struct prism_overlay *o, uint32_t vni, const uint8_t *mac, uint32_t *idx)
{
	return prism_fdb_lookup(&o->fdb, vni, mac, o->cur_poll_ts, idx);
}

/* ---- setup ------------------------------------------------------------ */

int prism_overlay_new(struct prism_overlay **out, struct prism_umem *u,
		      const struct prism_overlay_config *cfg)
{
	struct prism_overlay *o;

	if (!cfg->vxlan_port || cfg->uplink_mtu < 68 || !cfg->ttl ||
	    (cfg->checksum != PRISM_CSUM_OFFLOAD && cfg->checksum != PRISM_CSUM_SOFTWARE))
		return -EINVAL;
	/* Offload needs a kernel that reads TX metadata (a UMEM without the
	 * kernel, in unit tests, only records the requests).
	 */
	if (cfg->checksum == PRISM_CSUM_OFFLOAD && u->registered && !u->txmd_len)
		return -EOPNOTSUPP;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->u = u;
	o->cfg = *cfg;
	prism_fdb_init(&o->fdb, cfg->fdb_ageing_s, cfg->fdb_max_per_vtep);
	*out = o;
	return 0;
}

void prism_overlay_delete(struct prism_overlay *o)
{
	if (!o)
		return;
	free(o->order);
	free(o);
}

static int set_sockets(struct port *p, struct prism_xsk **by_class, uint32_t nclass)
{
	uint32_t c;

	memset(p->xsk, 0, sizeof(p->xsk));
	if (!nclass)
		return 0; /* no sockets: the stages still work (unit tests) */
	if (nclass > PRISM_NCLASS || !by_class[0])
		return -EINVAL;
	for (c = 0; c < nclass; c++)
		p->xsk[c] = by_class[c];
	for (c = 0; c < PRISM_NCLASS; c++)
		if (!p->xsk[c])
			p->xsk[c] = p->xsk[0];
	return 0;
}

int prism_overlay_set_uplink(struct prism_overlay *o, struct prism_xsk **by_class, uint32_t nclass)
{
	int err = set_sockets(&o->ports[PRISM_UPLINK_PORT], by_class, nclass);

	if (err)
		return err;
	if (!o->nports)
		o->nports = 1;
	return PRISM_UPLINK_PORT;
}

int prism_overlay_add_container(struct prism_overlay *o, struct prism_xsk **by_class,
				uint32_t nclass, uint32_t vni, const uint8_t *mac)
{
	uint32_t idx, i;
	struct port *p;
	int err;

	if (!o->nports)
		return -EINVAL; /* the uplink comes first: it is port 0 */
	if (o->nports >= PRISM_MAX_PORTS)
		return -ENOSPC;
	if (vni >= 1u << 24 || (mac[0] & 1))
		return -EINVAL;
	if (prism_overlay_lookup(o, vni, mac, &idx) == FDB_LOCAL)
		return -EEXIST;
	p = &o->ports[o->nports];
	err = set_sockets(p, by_class, nclass);
	if (err)
		return err;
	err = prism_fdb_add_local(&o->fdb, vni, mac, o->nports);
	if (err)
		return err;
	p->vni = vni;
	memcpy(p->mac, mac, ETH_ALEN);
	for (i = 0; i < o->nvnis && o->vnis[i] != vni; i++)
		;
	if (i == o->nvnis)
		o->vnis[o->nvnis++] = vni;
	return o->nports++;
}

int prism_overlay_add_vtep(struct prism_overlay *o, uint32_t vni, uint32_t ip, const uint8_t *mac)
{
	uint32_t i;

	if (vni >= 1u << 24)
		return -EINVAL;
	for (i = 0; i < o->nvteps; i++)
		if (o->vteps[i].vni == vni && o->vteps[i].ip == ip)
			return -EEXIST;
	if (o->nvteps >= PRISM_MAX_VTEPS)
		return -ENOSPC;
	o->vteps[o->nvteps].vni = vni;
	o->vteps[o->nvteps].ip = ip;
	memcpy(o->vteps[o->nvteps].mac, mac, ETH_ALEN);
	return o->nvteps++;
}

int prism_overlay_set_vtep_mac(struct prism_overlay *o, uint32_t vtep, const uint8_t *mac)
{
	if (vtep >= o->nvteps)
		return -ENOENT;
	memcpy(o->vteps[vtep].mac, mac, ETH_ALEN);
	return 0;
}

void prism_overlay_counters(struct prism_overlay *o, struct prism_overlay_counters *out)
{
	*out = o->cnt;
	out->learned = o->fdb.changes;
	out->fdb_entries = o->fdb.entries;
	out->fdb_refused = o->fdb.refused;
	out->fdb_expired = o->fdb.expired;
}

int prism_overlay_port_counters(struct prism_overlay *o, uint32_t port,
				struct prism_port_counters *out)
{
	if (port >= o->nports)
		return -ENOENT;
	*out = o->ports[port].cnt;
	return 0;
}

/* ---- helpers of the stages -------------------------------------------- */

static inline void mark_busy(struct prism_overlay *o, uint32_t port)
{
	o->busy[port / 64] |= 1ull << (port % 64);
}

static inline uint8_t *pkt(struct prism_overlay *o, uint64_t addr)
{
	return o->u->area + addr;
}

static inline void drop(struct prism_overlay *o, uint64_t addr, uint64_t *reason)
{
	pool_put(o->u, addr);
	o->u->user--;
	(*reason)++;
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

/* A fresh frame holding a copy of len bytes at addr, with the same
 * headroom a received packet has; 0 when the pool is empty.
 */
static uint64_t copy_frame(struct prism_overlay *o, uint64_t addr, uint32_t len)
{
	struct prism_umem *u = o->u;
	uint64_t copy;

	if (!u->pool_n) {
		o->cnt.drop_no_frame++;
		return 0;
	}
	copy = u->pool[--u->pool_n] + u->headroom + XDP_PACKET_HEADROOM;
	u->user++;
	memcpy(u->area + copy, u->area + addr, len);
	o->cnt.flood_copies++;
	return copy; /* never 0: it starts past the headroom */
}

static inline int vni_local(const struct prism_overlay *o, uint32_t vni)
{
	uint32_t i;

	for (i = 0; i < o->nvnis; i++)
		if (o->vnis[i] == vni)
			return 1;
	return 0;
}

static inline int vtep_of(const struct prism_overlay *o, uint32_t vni, uint32_t ip)
{
	uint32_t i;

	for (i = 0; i < o->nvteps; i++)
		if (o->vteps[i].ip == ip && o->vteps[i].vni == vni)
			return i;
	return -1;
}

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
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

/* ---- measurement: latency histograms ------------------------------------
 * A packet's class is the one XDP decided (its metadata, read by rx into
 * the batch's cls): one classifier, in BPF, for steering and measurement.
 */

int prism_hist_bucket(uint64_t v)
{
	int msb;

	if (v < (1u << PRISM_HIST_SUB_BITS))
		return (int)v;
	msb = 63 - __builtin_clzll(v);
	return ((msb - PRISM_HIST_SUB_BITS + 1) << PRISM_HIST_SUB_BITS) +
	       (int)((v >> (msb - PRISM_HIST_SUB_BITS)) & ((1u << PRISM_HIST_SUB_BITS) - 1));
}

uint64_t prism_hist_bucket_low(int b)
{
	int msb, sub;

	if (b < (1 << PRISM_HIST_SUB_BITS))
		return (uint64_t)b;
	msb = (b >> PRISM_HIST_SUB_BITS) + PRISM_HIST_SUB_BITS - 1;
	sub = b & ((1 << PRISM_HIST_SUB_BITS) - 1);
	return (uint64_t)((1 << PRISM_HIST_SUB_BITS) + sub) << (msb - PRISM_HIST_SUB_BITS);
}

static inline void hist_add(struct prism_hist *h, uint64_t v)
{
	h->buckets[prism_hist_bucket(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
	if (v < h->min || h->count == 1)
		h->min = v;
}

int prism_overlay_hist(struct prism_overlay *o, uint32_t cls, int from_poll,
		       struct prism_hist *out)
{
	if (cls >= PRISM_NCLASS)
		return -EINVAL;
	*out = from_poll ? o->hist_poll[cls] : o->hist[cls];
	return 0;
}

void prism_overlay_hist_reset(struct prism_overlay *o)
{
	memset(o->hist, 0, sizeof(o->hist));
	memset(o->hist_poll, 0, sizeof(o->hist_poll));
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

/* ---- decap: uplink -> containers -------------------------------------- */

int prism_decap_batch(struct prism_overlay *o, struct prism_batch *in, struct prism_batch *out)
{
	uint32_t i, n = in->n, before = out->n;

	mark_busy(o, PRISM_UPLINK_PORT); /* its fill ring gave frames */

	for (i = 0; i < n; i++) {
		uint64_t addr = in->addr[i], ts = in->ts[i];
		uint32_t len = in->len[i], vni, src_ip, hdr, idx, p, csum;
		const uint8_t *inner;
		int kind, first;
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
		csum = csum_ingress(o, addr, &len);
		if (o->cfg.learn && !(inner[6] & 1))
			prism_fdb_learn(&o->fdb, vni, inner + 6, (uint16_t)kind, o->cur_poll_ts);

		if (!(inner[0] & 1)) {
			kind = prism_overlay_lookup(o, vni, inner, &idx);
			if (kind == FDB_LOCAL) {
				if (!emit(o, out, addr, len, ts, idx, pcls, csum))
					o->cnt.decap_out++;
				continue;
			}
			if (kind == FDB_REMOTE) { /* lives where it came from */
				drop(o, addr, &o->cnt.drop_unknown_dst);
				continue;
			}
			/* Unknown: flood locally, as a bridge would. */
		}
		first = 1;
		for (p = 1; p < o->nports; p++) {
			uint64_t copy;

			if (o->ports[p].vni != vni)
				continue;
			if (first) {
				first = 0;
				continue; /* the original goes last, after the copies */
			}
			copy = copy_frame(o, addr, len);
			if (copy && !emit(o, out, copy, len, ts, p, pcls, csum))
				o->cnt.decap_out++;
		}
		if (first) {
			drop(o, addr, &o->cnt.drop_unknown_dst);
			continue;
		}
		for (p = 1; p < o->nports && o->ports[p].vni != vni; p++)
			;
		if (!emit(o, out, addr, len, ts, p, pcls, csum))
			o->cnt.decap_out++;
	}
	in->n = 0;
	return out->n - before;
}

/* ---- encap: containers -> uplink (or another container) -------------- */

static inline uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

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
	return (uint16_t)(SPORT_MIN + (uint32_t)(((uint64_t)h * (SPORT_MAX - SPORT_MIN + 1)) >> 32));
}

/* Write Ethernet/IPv4/UDP/VXLAN in front of the frame at *addr; on success
 * *addr and *len describe the whole packet. Returns 0 or a drop counter.
 */
static uint64_t *encap_one(struct prism_overlay *o, uint64_t *addr, uint32_t *len,
			   const struct vtep *v)
{
	uint32_t ip_len = *len + OUTER_IP_UDP_VXLAN, sum = 0, i;
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
	h[10] = h[11] = 0;
	memcpy(h + 12, &o->cfg.local_ip, 4);
	memcpy(h + 16, &v->ip, 4);
	for (i = 0; i < 20; i += 2)
		sum += rd16(h + i);
	sum = csum_fold(sum);
	h[10] = sum >> 8;
	h[11] = sum & 0xff;

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
			 uint32_t len, uint64_t ts, const struct vtep *v, uint8_t cls, uint32_t csum)
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
	uint32_t i, n = in->n, before = out->n, vni, idx, p, v;

	if (src_port == PRISM_UPLINK_PORT || src_port >= o->nports) {
		for (i = 0; i < n; i++)
			drop(o, in->addr[i], &o->cnt.drop_no_port);
		in->n = 0;
		return -EINVAL;
	}
	vni = o->ports[src_port].vni;
	mark_busy(o, src_port); /* its fill ring gave frames */
	for (i = 0; i < n; i++) {
		uint64_t addr = in->addr[i], ts = in->ts[i], copy;
		uint32_t len = in->len[i], targets = 0, csum;
		const uint8_t *f = pkt(o, addr);
		uint8_t pcls;
		int kind;

		o->cnt.encap_in++;
		o->cur_poll_ts = in->poll_ts[i];
		if (len < ETH_HLEN) {
			drop(o, addr, &o->cnt.drop_malformed_inner);
			continue;
		}
		pcls = in->cls[i];
		csum = csum_local(o, addr, &len); /* before flooding copies it */
		if (!(f[0] & 1)) {
			kind = prism_overlay_lookup(o, vni, f, &idx);
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
		/* Flood: copies for every target but the last, which takes the
		 * original (copies are made before it is encapsulated).
		 */
		for (p = 1; p < o->nports; p++)
			targets += p != src_port && o->ports[p].vni == vni;
		for (v = 0; v < o->nvteps; v++)
			targets += o->vteps[v].vni == vni;
		if (!targets) {
			drop(o, addr, &o->cnt.drop_unknown_dst);
			continue;
		}
		for (p = 1; p < o->nports; p++) {
			if (p == src_port || o->ports[p].vni != vni)
				continue;
			if (--targets == 0) {
				if (!emit(o, out, addr, len, ts, p, pcls, csum))
					o->cnt.local_out++;
				break;
			}
			copy = copy_frame(o, addr, len);
			if (copy && !emit(o, out, copy, len, ts, p, pcls, csum))
				o->cnt.local_out++;
		}
		for (v = 0; targets && v < o->nvteps; v++) {
			if (o->vteps[v].vni != vni)
				continue;
			if (--targets == 0) {
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

/* ---- deliver: TX on each port's socket -------------------------------- */

static void tx_port(struct prism_overlay *o, struct port *pt, uint32_t cls,
		    const struct prism_batch *b, const uint32_t *idx, uint32_t n)
{
	struct prism_xsk *x = pt->xsk[cls < PRISM_NCLASS ? cls : 0];
	uint32_t room, first, i;
	uint64_t bytes = 0;

	if (!x) {
		for (i = 0; i < n; i++)
			drop(o, b->addr[idx[i]], &o->cnt.drop_no_port);
		return;
	}
	mark_busy(o, (uint32_t)(pt - o->ports));
	room = xsk_prod_nb_free(&x->tx, n);
	if (room > n)
		room = n;
	if (room && xsk_ring_prod__reserve(&x->tx, room, &first) == room) {
		for (i = 0; i < room; i++) {
			struct xdp_desc *d = xsk_ring_prod__tx_desc(&x->tx, first + i);

			d->addr = b->addr[idx[i]];
			d->len = b->len[idx[i]];
			d->options = 0;
			if (b->csum[idx[i]] && o->u->txmd_len) {
				struct xsk_tx_metadata *md =
					(void *)(pkt(o, d->addr) - o->u->txmd_len);

				md->flags = XDP_TXMD_FLAGS_CHECKSUM;
				md->request.csum_start = b->csum[idx[i]] >> 16;
				md->request.csum_offset = b->csum[idx[i]] & 0xffff;
				d->options = XDP_TX_METADATA;
			}
			bytes += d->len;
		}
		xsk_ring_prod__submit(&x->tx, room);
		o->u->user -= room;
		o->u->kernel_tx += room;
		x->cnt.tx_packets += room;
		x->cnt.tx_bytes += bytes;
		pt->cnt.tx_packets += room;
		pt->cnt.tx_bytes += bytes;
		o->cnt.deliver_out += room;
	} else {
		room = 0;
	}
	if (room < n) {
		x->cnt.tx_ring_full++;
		pt->cnt.tx_full += n - room;
		for (i = room; i < n; i++)
			drop(o, b->addr[idx[i]], &o->cnt.drop_tx_full);
	}
	/* Kick only when the kernel asks for it (always, in copy mode). */
	if (room && xsk_ring_prod__needs_wakeup(&x->tx))
		prism_xsk_kick(x);
	/* In-pipeline latency: from the RX poll to this kick, per class. */
	if (room) {
		uint64_t now = prism_now_ns();

		for (i = 0; i < room; i++) {
			uint32_t j = idx[i];

			if (!b->ts[j] || b->cls[j] >= PRISM_NCLASS)
				continue;
			hist_add(&o->hist[b->cls[j]], now > b->ts[j] ? now - b->ts[j] : 0);
			hist_add(&o->hist_poll[b->cls[j]],
				 now > b->poll_ts[j] ? now - b->poll_ts[j] : 0);
		}
	}
}

int prism_deliver_batch(struct prism_overlay *o, uint32_t cls, struct prism_batch *b)
{
	uint32_t count[PRISM_MAX_PORTS + 1] = { 0 }, pos[PRISM_MAX_PORTS + 1];
	uint32_t i, p, n = b->n, sent = o->cnt.deliver_out;

	if (!n)
		return 0;
	if (o->order_cap < n) {
		uint32_t *order = realloc(o->order, n * sizeof(*order));

		if (!order) { /* nowhere to sort: the batch is dropped, counted, not leaked */
			for (i = 0; i < n; i++)
				drop(o, b->addr[i], &o->cnt.drop_no_memory);
			b->n = 0;
			return -ENOMEM;
		}
		o->order = order;
		o->order_cap = n;
	}
	o->cnt.deliver_in += n;
	i = 63 - __builtin_clzll(n);
	o->hist[cls < PRISM_NCLASS ? cls : 0].batch_sizes[i < PRISM_BATCH_SIZE_BUCKETS ? i : PRISM_BATCH_SIZE_BUCKETS - 1]++;
	/* Counting sort by port keeps each port's packets in arrival order. */
	for (i = 0; i < n; i++) {
		p = b->port[i] < o->nports ? b->port[i] : PRISM_MAX_PORTS;
		count[p]++;
	}
	pos[0] = 0;
	for (p = 1; p <= PRISM_MAX_PORTS; p++)
		pos[p] = pos[p - 1] + count[p - 1];
	for (i = 0; i < n; i++) {
		p = b->port[i] < o->nports ? b->port[i] : PRISM_MAX_PORTS;
		o->order[pos[p]++] = i;
	}
	for (p = 0, i = 0; p < o->nports; i += count[p], p++)
		if (count[p])
			tx_port(o, &o->ports[p], cls, b, o->order + i, count[p]);
	for (; i < n; i++)
		drop(o, b->addr[o->order[i]], &o->cnt.drop_no_port);
	b->n = 0;
	return (int)(o->cnt.deliver_out - sent);
}

/* ---- service: completions back to the pool, fill rings topped up ------- */

/* Every SERVICE_SWEEP-th service walks every port, whatever moved: a port
 * the busy bits missed (frames the kernel completed late) is reaped there.
 */
#define SERVICE_SWEEP 64

int prism_overlay_service(struct prism_overlay *o, uint32_t uplink_fill, uint32_t fill_level)
{
	uint32_t p, c, level, have, w, sweep = o->services++ % SERVICE_SWEEP == 0;
	int reaped = 0;

	for (p = 0; p < o->nports; p++) {
		struct port *pt = &o->ports[p];
		struct prism_rings *r;

		w = p / 64;
		if (!sweep && !(o->busy[w] >> (p % 64) & 1)) {
			if (!o->busy[w] && (p | 63) + 1 < o->nports)
				p |= 63; /* a quiet word: on to the next 64 ports */
			continue;
		}
		o->busy[w] &= ~(1ull << (p % 64));
		if (!pt->xsk[0])
			continue;
		r = pt->xsk[0]->rings;
		/* One completion/fill pair per device: any socket of it will do. */
		reaped += prism_complete_batch(pt->xsk[0], r->cq.size);
		for (c = 1; c < PRISM_NCLASS; c++)
			if (pt->xsk[c] != pt->xsk[0] && prism_xsk_tx_pending(pt->xsk[c]) &&
			    xsk_ring_prod__needs_wakeup(&pt->xsk[c]->tx))
				prism_xsk_kick(pt->xsk[c]);
		level = p == PRISM_UPLINK_PORT ? uplink_fill : fill_level;
		if (level > r->fq.size)
			level = r->fq.size;
		have = r->fq.size - xsk_prod_nb_free(&r->fq, r->fq.size);
		if (have < level)
			prism_fill_batch(pt->xsk[0], level - have);
		/* A driver that ran dry waits to be told the fill ring has frames. */
		if (xsk_ring_prod__needs_wakeup(&r->fq))
			recvfrom(pt->xsk[0]->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
	}
	return reaped;
}

/* Kick every socket until no TX ring holds a frame: after a mode switch a
 * flow moves to another socket, and frames still waiting on the old one's
 * ring must leave first. Returns 0, or -EAGAIN if rings stayed non-empty.
 */
int prism_overlay_flush_tx(struct prism_overlay *o, uint32_t max_rounds)
{
	uint32_t round, p, c;
	int waiting;

	for (round = 0; round < max_rounds; round++) {
		waiting = 0;
		for (p = 0; p < o->nports; p++) {
			for (c = 0; c < PRISM_NCLASS; c++) {
				struct prism_xsk *x = o->ports[p].xsk[c];

				if (!x || (c && x == o->ports[p].xsk[0]))
					continue;
				if (prism_xsk_tx_pending(x)) {
					prism_xsk_kick(x);
					waiting |= prism_xsk_tx_pending(x) != 0;
				}
			}
		}
		if (!waiting)
			return 0;
	}
	return -EAGAIN;
}

/* One batch from a socket through every stage to its TX kick, in one call:
 * PRISM-batch's unit of work (and PRISM-sync's, with max 1). Returns the
 * packets taken off the RX ring.
 */
int prism_overlay_through(struct prism_overlay *o, struct prism_xsk *x, uint32_t src_port,
			  uint32_t cls, struct prism_batch *in, struct prism_batch *out, uint32_t max)
{
	int n, err;

	in->n = 0;
	out->n = 0;
	n = prism_rx_upto(x, in, max);
	if (n <= 0)
		return n;
	/* A stage that fails has dropped and counted what it could not pass
	 * on; the error still goes up, so the caller knows.
	 */
	err = src_port == PRISM_UPLINK_PORT ? prism_decap_batch(o, in, out)
					    : prism_encap_batch(o, src_port, in, out);
	if (err < 0)
		return err;
	err = prism_deliver_batch(o, cls, out);
	return err < 0 ? err : n;
}
