/* prism_bpf.c - XDP programs (load, attach, detach, find stale ones) through libxdp, BPF maps through libbpf, and library logging. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <xdp/libxdp.h>

#include "prism.h"

/*
 * libbpf loads the object (so its maps exist and can be configured before
 * any packet arrives); libxdp then attaches the loaded program by fd.
 */
struct prism_prog {
	struct bpf_object *obj;
	struct xdp_program *prog; /* NULL for a TC program (prism_kdecap, prism_kencap) */
	struct bpf_program *bprog;
};

/* libxdp reports errors through pointers; turn them into -errno. */
static int ptr_err(const void *p)
{
	long err = libxdp_get_error(p);

	if (err)
		return err < 0 ? (int)err : -(int)err;
	return p ? 0 : -ENOENT;
}

int prism_prog_open(struct prism_prog **out, const char *path, const char *const *reuse_names,
		    const int *reuse_fds, uint32_t n_reuse, int frags)
{
	struct prism_prog *p = calloc(1, sizeof(*p));
	struct bpf_program *bprog;
	struct bpf_map *map;
	uint32_t i;
	int err;

	if (!p)
		return -ENOMEM;
	p->obj = bpf_object__open_file(path, NULL);
	err = libbpf_get_error(p->obj);
	if (err) {
		p->obj = NULL;
		goto fail;
	}
	/* Maps another program already has (rules shared by both directions). */
	for (i = 0; i < n_reuse; i++) {
		map = bpf_object__find_map_by_name(p->obj, reuse_names[i]);
		if (!map) {
			err = -ENOENT;
			goto fail;
		}
		err = bpf_map__reuse_fd(map, reuse_fds[i]);
		if (err)
			goto fail;
	}
	/* A program that reads only the headers in the packet's first part
	 * may take a multi-buffer packet; XSKMAP then passes every part on.
	 */
	bpf_object__for_each_program(bprog, p->obj)
		if (frags && bpf_program__type(bprog) == BPF_PROG_TYPE_XDP)
			bpf_program__set_flags(bprog,
					       bpf_program__flags(bprog) | BPF_F_XDP_HAS_FRAGS);
	err = bpf_object__load(p->obj);
	if (err)
		goto fail;
	bprog = bpf_object__next_program(p->obj, NULL);
	if (!bprog) {
		err = -ENOENT;
		goto fail;
	}
	p->bprog = bprog;
	if (bpf_program__type(bprog) != BPF_PROG_TYPE_XDP) {
		*out = p;
		return 0;
	}
	p->prog = xdp_program__from_fd(bpf_program__fd(bprog));
	err = ptr_err(p->prog);
	if (err) {
		p->prog = NULL;
		goto fail;
	}
	*out = p;
	return 0;
fail:
	bpf_object__close(p->obj);
	free(p);
	return err < 0 ? err : -err;
}

void prism_prog_close(struct prism_prog *p)
{
	if (!p)
		return;
	if (p->prog)
		xdp_program__close(p->prog);
	bpf_object__close(p->obj);
	free(p);
}

const char *prism_prog_name(struct prism_prog *p)
{
	return p->prog ? xdp_program__name(p->prog) : bpf_program__name(p->bprog);
}

uint32_t prism_prog_id(struct prism_prog *p)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);

	if (p->prog)
		return xdp_program__id(p->prog);
	memset(&info, 0, sizeof(info));
	return bpf_obj_get_info_by_fd(bpf_program__fd(p->bprog), &info, &len) ? 0 : info.id;
}

int prism_prog_fd(struct prism_prog *p)
{
	return p->prog ? xdp_program__fd(p->prog) : bpf_program__fd(p->bprog);
}

/* mode: enum xdp_attach_mode (1 native, 2 skb, 3 hw). libxdp first tries
 * its multi-program dispatcher and, where that is refused (it is here),
 * attaches the program alone; both outcomes are fine for us.
 */
int prism_prog_attach(struct prism_prog *p, int ifindex, int mode)
{
	return xdp_program__attach(p->prog, ifindex, mode, 0);
}

/* Attach through a BPF link (Linux >= 5.9): the attachment belongs to the
 * returned fd, so it goes away with the process that holds it - a daemon
 * killed with -9 never strands its program - and no other tool can replace
 * it underneath us. mode as above; returns the link fd or -errno.
 */
