/* prism_xsk.c - the AF_XDP rings on the hot path, a batch per call: fill, rx, tx (one enqueue for every sender), completion, kicks, readiness, and one port's ring service. */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <xdp/xsk.h>

#include "prism.h"
#include "prism_internal.h"

uint64_t prism_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int prism_fill_batch(struct prism_xsk *x, uint32_t max)
{
	struct prism_umem *u = x->umem;
	uint32_t n, idx, i;

	n = xsk_prod_nb_free(&x->rings->fq, max);
	if (n > max)
		n = max;
	if (n > u->pool_n)
		n = u->pool_n;
	if (!n || xsk_ring_prod__reserve(&x->rings->fq, n, &idx) != n)
		return 0;
	for (i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&x->rings->fq, idx + i) = u->pool[--u->pool_n];
	xsk_ring_prod__submit(&x->rings->fq, n);
	u->kernel_rx += n;
	x->cnt.fill_added += n;
	return n;
}

/* The time in 56 bits of XDP's metadata, completed from now; now when XDP
 * put no time (or one from a CPU whose clock read a little ahead).
 */
static inline uint64_t meta_time(uint64_t meta, uint64_t now)
{
	const uint64_t mask = (1ull << PRISM_META_CLASS_SHIFT) - 1;
	uint64_t t = meta & mask;

	if (!t)
		return now;
	t |= now & ~mask;
	if (t <= now)
		return t;
	/* Ahead of now: read on another CPU a moment later, or the 56 bits
	 * wrapped since (after 2.28 years of uptime).
	 */
	return t - now < mask / 2 || now <= mask ? now : t - (mask + 1);
}

int prism_rx_batch(struct prism_xsk *x, struct prism_batch *b)
{
	return prism_rx_upto(x, b, b->cap - b->n);
}

/* A packet in several descriptors (XDP_USE_SG: the first ones flagged
 * XDP_PKT_CONTD), from ring index idx with avail descriptors peeked: its
 * frames chained in order (struct prism_umem: next, part_end), so that the
 * batch holds its first part and the whole length. Returns the descriptors
 * it took; 0 when its last part is not among those peeked (it stays on the
 * ring).
 *
 * Why a chain and not a copy into one buffer: a UMEM chunk holds at most
 * 4 KB here (the kernel refuses larger chunks), and a 64 KB copy per packet
 * cost about a quarter of the throughput; the stages read only headers,
 * which are in the first part, and delivery hands every part to the kernel
 * as one iovec, which copies it once anyway.
 */
static uint32_t rx_chain(struct prism_xsk *x, uint32_t idx, uint32_t avail, uint32_t *len)
{
	struct prism_umem *u = x->umem;
	const struct xdp_desc *d;
	uint32_t nd, i;

	for (nd = 0; nd < avail; nd++)
		if (!(xsk_ring_cons__rx_desc(&x->rx, idx + nd)->options & XDP_PKT_CONTD))
			break;
	if (nd == avail)
		return 0;
	nd++;
	for (i = 0, *len = 0; i < nd; i++) {
		d = xsk_ring_cons__rx_desc(&x->rx, idx + i);
		u->part_end[frame_of(u, d->addr)] = d->addr + d->len;
		u->next[frame_of(u, d->addr)] =
			i + 1 < nd ? xsk_ring_cons__rx_desc(&x->rx, idx + i + 1)->addr : 0;
		*len += d->len;
	}
	x->cnt.rx_multibuf++;
	x->cnt.rx_multibuf_parts += nd;
	return nd;
}

int prism_rx_upto(struct prism_xsk *x, struct prism_batch *b, uint32_t max)
{
	struct prism_umem *u = x->umem;
	uint32_t n, idx, i, p, taken;
	uint64_t bytes = 0, now;

	if (max > b->cap - b->n)
		max = b->cap - b->n;
	/* max counts frames: a multi-buffer packet weighs the descriptors it
	 * came in (at least one packet is taken). A scheduler's batch then
	 * bounds the bytes one step hands on, whatever size the packets are:
	 * a LOW batch of 4 cut for HIGH is one 64 KB aggregate, not four. So
	 * everything is peeked, and what is left over goes back.
	 */
	n = xsk_ring_cons__peek(&x->rx, u->multibuf ? x->rx.size : max, &idx);
	if (!n) {
		/* With need_wakeup the kernel may wait for us to ask (busy
		 * polling, or an empty fill ring it has given up on).
		 */
		if (xsk_ring_prod__needs_wakeup(&x->rings->fq)) {
			x->cnt.rx_wakeups++;
			recvfrom(x->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
		}
		return 0;
	}
	/* One clock read per batch: every packet of it left the ring now. */
	now = prism_now_ns();
	for (i = 0, p = 0; i < n && p < max && (!p || i < max); i += taken) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&x->rx, idx + i);
		uint64_t addr = d->addr, ts = now, meta;
		uint32_t len = d->len, j = b->n + p;
		uint8_t cls = 0;

		taken = 1;
		if (d->options & XDP_PKT_CONTD) {
			taken = rx_chain(x, idx + i, n - i, &len);
			if (!taken)
				break;
		}
		if (x->rx_stamped && len >= PRISM_TS_LEN) {
			memcpy(&meta, u->area + addr, PRISM_TS_LEN);
			addr += PRISM_TS_LEN;
			len -= PRISM_TS_LEN;
			cls = (meta >> PRISM_META_CLASS_SHIFT) & (PRISM_NCLASS - 1);
			ts = meta_time(meta, now);
		}
		b->addr[j] = addr;
		b->len[j] = len;
		b->ts[j] = ts;
		b->poll_ts[j] = now;
		b->csum[j] = 0;
		b->port[j] = 0;
		b->cls[j] = cls;
		bytes += len;
		p++;
	}
	xsk_ring_cons__cancel(&x->rx, n - i);
	xsk_ring_cons__release(&x->rx, i);
	b->n += p;
	u->kernel_rx -= i;
	u->user += i; /* every frame, a chained packet's parts too */
	x->cnt.rx_packets += p;
	x->cnt.rx_bytes += bytes;
	x->cnt.rx_batches += p > 0;
	return (int)p;
}

