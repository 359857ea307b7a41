/* prism_socket.c - AF_XDP socket setup: a UMEM registration per (device, queue), with TX metadata where the kernel has it, ring mmaps and bind; then the socket's options, statistics and XSKMAP slot. */
#include <errno.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "prism.h"
#include "prism_internal.h"

#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

/*
 * Why not libxdp's xsk_umem__create / xsk_socket__create_shared: libxdp
 * 1.3.1 (Debian 12) zeroes the UMEM registration's tx_metadata_len, and
 * without it the kernel reads no TX metadata, so a frame could never ask
 * for the checksum offload that stock containers rely on (see
 * prism_csum.c). The ring structs and their inline accessors stay
 * libxdp's; only the setup below is ours, and it does what libxdp does:
 * one socket registers the area and owns the fill/completion rings, it is
 * also the first socket bound on that (device, queue), and later sockets
 * on the same (device, queue) bind with XDP_SHARED_UMEM to it.
 */

static int umem_reg(int fd, const struct prism_umem *u, uint32_t txmd_len)
{
	struct prism_umem_reg mr = {
		.addr = (uintptr_t)u->area,
		.len = u->size,
		.chunk_size = u->frame_size,
		.headroom = u->headroom,
		.flags = txmd_len ? XDP_UMEM_TX_METADATA_LEN : 0,
		.tx_metadata_len = txmd_len,
	};

	return setsockopt(fd, SOL_XDP, XDP_UMEM_REG, &mr, sizeof(mr)) ? -errno : 0;
}

/* TX metadata needs Linux >= 6.11 (the flag that makes tx_metadata_len
 * count); older kernels refuse the unknown flag with EINVAL. 6.8-6.10 read
 * the field without the flag, but so silently do kernels that ignore it,
 * so they are not trusted: the checksum is then completed in software.
 */
int prism_probe_tx_metadata(struct prism_umem *u)
{
	int fd = socket(AF_XDP, SOCK_RAW, 0), err;

	if (fd < 0)
		return -errno;
	err = umem_reg(fd, u, PRISM_TXMD_LEN);
	close(fd);
	if (err == -EINVAL)
		return 0;
	return err ? err : PRISM_TXMD_LEN;
}

static void *ring_map(int fd, uint64_t pgoff, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, pgoff);

	return p == MAP_FAILED ? NULL : p;
}

static int mmap_offsets(int fd, struct xdp_mmap_offsets *off)
{
	socklen_t len = sizeof(*off);

	if (getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, off, &len))
		return -errno;
	return len == sizeof(*off) ? 0 : -EOPNOTSUPP; /* kernels < 5.4 lack the flags word */
}

static int ring_size(int fd, int opt, uint32_t size)
{
	return setsockopt(fd, SOL_XDP, opt, &size, sizeof(size)) ? -errno : 0;
}

/* libxdp's producer and consumer rings have one layout (DEFINE_XSK_RING):
 * the shared indices, flags and descriptors at the kernel's offsets in the
 * mapping, and cached copies of the indices.
 */
#define RING_INIT(r, map, o, n)                                          \
	do {                                                             \
		(r)->size = (n);                                         \
		(r)->mask = (r)->size - 1;                               \
		(r)->producer = (void *)((char *)(map) + (o)->producer); \
		(r)->consumer = (void *)((char *)(map) + (o)->consumer); \
		(r)->flags = (void *)((char *)(map) + (o)->flags);       \
		(r)->ring = (char *)(map) + (o)->desc;                   \
		(r)->cached_prod = *(r)->producer;                       \
		(r)->cached_cons = *(r)->consumer;                       \
	} while (0)

static void prod_init(struct xsk_ring_prod *r, void *map, const struct xdp_ring_offset *o,
		      uint32_t size)
{
	RING_INIT(r, map, o, size);
	r->cached_cons += size; /* a producer's free entries are cached_cons - cached_prod */
}

static void cons_init(struct xsk_ring_cons *r, void *map, const struct xdp_ring_offset *o,
		      uint32_t size)
{
	RING_INIT(r, map, o, size);
}

static void rings_unmap(struct prism_rings *r)
{
	if (r->fq_map)
		munmap(r->fq_map, r->fq_len);
	if (r->cq_map)
		munmap(r->cq_map, r->cq_len);
}

/* Register the area for one (device, queue) and map its fill/completion rings. */
static int rings_setup(struct prism_umem *u, struct prism_rings *r)
{
	struct xdp_mmap_offsets off;
	int err;

	r->fd = socket(AF_XDP, SOCK_RAW, 0);
	if (r->fd < 0)
		return -errno;
	err = umem_reg(r->fd, u, u->txmd_len);
	if (!err)
		err = ring_size(r->fd, XDP_UMEM_FILL_RING, u->fill_size);
	if (!err)
		err = ring_size(r->fd, XDP_UMEM_COMPLETION_RING, u->comp_size);
	if (!err)
		err = mmap_offsets(r->fd, &off);
	if (err)
		goto fail;
	r->fq_len = off.fr.desc + u->fill_size * sizeof(uint64_t);
	r->cq_len = off.cr.desc + u->comp_size * sizeof(uint64_t);
	r->fq_map = ring_map(r->fd, XDP_UMEM_PGOFF_FILL_RING, r->fq_len);
	r->cq_map = ring_map(r->fd, XDP_UMEM_PGOFF_COMPLETION_RING, r->cq_len);
	if (!r->fq_map || !r->cq_map) {
		err = -errno;
		goto fail;
	}
	prod_init(&r->fq, r->fq_map, &off.fr, u->fill_size);
	cons_init(&r->cq, r->cq_map, &off.cr, u->comp_size);
	return 0;
fail:
	rings_unmap(r);
	close(r->fd);
	return err;
}