int prism_prog_attach_link(struct prism_prog *p, int ifindex, int mode)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts);
	int fd;

	opts.flags = mode == XDP_MODE_SKB ? XDP_FLAGS_SKB_MODE :
		     mode == XDP_MODE_HW  ? XDP_FLAGS_HW_MODE :
					    XDP_FLAGS_DRV_MODE;
	fd = bpf_link_create(xdp_program__fd(p->prog), ifindex, BPF_XDP, &opts);
	return fd < 0 ? -errno : fd;
}

/* BPF_TCX_INGRESS and BPF_TCX_EGRESS of Linux >= 6.6, which older UAPI headers lack. */
#define PRISM_TCX_INGRESS 46
#define PRISM_TCX_EGRESS 47

/* Attach a TC program to a device's ingress (or egress) through a tcx link
 * (Linux >= 6.6): like the XDP link, the attachment goes away with the
 * process, needs no qdisc, and leaves other programs on the hook in place.
 * Returns the link fd or -errno.
 */
int prism_tcx_attach_link(int prog_fd, int ifindex, int egress)
{
	int fd = bpf_link_create(
		prog_fd, ifindex,
		(enum bpf_attach_type)(egress ? PRISM_TCX_EGRESS : PRISM_TCX_INGRESS), NULL);

	return fd < 0 ? -errno : fd;
}

/* The ids of the programs on a device's tcx ingress (or egress): returns
 * how many there are (at most n are written) or -errno.
 */
int prism_tcx_query(int ifindex, int egress, uint32_t *ids, uint32_t n)
{
	__u32 count = n, flags = 0;

	if (bpf_prog_query(ifindex,
			   (enum bpf_attach_type)(egress ? PRISM_TCX_EGRESS : PRISM_TCX_INGRESS), 0,
			   &flags, ids, &count))
		return -errno;
	return (int)count;
}

/* Detach even if another process still holds the link (a worker forked
 * with it), then close our fd.
 */
int prism_link_detach(int link_fd)
{
	int err = bpf_link_detach(link_fd) ? -errno : 0;

	close(link_fd);
	return err;
}

int prism_prog_map_fd(struct prism_prog *p, const char *map_name)
{
	int fd = bpf_object__find_map_fd_by_name(p->obj, map_name);

	return fd < 0 ? -ENOENT : fd;
}

/* What is attached to a device, without libxdp's view of dispatchers:
 * returns 1 and the program's id, attach mode (XDP_ATTACHED_*) and name,
 * or 0 when nothing is attached.
 */
int prism_xdp_query(int ifindex, uint32_t *prog_id, int *mode, char *name, uint32_t name_len)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, opts);
	struct bpf_prog_info info;
	__u32 info_len = sizeof(info);
	int fd, err;

	err = bpf_xdp_query(ifindex, 0, &opts);
	if (err)
		return err;
	*mode = opts.attach_mode;
	*prog_id = opts.prog_id;
	if (name_len)
		name[0] = '\0';
	if (!opts.prog_id)
		return 0;
	fd = bpf_prog_get_fd_by_id(opts.prog_id);
	if (fd < 0)
		return 1; /* gone meanwhile, or no rights to look: id is enough */
	memset(&info, 0, sizeof(info));
	if (!bpf_obj_get_info_by_fd(fd, &info, &info_len) && name_len) {
		strncpy(name, info.name, name_len - 1);
		name[name_len - 1] = '\0';
	}
	close(fd);
	return 1;
}

/* Detach exactly the program with this id (so a program that replaced ours
 * meanwhile is left alone). mode is XDP_ATTACHED_* as from prism_xdp_query.
 */
int prism_xdp_detach_id(int ifindex, uint32_t prog_id, int mode)
{
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts);
	__u32 flags = XDP_FLAGS_REPLACE;
	int fd, err;

	if (mode == XDP_ATTACHED_SKB)
		flags |= XDP_FLAGS_SKB_MODE;
	else if (mode == XDP_ATTACHED_DRV)
		flags |= XDP_FLAGS_DRV_MODE;
	else if (mode == XDP_ATTACHED_HW)
		flags |= XDP_FLAGS_HW_MODE;
	fd = bpf_prog_get_fd_by_id(prog_id);
	if (fd < 0)
		return -errno;
	opts.old_prog_fd = fd;
	err = bpf_xdp_detach(ifindex, flags, &opts);
	close(fd);
	return err;
}

int prism_map_update(int fd, const void *key, const void *value, uint64_t flags)
{
	return bpf_map_update_elem(fd, key, value, flags) ? -errno : 0;
}

int prism_map_lookup(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value) ? -errno : 0;
}

