/* prism_xsk.c - UMEM, AF_XDP sockets and the batch operations of the hot path (rx, fill, tx, completion). */
#include <errno.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <xdp/xsk.h>

#include "prism.h"
#include "prism_internal.h"

#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

uint64_t prism_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

struct prism_batch *prism_batch_new(uint32_t cap)
{
	struct prism_batch *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->cap = cap;
	b->addr = calloc(cap, sizeof(*b->addr));
	b->len = calloc(cap, sizeof(*b->len));
	b->ts = calloc(cap, sizeof(*b->ts));
	b->port = calloc(cap, sizeof(*b->port));
	b->cls = calloc(cap, sizeof(*b->cls));
	b->poll_ts = calloc(cap, sizeof(*b->poll_ts));
	b->csum = calloc(cap, sizeof(*b->csum));
	if (!b->addr || !b->len || !b->ts || !b->port || !b->cls || !b->poll_ts || !b->csum) {
		prism_batch_delete(b);
		return NULL;
	}
	return b;
}

void prism_batch_delete(struct prism_batch *b)
{
	if (!b)
		return;
	free(b->addr);
	free(b->len);
	free(b->ts);
	free(b->port);
	free(b->cls);
	free(b->poll_ts);
	free(b->csum);
	free(b);
}

int prism_umem_create(struct prism_umem **out, uint32_t frame_count, uint32_t frame_size,
		      uint32_t headroom, uint32_t fill_size, uint32_t comp_size,
		      int register_kernel)
{
	struct prism_umem *u;
	uint32_t i;
	int err;

	/* Aligned mode: frames are a power of two, so base = addr & ~(size-1). */
	if (!frame_count || frame_size < 2048 || (frame_size & (frame_size - 1)) ||
	    headroom >= frame_size / 2)
		return -EINVAL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->frame_count = frame_count;
	u->frame_size = frame_size;
	u->headroom = headroom;
	u->fill_size = fill_size;
	u->comp_size = comp_size;
	u->size = (uint64_t)frame_count * frame_size;
	u->area = mmap(NULL, u->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (u->area == MAP_FAILED) {
		err = -errno;
		free(u);
		return err;
	}
	u->pool = calloc(frame_count, sizeof(*u->pool));
	if (!u->pool) {
		err = -ENOMEM;
		goto fail;
	}
	/* Lowest addresses on top of the stack: easier to read in a dump. */
	for (i = 0; i < frame_count; i++)
		u->pool[i] = (uint64_t)(frame_count - 1 - i) * frame_size;
	u->pool_n = frame_count;

	u->registered = !!register_kernel;
	if (u->registered) {
		int md = prism_probe_tx_metadata(u);

		u->txmd_len = md > 0 ? md : 0; /* an error shows again at bind */
	}
	*out = u;
	return 0;
fail:
	free(u->pool);
	munmap(u->area, u->size);
	free(u);
	return err;
}

int prism_umem_delete(struct prism_umem *u)
{
	if (!u)
		return 0;
	if (u->rings)
		return -EBUSY; /* sockets still use it */
	free(u->pool);
	munmap(u->area, u->size);
	free(u);
	return 0;
}

uint8_t *prism_umem_area(struct prism_umem *u)
{
	return u->area;
}

uint32_t prism_umem_frame_size(struct prism_umem *u)
{
	return u->frame_size;
}

uint32_t prism_umem_headroom(struct prism_umem *u)
{
	return u->headroom;
}

uint32_t prism_umem_tx_metadata(struct prism_umem *u)
{
	return u->txmd_len;
}

uint32_t prism_umem_pool_count(struct prism_umem *u)
{
	return u->pool_n;
}

/* Entries on a ring from its shared indices, read with atomic loads: the
 * cached indices belong to the thread that drives the ring, and another
 * thread (statistics) must not write them.
 */
static inline uint32_t ring_used(const uint32_t *producer, const uint32_t *consumer)
{
	return __atomic_load_n(producer, __ATOMIC_ACQUIRE) - __atomic_load_n(consumer, __ATOMIC_ACQUIRE);
}

void prism_umem_account(struct prism_umem *u, struct prism_frame_account *out)
{
	out->frames = u->frame_count;
	out->pool = u->pool_n;
	out->kernel_rx = u->kernel_rx;
	out->kernel_tx = u->kernel_tx;
	out->user = u->user;
	out->fill_ring = out->rx_ring = out->tx_ring = out->comp_ring = 0;
	for (struct prism_rings *r = u->rings; r; r = r->next) {
		out->fill_ring += ring_used(r->fq.producer, r->fq.consumer);
		out->comp_ring += ring_used(r->cq.producer, r->cq.consumer);
	}
	for (struct prism_xsk *x = u->sockets; x; x = x->next) {
		if (x->rx_map)
			out->rx_ring += ring_used(x->rx.producer, x->rx.consumer);
		if (x->tx_map)
			out->tx_ring += ring_used(x->tx.producer, x->tx.consumer);
	}
}

int prism_alloc_batch(struct prism_umem *u, struct prism_batch *b, uint32_t n, uint32_t len)
{
	uint32_t i;

	if (len > u->frame_size - u->headroom)
		return -EMSGSIZE;
	if (n > b->cap - b->n)
		n = b->cap - b->n;
	if (n > u->pool_n)
		n = u->pool_n;
	for (i = 0; i < n; i++) {
		b->addr[b->n + i] = u->pool[--u->pool_n] + u->headroom;
		b->len[b->n + i] = len;
		b->ts[b->n + i] = 0;
		b->poll_ts[b->n + i] = 0;
		b->csum[b->n + i] = 0;
		b->port[b->n + i] = 0;
		b->cls[b->n + i] = 0;
	}
	b->n += n;
	u->user += n;
	return n;
}

int prism_free_batch(struct prism_umem *u, struct prism_batch *b, uint32_t start, uint32_t n)
{
	uint32_t i;

	if (start > b->n || n > b->n - start)
		return -EINVAL;
	for (i = 0; i < n; i++)
		pool_put(u, b->addr[start + i]);
	u->user -= n;
	return n;
}

int prism_copy_frames_batch(struct prism_umem *u, struct prism_batch *b, uint32_t start,
			    uint32_t n, const uint8_t *data, uint32_t len)
{
	uint32_t i;

	if (start > b->n || n > b->n - start)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		uint64_t addr = b->addr[start + i];

		if (addr - frame_base(u, addr) + len > u->frame_size)
			return -EMSGSIZE;
		memcpy(u->area + addr, data, len);
		b->len[start + i] = len;
	}
	return n;
}