int prism_xsk_kick(struct prism_xsk *x)
{
	int tries;

	/* In copy mode one sendto() transmits at most 32 frames and answers
	 * EAGAIN while more wait; a few rounds drain a 64-frame burst.
	 */
	for (tries = 0; tries < 8; tries++) {
		x->cnt.tx_kicks++;
		if (sendto(x->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
			return 0;
		if (errno != EAGAIN)
			break;
	}
	if (errno == EAGAIN || errno == EBUSY || errno == ENOBUFS)
		return 0; /* the kernel is busy; the next kick goes on */
	x->cnt.tx_kick_errors++;
	return -errno;
}

/* One descriptor for entry j of b; with TX metadata (txmd_len, 0 when the
 * UMEM has none) a frame that asks for a checksum gets the request in
 * front of it.
 */
static inline uint32_t tx_desc(struct prism_xsk *x, uint32_t slot, const struct prism_batch *b,
			       uint32_t j, uint32_t txmd_len)
{
	struct xdp_desc *d = xsk_ring_prod__tx_desc(&x->tx, slot);

	d->addr = b->addr[j];
	d->len = b->len[j];
	d->options = 0;
	if (txmd_len && b->csum[j]) {
		struct xsk_tx_metadata *md = (void *)(x->umem->area + d->addr - txmd_len);

		md->flags = XDP_TXMD_FLAGS_CHECKSUM;
		md->request.csum_start = b->csum[j] >> 16;
		md->request.csum_offset = b->csum[j] & 0xffff;
		d->options = XDP_TX_METADATA;
	}
	return d->len;
}

/* The one way onto a TX ring, for prism_tx_batch and the overlay's deliver:
 * see prism_internal.h. Two loops rather than a test per packet.
 */
uint32_t prism_tx_enqueue(struct prism_xsk *x, const struct prism_batch *b, const uint32_t *idx,
			  uint32_t start, uint32_t n, int kick_pending, uint64_t *bytes)
{
	struct prism_umem *u = x->umem;
	uint32_t txmd_len = u->txmd_len, room, first, i;
	uint64_t sum = 0;

	room = xsk_prod_nb_free(&x->tx, n);
	if (room > n)
		room = n;
	/* A chained packet is no one frame the kernel could send: it stops
	 * here, and the caller drops it (delivery sends it through a packet
	 * socket instead).
	 */
	if (u->multibuf)
		for (i = 0; i < room; i++)
			if (is_chained(u, b->addr[idx ? idx[i] : start + i])) {
				room = i;
				break;
			}
	if (room && xsk_ring_prod__reserve(&x->tx, room, &first) == room) {
		if (idx)
			for (i = 0; i < room; i++)
				sum += tx_desc(x, first + i, b, idx[i], txmd_len);
		else
			for (i = 0; i < room; i++)
				sum += tx_desc(x, first + i, b, start + i, txmd_len);
		xsk_ring_prod__submit(&x->tx, room);
		u->user -= room;
		u->kernel_tx += room;
		x->cnt.tx_packets += room;
		x->cnt.tx_bytes += sum;
	} else {
		room = 0;
	}
	if (room < n)
		x->cnt.tx_ring_full++;
	/* Kick only when the kernel asks for it (always, in copy mode). */
	if (kick_pending ? xsk_ring_prod__needs_wakeup(&x->tx) && prism_xsk_tx_pending(x) :
			   room && xsk_ring_prod__needs_wakeup(&x->tx))
		prism_xsk_kick(x);
	*bytes = sum;
	return room;
}

int prism_tx_batch(struct prism_xsk *x, struct prism_batch *b, uint32_t start, uint32_t n)
{
	uint64_t bytes;

	if (start > b->n || n > b->n - start)
		return -EINVAL;
	/* A caller may try again into a full ring: kick whenever it holds frames. */
	return prism_tx_enqueue(x, b, NULL, start, n, 1, &bytes);
}

int prism_complete_batch(struct prism_xsk *x, uint32_t max)
{
	struct prism_umem *u = x->umem;
	uint32_t n, idx, i;

	n = xsk_ring_cons__peek(&x->rings->cq, max, &idx);
	for (i = 0; i < n; i++)
		pool_put(u, *xsk_ring_cons__comp_addr(&x->rings->cq, idx + i));
	xsk_ring_cons__release(&x->rings->cq, n);
	u->kernel_tx -= n;
	x->cnt.comp_reaped += n;
	/* Frames still on the TX ring need another kick to move on. */
	if (xsk_prod_nb_free(&x->tx, x->tx.size) < x->tx.size &&
	    xsk_ring_prod__needs_wakeup(&x->tx))
		prism_xsk_kick(x);
	return n;
}

int prism_xsk_rx_pending(struct prism_xsk *x)
{
	/* Exact, not libxdp's cached count (which refreshes only once it
	 * reaches 0): a mode switch drains exactly what is on the ring now.
	 */
	x->rx.cached_prod = __atomic_load_n(x->rx.producer, __ATOMIC_ACQUIRE);
	return x->rx.cached_prod - x->rx.cached_cons;
}

uint64_t prism_xsk_pending_mask(struct prism_xsk **xs, uint32_t n, uint64_t *more)
{
	uint64_t word = 0, first = 0;
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (xsk_cons_nb_avail(&xs[i]->rx, 1))
			word |= 1ull << (i & 63);
		if ((i & 63) == 63 || i == n - 1) {
			if (i < 64)
				first = word;
			else
				more[i / 64 - 1] = word;
			word = 0;
		}
	}
	return first;
}

/*
 * With hundreds of sockets, looking at every RX ring costs a cache miss or
 * two per socket on every scheduling step (514 sockets: tens of µs), which
 * a HIGH packet then waits for. The kernel already knows which rings have
 * descriptors: an AF_XDP socket wakes its waiters when a batch lands on its
 * RX ring (after the redirect flush, so no descriptor is seen early), and
 * level-triggered epoll keeps a socket on the ready list while its ring is
 * not empty. One epoll_wait(0) then costs a syscall and O(ready sockets).
 */
int prism_xsk_ready_new(struct prism_xsk **xs, uint32_t n)
{
	int ep = epoll_create1(EPOLL_CLOEXEC), err;
	uint32_t i;

	if (ep < 0)
		return -errno;
	for (i = 0; i < n; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };

		if (epoll_ctl(ep, EPOLL_CTL_ADD, xs[i]->fd, &ev)) {
			err = -errno;
			close(ep);
			return err;
		}
	}
	return ep;
}