int prism_map_delete(int fd, const void *key)
{
	return bpf_map_delete_elem(fd, key) ? -errno : 0;
}

int prism_map_next_key(int fd, const void *key, void *next_key)
{
	return bpf_map_get_next_key(fd, key, next_key) ? -errno : 0;
}

/* All n values of an array map of u8, in one syscall where the kernel
 * supports batch lookups, else one lookup per key.
 */
int prism_array_u8_dump(int fd, uint32_t n, uint8_t *values)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	__u32 out_batch, count = n, i;
	__u32 *keys = calloc(n, sizeof(*keys));
	uint8_t *vals = calloc(n, 1); /* batch lookups pack values at value_size */
	int err = 0;

	if (!keys || !vals) {
		err = -ENOMEM;
		goto out;
	}
	if (!bpf_map_lookup_batch(fd, NULL, &out_batch, keys, vals, &count, &opts) ||
	    (errno == ENOENT && count == n)) {
		for (i = 0; i < count && i < n; i++)
			if (keys[i] < n)
				values[keys[i]] = vals[i];
		goto out;
	}
	for (i = 0; i < n; i++) {
		uint8_t v = 0;

		if (bpf_map_lookup_elem(fd, &i, &v)) {
			err = -errno;
			goto out;
		}
		values[i] = v;
	}
out:
	free(keys);
	free(vals);
	return err;
}

/* Sum a per-CPU value of `words` u64 counters over all possible CPUs. */
int prism_percpu_sum(int fd, uint32_t key, uint32_t words, uint64_t *out)
{
	int ncpu = libbpf_num_possible_cpus(), cpu, err = 0;
	uint64_t *vals;
	uint32_t w;

	if (ncpu < 0)
		return ncpu;
	vals = calloc((size_t)ncpu * words, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	if (bpf_map_lookup_elem(fd, &key, vals)) {
		err = -errno;
		goto out;
	}
	memset(out, 0, words * sizeof(*out));
	for (cpu = 0; cpu < ncpu; cpu++)
		for (w = 0; w < words; w++)
			out[w] += vals[cpu * words + w];
out:
	free(vals);
	return err;
}

/* Run an XDP program on `repeat` copies of a frame as live packets: what it
 * redirects is really transmitted (BPF_F_TEST_XDP_LIVE_FRAMES, kernel 5.18).
 * The fastest generator on this platform; see tools/.
 */
int prism_prog_run_live(int prog_fd, const uint8_t *frame, uint32_t len, uint32_t repeat,
			uint32_t batch_size)
{
	struct xdp_md ctx_in = { .data_end = len };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = len,
		    .ctx_in = &ctx_in, .ctx_size_in = sizeof(ctx_in), .repeat = repeat,
		    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = batch_size);

	return bpf_prog_test_run_opts(prog_fd, &opts) ? -errno : 0;
}

/* One program run over a test frame, repeated in the kernel: the average
 * duration per run isolates the program's own cost (no redirect is done in
 * this mode, so the frame's fate does not weigh in).
 */
int prism_prog_run_test(int prog_fd, const uint8_t *frame, uint32_t len, uint32_t repeat,
			uint32_t *duration_ns, uint32_t *retval)
{
	uint8_t out[4096];
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = len, .data_out = out,
		    .data_size_out = sizeof(out), .repeat = repeat);

	if (bpf_prog_test_run_opts(prog_fd, &opts))
		return -errno;
	*duration_ns = opts.duration;
	*retval = opts.retval;
	return 0;
}

/* Library messages go to Python's logging, not to stderr. prism_log is an
 * extern "Python" function defined by the cffi module.
 */
void prism_log(int level, const char *msg);
static int log_min_level;

static int print_to_python(int level, const char *fmt, va_list ap)
{
	/* A verifier log arrives as one message and its verdict is at the end:
	 * keep the tail of a long one.
	 */
	char buf[16384];
	int n;

	if (level > log_min_level)
		return 0;
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (n >= (int)sizeof(buf) - 1 && n > 4096)
		prism_log(level, buf + strlen(buf) - 4096);
	else
		prism_log(level, buf);
	return 0;
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return print_to_python(level, fmt, ap);
}

static int libxdp_print(enum libxdp_print_level level, const char *fmt, va_list ap)
{
	return print_to_python(level, fmt, ap);
}

/* min_level: 0 warnings, 1 info, 2 debug (both libraries use that order). */
void prism_install_log(int min_level)
{
	log_min_level = min_level;
	libbpf_set_print(libbpf_print);
	libxdp_set_print(libxdp_print);
}