/* The ring pair of (ifindex, queue), registering the area for it if new. */
static int rings_get(struct prism_umem *u, int ifindex, uint32_t queue, struct prism_rings **out)
{
	struct prism_rings *r;
	int err;

	for (r = u->rings; r; r = r->next) {
		if (r->ifindex == ifindex && r->queue == queue) {
			*out = r;
			return 0;
		}
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	err = rings_setup(u, r);
	if (err) {
		free(r);
		return err;
	}
	r->ifindex = ifindex;
	r->queue = queue;
	r->next = u->rings;
	u->rings = r;
	*out = r;
	return 0;
}

static void rings_put(struct prism_umem *u, struct prism_rings *r)
{
	struct prism_rings **pp;

	if (r->refs > 0)
		return;
	/* Frames the kernel still held on this pair's rings are gone with
	 * the socket: the kernel does not give them back on close.
	 */
	rings_unmap(r);
	close(r->fd);
	for (pp = &u->rings; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			free(r);
			return;
		}
	}
}

static void socket_unmap(struct prism_xsk *x)
{
	if (x->rx_map)
		munmap(x->rx_map, x->rx_len);
	if (x->tx_map)
		munmap(x->tx_map, x->tx_len);
}

static int socket_setup(struct prism_xsk *x, struct prism_rings *r, int ifindex, uint32_t queue,
			uint32_t rx_size, uint32_t tx_size, uint32_t bind_flags)
{
	struct sockaddr_xdp sxdp = { .sxdp_family = AF_XDP,
				     .sxdp_ifindex = ifindex,
				     .sxdp_queue_id = queue };
	struct xdp_mmap_offsets off;
	int err;

	/* The registering socket is the pair's first socket (as in libxdp). */
	if (!r->fd_taken) {
		x->fd = r->fd;
		sxdp.sxdp_flags = bind_flags;
	} else {
		x->fd = socket(AF_XDP, SOCK_RAW, 0);
		if (x->fd < 0)
			return -errno;
		/* A shared socket takes no mode flags of its own. */
		sxdp.sxdp_flags = XDP_SHARED_UMEM;
		sxdp.sxdp_shared_umem_fd = r->fd;
	}
	err = rx_size ? ring_size(x->fd, XDP_RX_RING, rx_size) : 0;
	if (!err && tx_size)
		err = ring_size(x->fd, XDP_TX_RING, tx_size);
	if (!err)
		err = mmap_offsets(x->fd, &off);
	if (err)
		goto fail;
	if (rx_size) {
		x->rx_len = off.rx.desc + rx_size * sizeof(struct xdp_desc);
		x->rx_map = ring_map(x->fd, XDP_PGOFF_RX_RING, x->rx_len);
		if (!x->rx_map) {
			err = -errno;
			goto fail;
		}
		cons_init(&x->rx, x->rx_map, &off.rx, rx_size);
	}
	if (tx_size) {
		x->tx_len = off.tx.desc + tx_size * sizeof(struct xdp_desc);
		x->tx_map = ring_map(x->fd, XDP_PGOFF_TX_RING, x->tx_len);
		if (!x->tx_map) {
			err = -errno;
			goto fail;
		}
		prod_init(&x->tx, x->tx_map, &off.tx, tx_size);
	}
	if (bind(x->fd, (struct sockaddr *)&sxdp, sizeof(sxdp))) {
		err = -errno;
		goto fail;
	}
	if (x->fd == r->fd)
		r->fd_taken = 1;
	return 0;
fail:
	socket_unmap(x);
	x->rx_map = x->tx_map = NULL;
	if (x->fd != r->fd)
		close(x->fd);
	return err;
}

int prism_xsk_create(struct prism_xsk **out, struct prism_umem *u, const char *ifname,
		     uint32_t queue, uint32_t rx_size, uint32_t tx_size, uint32_t bind_flags)
{
	struct prism_rings *r;
	struct prism_xsk *x;
	int ifindex, err;

	if (!u->registered)
		return -EINVAL;
	if ((rx_size & (rx_size - 1)) || (tx_size & (tx_size - 1)) || (!rx_size && !tx_size))
		return -EINVAL;
	if ((bind_flags & XDP_USE_SG) && !u->multibuf)
		return -EINVAL; /* its packets' parts would have nowhere to be chained */
	ifindex = if_nametoindex(ifname);
	if (!ifindex)
		return -ENODEV;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	err = rings_get(u, ifindex, queue, &r);
	if (err) {
		free(x);
		return err;
	}
	err = socket_setup(x, r, ifindex, queue, rx_size, tx_size, bind_flags);
	if (err) {
		rings_put(u, r);
		free(x);
		return err;
	}
	r->refs++;
	x->rings = r;
	x->umem = u;
	x->next = u->sockets;
	u->sockets = x;
	*out = x;
	return 0;
}

void prism_xsk_delete(struct prism_xsk *x)
{
	struct prism_xsk **pp;
	struct prism_rings *r;

	if (!x)
		return;
	r = x->rings;
	socket_unmap(x);
	/* The registering socket's fd is closed with its ring pair, after the
	 * pair's last socket: closing it first would take the UMEM from them.
	 * (It stays bound until then, so it is never handed out again.)
	 */
	if (x->fd != r->fd)
		close(x->fd);
	r->refs--;
	rings_put(x->umem, r);
	for (pp = &x->umem->sockets; *pp; pp = &(*pp)->next) {
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	}
	free(x);
}

/* ---- a socket's options and statistics -------------------------------- */

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
