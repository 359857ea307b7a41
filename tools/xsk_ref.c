/* xsk_ref.c - the C reference for the benchmarks: rx-drop or forward with libxdp directly, no Python, same batch size and rings as prism_xdp. */
#include <errno.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <xdp/xsk.h>

/*
 * Usage: xsk_ref rxdrop|fwd|decap RX_IF TX_IF BPF_OBJ MAX_SECONDS BATCH
 * Attaches BPF_OBJ's program (prism_redirect) to RX_IF, receives on queue
 * 0 and drops (rxdrop) or transmits on TX_IF from the same UMEM (fwd; decap
 * also moves each descriptor past 50 bytes of outer headers, so that TX_IF
 * gets the inner frame, exactly what prism_xdp delivers there). It
 * stops 300 ms after the last packet or after MAX_SECONDS, detaches, and
 * prints {"packets": N, "seconds": S} measured from first to last packet;
 * in fwd mode N counts the packets put on the TX ring, not those received.
 */

#define NFRAMES 4096
#define FRAME 2048
#define RING 2048

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t pool[NFRAMES];
static uint32_t pool_n;

static void die(const char *what, int err)
{
	fprintf(stderr, "xsk_ref: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

int main(int argc, char **argv)
{
	/* Zeroed: libxdp leaves the cached indexes of a shared socket's completion ring
	 * unset, and stack garbage there made the first peek return bogus completions.
	 */
	struct xsk_ring_prod fq = { 0 }, fq2 = { 0 }, tx = { 0 };
	struct xsk_ring_cons cq = { 0 }, cq2 = { 0 }, rx = { 0 };
	struct xsk_socket_config cfg = { .rx_size = RING, .tx_size = RING,
					 .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
					 .bind_flags = XDP_USE_NEED_WAKEUP };
	struct xsk_umem_config ucfg = { .fill_size = RING, .comp_size = RING, .frame_size = FRAME };
	struct xsk_socket *xs_rx, *xs_tx = NULL;
	struct xsk_umem *umem;
	struct bpf_object *obj;
	uint64_t packets = 0, first = 0, last = 0, deadline;
	int fwd, strip, ifindex, prog_fd, map_fd, fd, err, batch;
	uint32_t i, idx, key = 0;
	void *area;

	if (argc != 7) {
		fprintf(stderr, "usage: xsk_ref rxdrop|fwd|decap RX_IF TX_IF BPF_OBJ MAX_SECONDS BATCH\n");
		return 2;
	}
	fwd = !strcmp(argv[1], "fwd") || !strcmp(argv[1], "decap");
	strip = !strcmp(argv[1], "decap") ? 50 : 0;
	batch = atoi(argv[6]);
	ifindex = if_nametoindex(argv[2]);
	if (!ifindex)
		die(argv[2], ENODEV);
	obj = bpf_object__open_file(argv[4], NULL);
	if (libbpf_get_error(obj) || bpf_object__load(obj))
		die("load BPF object", errno);
	prog_fd = bpf_program__fd(bpf_object__next_program(obj, NULL));
	map_fd = bpf_object__find_map_fd_by_name(obj, "xsks");
	err = bpf_xdp_attach(ifindex, prog_fd, XDP_FLAGS_DRV_MODE, NULL);
	if (err)
		die("attach", err);

	area = aligned_alloc(4096, (size_t)NFRAMES * FRAME);
	err = xsk_umem__create(&umem, area, (uint64_t)NFRAMES * FRAME, &fq, &cq, &ucfg);
	if (err)
		die("umem", err);
	/* A socket closed just before may still hold the queue (the kernel
	 * frees its binding asynchronously): retry EBUSY for a second.
	 */
	for (i = 0; i < 100; i++) {
		err = xsk_socket__create_shared(&xs_rx, argv[2], 0, umem, &rx, NULL, &fq, &cq, &cfg);
		if (err != -EBUSY)
			break;
		usleep(10000);
	}
	if (err)
		die("rx socket", err);
	if (fwd) {
		err = xsk_socket__create_shared(&xs_tx, argv[3], 0, umem, NULL, &tx, &fq2,
						&cq2, &cfg);
		if (err)
			die("tx socket", err);
	}
	fd = xsk_socket__fd(xs_rx);
	if (bpf_map_update_elem(map_fd, &key, &fd, 0))
		die("xsks map", errno);
	for (i = 0; i < NFRAMES; i++)
		pool[pool_n++] = (uint64_t)i * FRAME;
	if (xsk_ring_prod__reserve(&fq, RING, &idx) != RING)
		die("fill", ENOSPC);
	for (i = 0; i < RING; i++)
		*xsk_ring_prod__fill_addr(&fq, idx + i) = pool[--pool_n];
	xsk_ring_prod__submit(&fq, RING);

	printf("ready\n");
	fflush(stdout);
	deadline = now_ns() + (uint64_t)atoi(argv[5]) * 1000000000ull;
	for (;;) {
		uint64_t t = now_ns();
		uint32_t n, ridx, j, got;

		if (t > deadline || (last && t - last > 300000000ull))
			break;
		n = xsk_ring_cons__peek(&rx, batch, &ridx);
		if (!n) {
			if (xsk_ring_prod__needs_wakeup(&fq))
				recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
			if (fwd) {
				got = xsk_ring_cons__peek(&cq2, RING, &j);
				for (i = 0; i < got; i++)
					pool[pool_n++] = *xsk_ring_cons__comp_addr(&cq2, j + i);
				xsk_ring_cons__release(&cq2, got);
			}
			continue;
		}
		if (!first)
			first = t;
		last = t;
		if (!fwd)
			packets += n;
		if (fwd) {
			uint32_t tidx;

			if (xsk_ring_prod__reserve(&tx, n, &tidx) == n) {
				for (i = 0; i < n; i++) {
					const struct xdp_desc *d = xsk_ring_cons__rx_desc(&rx, ridx + i);
					struct xdp_desc *o = xsk_ring_prod__tx_desc(&tx, tidx + i);

					o->addr = d->addr + (d->len > (uint32_t)strip ? strip : 0);
					o->len = d->len - (d->len > (uint32_t)strip ? strip : 0);
					o->options = 0;
				}
				xsk_ring_prod__submit(&tx, n);
				packets += n; /* forward counts what went out */
				for (i = 0; i < 8; i++)
					if (sendto(xsk_socket__fd(xs_tx), NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0 ||
					    errno != EAGAIN)
						break;
			} else {
				for (i = 0; i < n; i++)
					pool[pool_n++] = xsk_ring_cons__rx_desc(&rx, ridx + i)->addr & ~(uint64_t)(FRAME - 1);
			}
			got = xsk_ring_cons__peek(&cq2, RING, &j);
			for (i = 0; i < got; i++)
				pool[pool_n++] = *xsk_ring_cons__comp_addr(&cq2, j + i) & ~(uint64_t)(FRAME - 1);
			xsk_ring_cons__release(&cq2, got);
		} else {
			for (i = 0; i < n; i++)
				pool[pool_n++] = xsk_ring_cons__rx_desc(&rx, ridx + i)->addr & ~(uint64_t)(FRAME - 1);
		}
		xsk_ring_cons__release(&rx, n);
		/* refill what we can */
		got = xsk_prod_nb_free(&fq, pool_n);
		if (got > pool_n)
			got = pool_n;
		if (got && xsk_ring_prod__reserve(&fq, got, &idx) == got) {
			for (i = 0; i < got; i++)
				*xsk_ring_prod__fill_addr(&fq, idx + i) = pool[--pool_n];
			xsk_ring_prod__submit(&fq, got);
		}
	}
	bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
	if (xs_tx)
		xsk_socket__delete(xs_tx);
	xsk_socket__delete(xs_rx);
	xsk_umem__delete(umem);
	printf("{\"packets\": %llu, \"seconds\": %.6f}\n", (unsigned long long)packets,
	       (last - first) / 1e9);
	return 0;
}
