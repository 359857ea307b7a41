/* prism_deliver.c - the overlay's last stage and its upkeep: delivery of a batch to each port's socket (with the latency histograms), ring service, TX flush, and one batch through every stage. */
#include <errno.h>
#include <stdlib.h>

#include "prism_overlay.h"

/* ---- deliver: TX on each port's socket -------------------------------- */

/* Chained packets out of idx[0..n), dropped: no AF_XDP ring takes one,
 * and only a packet socket sends it whole. Returns what is left, in order.
 */
static uint32_t drop_aggregates(struct prism_overlay *o, const struct prism_batch *b, uint32_t *idx,
				uint32_t n)
{
	uint32_t i, kept = 0;

	for (i = 0; i < n; i++) {
		if (b->csum[idx[i]] & PRISM_CSUM_AGG || is_chained(o->u, b->addr[idx[i]]))
			drop(o, b->addr[idx[i]], &o->cnt.drop_aggregate);
		else
			idx[kept++] = idx[i];
	}
	return kept;
}

static void tx_now(struct prism_overlay *o, struct port *pt, uint32_t cls,
		   const struct prism_batch *b, uint32_t *idx, uint32_t n)
{
	struct prism_xsk *x = pt->xsk[cls < PRISM_NCLASS ? cls : 0];
	uint32_t sent, i;
	uint64_t bytes;

	if (pt->has_pkt) {
		int taken = prism_gro_deliver(o, pt, b, idx, n);

		if (taken < 0)
			for (i = 0; i < n; i++)
				drop(o, b->addr[idx[i]], &o->cnt.drop_no_memory);
		if (taken)
			return;
	}
	if (!x) {
		for (i = 0; i < n; i++)
			drop(o, b->addr[idx[i]], &o->cnt.drop_no_port);
		return;
	}
	if (o->u->multibuf)
		n = drop_aggregates(o, b, idx, n);
	mark_busy(o, (uint32_t)(pt - o->ports));
	/* No kick for a full ring here: the next service kicks what waits. */
	sent = prism_tx_enqueue(x, b, idx, 0, n, 0, &bytes);
	pt->cnt.tx_packets += sent;
	pt->cnt.tx_bytes += bytes;
	o->cnt.deliver_out += sent;
	if (sent < n) {
		pt->cnt.tx_full += n - sent;
		for (i = sent; i < n; i++)
			drop(o, b->addr[idx[i]], &o->cnt.drop_tx_full);
	}
	/* In-pipeline latency: from the RX poll to this kick, per class. */
	if (sent) {
		uint64_t now = prism_now_ns();

		for (i = 0; i < sent; i++)
			record_latency(o, b, idx[i], now);
	}
}

/* ---- the hold: LOW segments wait for the next batches to merge with ---- */

/* Why. While HIGH is active, PRISM's modes cut LOW batches short (4
 * frames), so that a TX kick hands the kernel little LOW work for a HIGH
 * packet to wait behind. Each cut batch used to leave at once, as a GSO
 * packet of at most 4 segments: the container's stack took, and its
 * reader woke for, 16 packets where one would do, and batch carried
 * ~70 % of vanilla's LOW. Held, the segments of several cut batches leave
 * as one packet: one kick, one wake-up. Only TCP data that may merge
 * waits; anything else sends the port's held segments first, then itself,
 * so no flow changes order. An option, off by default: LOW gains, and the
 * HIGH tail grows with it (docs/benchmarks.md, "Holding LOW segments").
 */

static void hold_send(struct prism_overlay *o, struct port *pt, uint64_t *reason)
{
	struct prism_batch *h = pt->held;
	uint32_t i, n = h ? h->n : 0;

	if (!n)
		return;
	for (i = 0; i < n; i++)
		o->hold_idx[i] = i;
	h->n = 0;
	o->held_total -= n;
	(*reason)++;
	tx_now(o, pt, PRISM_CLASS_LOW, h, o->hold_idx, n);
}

static int flush_held(struct prism_overlay *o, uint64_t older_than_ns, uint64_t *reason)
{
	uint64_t now = older_than_ns ? prism_now_ns() : 0;
	uint32_t p, before = o->held_total;

	for (p = 0; p < o->nports && o->held_total; p++) {
		struct port *pt = &o->ports[p];

		if (pt->held && pt->held->n && now - pt->held_since >= older_than_ns)
			hold_send(o, pt, reason);
	}
	return (int)(before - o->held_total);
}

