/* prism_umem.c - the UMEM's memory and free-frame pool, batches (struct of arrays), frames between the pool and a batch, and the frame account. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "prism.h"
#include "prism_internal.h"

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
		      int register_kernel, int multibuf)
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
	u->multibuf = !!multibuf;
	if (u->multibuf) {
		u->next = calloc(frame_count, sizeof(*u->next));
		u->part_end = calloc(frame_count, sizeof(*u->part_end));
		if (!u->next || !u->part_end) {
			err = -ENOMEM;
			goto fail;
		}
	}

	u->registered = !!register_kernel;
	if (u->registered) {
		int md = prism_probe_tx_metadata(u);

		u->txmd_len = md > 0 ? md : 0; /* an error shows again at bind */
	}
	*out = u;
	return 0;
fail:
	free(u->pool);
	free(u->next);
	free(u->part_end);
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
	free(u->next);
	free(u->part_end);
	munmap(u->area, u->size);
	free(u);
	return 0;
}

uint8_t *prism_umem_area(struct prism_umem *u)
{
	return u->area;
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
	return __atomic_load_n(producer, __ATOMIC_ACQUIRE) -
	       __atomic_load_n(consumer, __ATOMIC_ACQUIRE);
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

int prism_alloc_multibuf(struct prism_umem *u, struct prism_batch *b, const uint8_t *data,
			 uint32_t len)
{
	uint32_t room = u->frame_size - u->headroom - XDP_PACKET_HEADROOM, n, i;
	uint64_t first = 0, prev = 0;

	if (!u->multibuf || !len)
		return -EINVAL;
	n = (len + room - 1) / room;
	if (b->n == b->cap || u->pool_n < n)
		return 0;
	/* As RX leaves one: behind the headroom, each part filling its frame. */
	for (i = 0; i < n; i++) {
		uint64_t addr = u->pool[--u->pool_n] + u->headroom + XDP_PACKET_HEADROOM;
		uint32_t part = i + 1 < n ? room : len - i * room;

		memcpy(u->area + addr, data + (uint64_t)i * room, part);
		u->part_end[frame_of(u, addr)] = addr + part;
		u->next[frame_of(u, addr)] = 0;
		if (prev)
			u->next[frame_of(u, prev)] = addr;
		else
			first = addr;
		prev = addr;
	}
	u->user += n;
	b->addr[b->n] = first;
	b->len[b->n] = len;
	b->ts[b->n] = 0;
	b->poll_ts[b->n] = 0;
	b->csum[b->n] = 0;
	b->port[b->n] = 0;
	b->cls[b->n] = 0;
	b->n++;
	return 1;
}

int prism_umem_read(struct prism_umem *u, uint64_t addr, uint32_t len, uint8_t *out)
{
	uint32_t done = 0;

	while (done < len) {
		uint32_t piece = len - done;
		uint64_t next = u->multibuf ? u->next[frame_of(u, addr)] : 0;
		uint64_t end = u->multibuf ? u->part_end[frame_of(u, addr)] : 0;

		if (end && end - addr < piece) { /* a part of a chain ends first */
			if (!next)
				return -EINVAL; /* longer than the packet */
			piece = (uint32_t)(end - addr);
		}
		if (addr > u->size || piece > u->size - addr)
			return -EINVAL;
		memcpy(out + done, u->area + addr, piece);
		done += piece;
		if (done < len && !(addr = next))
			return -EINVAL; /* longer than the packet */
	}
	return (int)done;
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

int prism_copy_frames_batch(struct prism_umem *u, struct prism_batch *b, uint32_t start, uint32_t n,
			    const uint8_t *data, uint32_t len)
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