void prism_xsk_set_rx_stamped(struct prism_xsk *x, int on)
{
	x->rx_stamped = !!on;
}

int prism_xsk_fd(struct prism_xsk *x)
{
	return x->fd;
}

int prism_xsk_zerocopy(struct prism_xsk *x)
{
	struct xdp_options opts;
	socklen_t len = sizeof(opts);

	if (getsockopt(x->fd, SOL_XDP, XDP_OPTIONS, &opts, &len))
		return -errno;
	return !!(opts.flags & XDP_OPTIONS_ZEROCOPY);
}

int prism_xsk_set_busy_poll(struct prism_xsk *x, int usecs, int budget)
{
	int one = 1;

	if (setsockopt(x->fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one, sizeof(one)) ||
	    setsockopt(x->fd, SOL_SOCKET, SO_BUSY_POLL, &usecs, sizeof(usecs)) ||
	    setsockopt(x->fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET, &budget, sizeof(budget)))
		return -errno;
	return 0;
}

int prism_xsk_statistics(struct prism_xsk *x, struct prism_xsk_stats *out)
{
	struct xdp_statistics st;
	socklen_t len = sizeof(st);

	memset(&st, 0, sizeof(st));
	if (getsockopt(x->fd, SOL_XDP, XDP_STATISTICS, &st, &len))
		return -errno;
	/* Kernels before 5.9 return only the first three fields. */
	out->rx_dropped = st.rx_dropped;
	out->rx_invalid_descs = st.rx_invalid_descs;
	out->tx_invalid_descs = st.tx_invalid_descs;
	out->rx_ring_full = st.rx_ring_full;
	out->rx_fill_ring_empty_descs = st.rx_fill_ring_empty_descs;
	out->tx_ring_empty_descs = st.tx_ring_empty_descs;
	return len / sizeof(__u64);
}

