/* prism_hist.c - latency histograms of the overlay: HDR-style buckets, and a copy of each class's histogram for Python. */
#include <errno.h>
#include <string.h>

#include "prism_overlay.h"

/*
 * A packet's class is the one XDP decided (its metadata, read by rx into
 * the batch's cls): one classifier, in BPF, for steering and measurement.
 * Values are added at the TX kick, in prism_deliver.c (hist_add, inline).
 */

int prism_hist_bucket(uint64_t v)
{
	return hist_bucket(v);
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

int prism_overlay_hist(struct prism_overlay *o, uint32_t cls, int from_poll, struct prism_hist *out)
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