/* 1: b's entries idx[0..n) are held (and perhaps already sent with the
 * port's earlier ones); 0: they go now, after whatever the port held.
 */
static int hold(struct prism_overlay *o, struct port *pt, const struct prism_batch *b,
		const uint32_t *idx, uint32_t n)
{
	struct prism_batch *h = pt->held;
	uint32_t i, cap = pt->gro_segs < o->hold ? pt->gro_segs : o->hold;
	int kind = n < cap ? prism_gro_holdable(o, pt, b, idx, n) : 0;

	if (!kind) {
		hold_send(o, pt, &o->cnt.hold_flush_other);
		return 0;
	}
	if (!h) {
		h = pt->held = prism_batch_new(PRISM_GRO_MAX_SEGS);
		if (!h)
			return 0;
	}
	if (h->n + n > cap)
		hold_send(o, pt, &o->cnt.hold_flush_full);
	if (o->held_total + n > PRISM_HOLD_TOTAL)
		flush_held(o, 0, &o->cnt.hold_flush_other);
	if (!h->n)
		pt->held_since = prism_now_ns();
	for (i = 0; i < n; i++) {
		uint32_t j = idx[i], k = h->n++;

		h->addr[k] = b->addr[j];
		h->len[k] = b->len[j];
		h->ts[k] = b->ts[j];
		h->poll_ts[k] = b->poll_ts[j];
		h->port[k] = b->port[j];
		h->cls[k] = b->cls[j];
		h->csum[k] = b->csum[j];
	}
	o->held_total += n;
	o->cnt.hold_frames += n;
	if (kind == 2)
		hold_send(o, pt, &o->cnt.hold_flush_psh);
	else if (h->n >= cap)
		hold_send(o, pt, &o->cnt.hold_flush_full);
	return 1;
}

static void tx_port(struct prism_overlay *o, struct port *pt, uint32_t cls,
		    const struct prism_batch *b, uint32_t *idx, uint32_t n)
{
	/* HIGH never waits, nor sends LOW's held segments: another flow's. */
	if (o->hold && cls == PRISM_CLASS_LOW && pt->has_pkt && pt->gro_segs > 1 &&
	    hold(o, pt, b, idx, n))
		return;
	tx_now(o, pt, cls, b, idx, n);
}

int prism_overlay_set_hold(struct prism_overlay *o, uint32_t segs)
{
	if (segs > PRISM_GRO_MAX_SEGS)
		return -EINVAL;
	if (segs < o->hold) /* what waits beyond the new size goes now */
		flush_held(o, 0, &o->cnt.hold_flush_idle);
	o->hold = segs;
	return 0;
}

int prism_overlay_flush_held(struct prism_overlay *o, uint64_t older_than_ns)
{
	if (!o->held_total)
		return 0;
	return flush_held(o, older_than_ns,
			  older_than_ns ? &o->cnt.hold_flush_age : &o->cnt.hold_flush_idle);
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
	o->hist[cls < PRISM_NCLASS ? cls : 0]
		.batch_sizes[i < PRISM_BATCH_SIZE_BUCKETS ? i : PRISM_BATCH_SIZE_BUCKETS - 1]++;
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
	uint32_t p, w, sweep = o->services++ % SERVICE_SWEEP == 0;
	int reaped = 0;

	if (o->held_total)
		flush_held(o, PRISM_HOLD_AGE_NS, &o->cnt.hold_flush_age);

	for (p = 0; p < o->nports; p++) {
		struct port *pt = &o->ports[p];

		w = p / 64;
		if (!sweep && !(o->busy[w] >> (p % 64) & 1)) {
			if (!o->busy[w] && (p | 63) + 1 < o->nports)
				p |= 63; /* a quiet word: on to the next 64 ports */
			continue;
		}
		o->busy[w] &= ~(1ull << (p % 64));
		if (!pt->xsk[0])
			continue;
		reaped += prism_xsk_service(pt->xsk, PRISM_NCLASS,
					    p == PRISM_UPLINK_PORT ? uplink_fill : fill_level);
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

	prism_overlay_flush_held(o, 0);
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
			  uint32_t cls, struct prism_batch *in, struct prism_batch *out,
			  uint32_t max)
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
	err = src_port == PRISM_UPLINK_PORT ? prism_decap_batch(o, in, out) :
					      prism_encap_batch(o, src_port, in, out);
	if (err < 0)
		return err;
	err = prism_deliver_batch(o, cls, out);
	return err < 0 ? err : n;
}