#define READY_MAX 1024 /* sockets reported per call; the rest come next time */

uint64_t prism_xsk_ready_mask(int ep, uint32_t n, uint64_t *more)
{
	struct epoll_event ev[READY_MAX];
	uint64_t first = 0;
	uint32_t i;
	int got;

	if (n > 64)
		memset(more, 0, (n - 1) / 64 * sizeof(*more));
	got = epoll_wait(ep, ev, n < READY_MAX ? n : READY_MAX, 0);
	for (i = 0; got > 0 && i < (uint32_t)got; i++) {
		uint32_t s = ev[i].data.u32;

		if (s < 64)
			first |= 1ull << s;
		else if (s < n)
			more[s / 64 - 1] |= 1ull << (s & 63);
	}
	return first;
}

int prism_xsk_tx_pending(struct prism_xsk *x)
{
	return x->tx.size - xsk_prod_nb_free(&x->tx, x->tx.size);
}

/* One port's rings between batches, for the overlay's service. Its sockets
 * (xs, by class; a class without one repeats xs[0]) share one
 * completion/fill pair: any of them will do to reap it and to refill.
 */
int prism_xsk_service(struct prism_xsk *const *xs, uint32_t nclass, uint32_t level)
{
	struct prism_xsk *x = xs[0];
	struct prism_rings *r = x->rings;
	uint32_t c, have;
	int reaped;

	reaped = prism_complete_batch(x, r->cq.size);
	for (c = 1; c < nclass; c++)
		if (xs[c] != x && prism_xsk_tx_pending(xs[c]) &&
		    xsk_ring_prod__needs_wakeup(&xs[c]->tx))
			prism_xsk_kick(xs[c]);
	if (level > r->fq.size)
		level = r->fq.size;
	have = r->fq.size - xsk_prod_nb_free(&r->fq, r->fq.size);
	if (have < level)
		prism_fill_batch(x, level - have);
	/* A driver that ran dry waits to be told the fill ring has frames. */
	if (xsk_ring_prod__needs_wakeup(&r->fq))
		recvfrom(x->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
	return reaped;
}