void prism_xsk_counters(struct prism_xsk *x, struct prism_xsk_counters *out)
{
	*out = x->cnt;
}

int prism_xsk_map_insert(struct prism_xsk *x, int map_fd, uint32_t slot)
{
	if (bpf_map_update_elem(map_fd, &slot, &x->fd, 0))
		return -errno;
	return 0;
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

int prism_rx_upto(struct prism_xsk *x, struct prism_batch *b, uint32_t max)
{
	struct prism_umem *u = x->umem;
	uint32_t n, idx, i;
	uint64_t bytes = 0, now;

	if (max > b->cap - b->n)
		max = b->cap - b->n;
	n = xsk_ring_cons__peek(&x->rx, max, &idx);
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
	for (i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&x->rx, idx + i);
		uint64_t addr = d->addr, ts = now, meta;
		uint32_t len = d->len;
		uint8_t cls = 0;

		if (x->rx_stamped && len >= PRISM_TS_LEN) {
			memcpy(&meta, u->area + addr, PRISM_TS_LEN);
			addr += PRISM_TS_LEN;
			len -= PRISM_TS_LEN;
			cls = (meta >> PRISM_META_CLASS_SHIFT) & (PRISM_NCLASS - 1);
			ts = meta_time(meta, now);
		}
		b->addr[b->n + i] = addr;
		b->len[b->n + i] = len;
		b->ts[b->n + i] = ts;
		b->poll_ts[b->n + i] = now;
		b->csum[b->n + i] = 0;
		b->port[b->n + i] = 0;
		b->cls[b->n + i] = cls;
		bytes += len;
	}
	xsk_ring_cons__release(&x->rx, n);
	b->n += n;
	u->kernel_rx -= n;
	u->user += n;
	x->cnt.rx_packets += n;
	x->cnt.rx_bytes += bytes;
	x->cnt.rx_batches++;
	return n;
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

int prism_tx_batch(struct prism_xsk *x, struct prism_batch *b, uint32_t start, uint32_t n)
{
	struct prism_umem *u = x->umem;
	uint32_t idx, i, room;
	uint64_t bytes = 0;

	if (start > b->n || n > b->n - start)
		return -EINVAL;
	room = xsk_prod_nb_free(&x->tx, n);
	if (room < n) {
		x->cnt.tx_ring_full++;
		n = room;
	}
	if (n && xsk_ring_prod__reserve(&x->tx, n, &idx) == n) {
		for (i = 0; i < n; i++) {
			struct xdp_desc *d = xsk_ring_prod__tx_desc(&x->tx, idx + i);

			d->addr = b->addr[start + i];
			d->len = b->len[start + i];
			d->options = 0;
			bytes += d->len;
		}
		xsk_ring_prod__submit(&x->tx, n);
		u->user -= n;
		u->kernel_tx += n;
		x->cnt.tx_packets += n;
		x->cnt.tx_bytes += bytes;
	} else {
		n = 0;
	}
	/* Kick only when the kernel asks for it (always, in copy mode). */
	if (xsk_ring_prod__needs_wakeup(&x->tx) && xsk_prod_nb_free(&x->tx, x->tx.size) < x->tx.size)
		prism_xsk_kick(x);
	return n;
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
	if (xsk_prod_nb_free(&x->tx, x->tx.size) < x->tx.size && xsk_ring_prod__needs_wakeup(&x->tx))
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
