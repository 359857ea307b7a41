/* prism_overlay.h - the overlay's private state (ports, VTEPs, counters, histograms, forwarding table) and the inline helpers its stages share; private to the C helpers. */
#ifndef PRISM_OVERLAY_H
#define PRISM_OVERLAY_H

#include <linux/if_ether.h>

#include "prism.h"
#include "prism_fdb.h"
#include "prism_mcast.h"
#include "prism_internal.h"

/*
 * The overlay is split by job: setup, ports and VTEPs (prism_overlay.c),
 * the VXLAN stages (prism_vxlan.c), delivery and ring service
 * (prism_deliver.c), latency histograms (prism_hist.c). What more than one
 * of them touches per packet is here, inline, so that the split costs no
 * call per packet.
 */

struct port {
	struct prism_xsk *xsk[PRISM_NCLASS];
	/* Delivery through a packet socket instead (prism_gro.c): its fd when
	 * has_pkt, and how many TCP segments one GSO packet may merge (1: none).
	 */
	int has_pkt;
	int pkt_fd;
	uint32_t gro_segs;
	/* LOW TCP segments held back for merging with the next batches' (the
	 * hold, prism_deliver.c), oldest first, and when the first came in.
	 */
	struct prism_batch *held;
	uint64_t held_since;
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
	struct prism_mcast *mc; /* MLD snooping, shared by the workers; NULL: flood */
	struct prism_gro *gro; /* packet-socket delivery's scratch, made on first use */
	uint32_t hold; /* LOW TCP segments a port may hold for the next batches, 0: none (prism_overlay_set_hold) */
	uint32_t held_total; /* frames every port holds */
	uint32_t hold_idx[PRISM_GRO_MAX_SEGS]; /* a held batch's order, when it leaves */
};

_Static_assert(PRISM_FDB_VTEPS == PRISM_MAX_VTEPS,
	       "a learned entry's VTEP indexes the FDB's counts");
_Static_assert(PRISM_GSO_VTEPS == PRISM_MAX_VTEPS, "a VTEP's index is its gso_vteps slot");

/* The index of the VTEP with this VNI and address (network order), or -1. */
static inline int vtep_of(const struct prism_overlay *o, uint32_t vni, uint32_t ip)
{
	uint32_t i;

	for (i = 0; i < o->nvteps; i++)
		if (o->vteps[i].ip == ip && o->vteps[i].vni == vni)
			return (int)i;
	return -1;
}

static inline int overlay_lookup(struct prism_overlay *o, uint32_t vni, const uint8_t *mac,
				 uint32_t *idx)
{
	return prism_fdb_lookup(&o->fdb, vni, mac, o->cur_poll_ts, idx);
}

static inline void mark_busy(struct prism_overlay *o, uint32_t port)
{
	o->busy[port / 64] |= 1ull << (port % 64);
}

/* A frame the overlay will not pass on goes back to the pool, counted. */
static inline void drop(struct prism_overlay *o, uint64_t addr, uint64_t *reason)
{
	pool_put(o->u, addr);
	o->u->user--;
	(*reason)++;
}

/* HDR-style bucket of a value (see PRISM_HIST_SUB_BITS in prism_api.h). */
static inline int hist_bucket(uint64_t v)
{
	int msb;

	if (v < (1u << PRISM_HIST_SUB_BITS))
		return (int)v;
	msb = 63 - __builtin_clzll(v);
	return ((msb - PRISM_HIST_SUB_BITS + 1) << PRISM_HIST_SUB_BITS) +
	       (int)((v >> (msb - PRISM_HIST_SUB_BITS)) & ((1u << PRISM_HIST_SUB_BITS) - 1));
}

static inline void hist_add(struct prism_hist *h, uint64_t v)
{
	h->buckets[hist_bucket(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
	if (v < h->min || h->count == 1)
		h->min = v;
}

/* In-pipeline latency of b's entry j, sent at now: from arrival and from
 * the RX poll, per class.
 */
static inline void record_latency(struct prism_overlay *o, const struct prism_batch *b, uint32_t j,
				  uint64_t now)
{
	if (!b->ts[j] || b->cls[j] >= PRISM_NCLASS)
		return;
	hist_add(&o->hist[b->cls[j]], now > b->ts[j] ? now - b->ts[j] : 0);
	hist_add(&o->hist_poll[b->cls[j]], now > b->poll_ts[j] ? now - b->poll_ts[j] : 0);
}

/* prism_gro.c: deliver b's entries idx[0..n) to pt through its packet
 * socket, TCP segments merged. Returns 1 when it took the frames (sent or
 * counted as refused; back in the pool either way), 0 when nothing merged
 * and the port has AF_XDP sockets to send them on (nothing done), or
 * -ENOMEM with nothing taken.
 */
int prism_gro_deliver(struct prism_overlay *o, struct port *pt, const struct prism_batch *b,
		      const uint32_t *idx, uint32_t n);
void prism_gro_free(struct prism_gro *g);
/* Whether b's entries idx[0..n) may wait for later segments toward pt:
 * 0 no; 1 yes, each is TCP data with ACK (and PSH) only; 2 yes, and one
 * has PSH, the end of its sender's write: they go now, with what waited
 * (as GRO flushes a flow at PSH). The checksum is checked when they go.
 */
int prism_gro_holdable(const struct prism_overlay *o, const struct port *pt,
		       const struct prism_batch *b, const uint32_t *idx, uint32_t n);

#endif /* PRISM_OVERLAY_H */
