/* prism_internal.h - the C helpers' private structures (UMEM, ring pairs, sockets) and the ring helpers the overlay shares with the socket API; never read by cffi. */
#ifndef PRISM_INTERNAL_H
#define PRISM_INTERNAL_H

#include <xdp/xsk.h>

/*
 * Frame ownership (after xsk_fwd in bpf-examples). One UMEM holds every
 * frame; a frame is always in exactly one place:
 *
 *   pool --fill_batch--> fill ring --kernel--> RX ring --rx_batch--> batch
 *   batch --tx_batch--> TX ring --kernel--> completion ring
 *   completion ring --complete_batch--> pool;  batch --free_batch--> pool
 *
 * The pool is a stack of frame base addresses. Sockets on one (device,
 * queue) share one fill/completion ring pair (struct prism_rings), so
 * frames that one of them receives may be refilled through any of them.
 * Every ring is single-producer single-consumer: one thread drives a UMEM.
 * The counters below let prism_umem_account() prove that no frame leaks.
 *
 * Each (device, queue) registers the same memory area as a UMEM of its own.
 * The kernel lets a socket share another device's UMEM only when it brings
 * its own fill/completion rings, and libxdp always names the UMEM's first
 * socket as the one to share with; so a second socket on a second device
 * (a container's HIGH and LOW sockets) fails with EINVAL. A registration per
 * (device, queue) makes every such group an ordinary same-queue share, and
 * since all registrations cover one area, a descriptor received on one
 * device is valid on any other: still no copy.
 */

struct prism_rings {
	struct xsk_ring_prod fq;
	struct xsk_ring_cons cq;
	int fd; /* the socket that registered the area for this pair */
	int fd_taken; /* ... and is bound as the pair's first socket */
	void *fq_map, *cq_map;
	size_t fq_len, cq_len;
	int ifindex;
	uint32_t queue;
	int refs; /* sockets using this pair */
	struct prism_rings *next;
};

struct prism_umem {
	uint8_t *area;
	uint64_t size;
	int registered; /* 0: memory and pool only (unit tests, tools) */
	uint32_t frame_count;
	uint32_t frame_size;
	uint32_t headroom;
	uint32_t fill_size;
	uint32_t comp_size;
	uint32_t txmd_len; /* TX metadata in front of each frame: 0 or PRISM_TXMD_LEN */
	struct prism_rings *rings; /* one pair per (device, queue) */
	struct prism_xsk *sockets; /* every socket, for ring occupancy */
	uint64_t *pool;
	uint32_t pool_n;
	uint64_t kernel_rx; /* on a fill or RX ring */
	uint64_t kernel_tx; /* on a TX or completion ring */
	uint64_t user; /* in batches, every part of a chained packet included */
	/* Multi-buffer packets (sockets bound with XDP_USE_SG): a packet that
	 * came in several descriptors stays in its frames, chained. A batch
	 * holds its first part's address and the whole length; per frame,
	 * next is the following part's address (0: none: no data starts at a
	 * frame's first byte, the kernel leaves headroom) and part_end where
	 * this part's data ends (0: the frame is in no chain). Only the
	 * headers are read in place (they are in the first part, which the
	 * kernel fills before the next); the payload is handed on as one iovec
	 * per part. See prism_rx_upto().
	 */
	int multibuf;
	uint64_t *next;
	uint64_t *part_end;
};

struct prism_xsk {
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;
	void *rx_map, *tx_map;
	size_t rx_len, tx_len;
	struct prism_umem *umem;
	struct prism_rings *rings;
	struct prism_xsk *next; /* in umem->sockets */
	int fd;
	int rx_stamped; /* the XDP program puts a timestamp in front of each packet */
	struct prism_xsk_counters cnt;
};

/* Big-endian fields of packet headers, and the IPv4 header checksum: the
 * stages, checksums and delivery all read and write headers byte by byte.
 */
static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void wr16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

/* Write the checksum of the 20-byte IPv4 header at iph (no options). */
static inline void ipv4_write_csum(uint8_t *iph)
{
	uint32_t sum = 0, i;

	iph[10] = iph[11] = 0;
	for (i = 0; i < 20; i += 2)
		sum += rd16(iph + i);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	wr16(iph + 10, (uint16_t)~sum);
}

#define PRISM_CSUM_REQ(start, offset) ((uint32_t)(start) << 16 | (uint32_t)(offset))
/* In a checksum request's offset: the packet is a GSO aggregate from the
 * uplink (decap found it longer than a wire frame), to go to its container
 * as one GSO packet, never on an AF_XDP ring.
 */
#define PRISM_CSUM_AGG 0x8000
#define PRISM_CSUM_OFFSET(req) ((req)&0x7fff)

static inline uint64_t frame_base(const struct prism_umem *u, uint64_t addr)
{
	return addr & ~(uint64_t)(u->frame_size - 1); /* frame_size is a power of two */
}

static inline uint64_t frame_of(const struct prism_umem *u, uint64_t addr)
{
	return addr / u->frame_size;
}

/* The first part of a packet in several frames (multi-buffer, chained). */
static inline int is_chained(const struct prism_umem *u, uint64_t addr)
{
	return u->multibuf && u->next[frame_of(u, addr)];
}

/* Back to the pool, with every later part of a chained packet; the caller
 * counts one frame out of user, the later parts are counted out here.
 */
static inline void pool_put(struct prism_umem *u, uint64_t addr)
{
	if (__builtin_expect(is_chained(u, addr), 0)) {
		uint64_t part = u->next[frame_of(u, addr)];

		u->next[frame_of(u, addr)] = 0;
		u->part_end[frame_of(u, addr)] = 0;
		while (part) {
			uint64_t f = frame_of(u, part);

			u->pool[u->pool_n++] = frame_base(u, part);
			u->user--;
			part = u->next[f];
			u->next[f] = 0;
			u->part_end[f] = 0;
		}
	}
	u->pool[u->pool_n++] = frame_base(u, addr);
}

int prism_xsk_kick(struct prism_xsk *x);
int prism_probe_tx_metadata(struct prism_umem *u);

/* Put n frames of b on x's TX ring (prism_xsk.c): b's entries idx[0..n),
 * or start..start + n - 1 when idx is NULL. A frame with a checksum
 * request (b->csum) carries it in TX metadata when the UMEM has that. The
 * first frames that fit go (returned; *bytes their length); the rest stay
 * the caller's, and a ring that took fewer than n counts tx_ring_full.
 * Kicks when the kernel asks: after frames went, or with kick_pending
 * whenever the ring holds any (even if none went now).
 */
uint32_t prism_tx_enqueue(struct prism_xsk *x, const struct prism_batch *b, const uint32_t *idx,
			  uint32_t start, uint32_t n, int kick_pending, uint64_t *bytes);
/* One port's rings (its sockets by class; xs[0] set): reap completions,
 * kick the other sockets' waiting TX rings, top the shared fill ring up to
 * level frames, wake a driver that waits for it. Returns frames reaped.
 */
int prism_xsk_service(struct prism_xsk *const *xs, uint32_t nclass, uint32_t level);

#endif /* PRISM_INTERNAL_H */
