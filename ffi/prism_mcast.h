/* prism_mcast.h - MLD snooping's state: which container ports joined which IPv6 multicast group, shared by every worker of a daemon; private to the C helpers. */
#ifndef PRISM_MCAST_H
#define PRISM_MCAST_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#include "prism.h"

#define PRISM_MCAST_ENTRIES 8192 /* (group, port) memberships, every VNI together */
#define PRISM_MCAST_BUCKETS 2048 /* power of two: chains by (VNI, group MAC) */
#define PRISM_MCAST_WORDS ((PRISM_MAX_PORTS + 63) / 64)

struct prism_mcast_entry {
	uint64_t expires; /* CLOCK_MONOTONIC ns; the membership is gone after it */
	uint32_t vni;
	uint32_t next; /* the next entry of its chain, plus one; 0 ends the chain */
	uint16_t port;
	uint8_t mac[6]; /* the group's MAC, 33:33 and its address's low 32 bits */
};

struct prism_mcast {
	/* Workers of every queue learn and look up here (shared memory, see
	 * prism_mcast_new); a membership changes only on an MLD report, and a
	 * lookup is made only for a group's frame, so the lock costs nothing on
	 * the unicast path. */
	pthread_mutex_t lock;
	uint64_t member_ns; /* a report keeps a membership this long */
	uint32_t per_port; /* memberships a port may hold */
	uint64_t ready_at; /* pruning from then on (0: not yet, flood) */
	uint64_t last_sweep;
	uint64_t all_until_max; /* the latest all_until[] */
	uint32_t free; /* free entries, a list through next, plus one */
	uint32_t bucket[PRISM_MCAST_BUCKETS]; /* first entry plus one */
	uint16_t held[PRISM_MAX_PORTS]; /* live memberships of each port */
	/* A port refused a membership (its share or the table was full) gets
	 * every group until then: nothing it asked for is withheld. */
	uint64_t all_until[PRISM_MAX_PORTS];
	struct prism_mcast_counters cnt;
	struct prism_mcast_entry e[PRISM_MCAST_ENTRIES];
};

/* Under m->lock: set the bits of the ports that take a frame for (vni,
 * group MAC) at time now (members, and ports refused a membership lately).
 */
void prism_mcast_select(struct prism_mcast *m, uint32_t vni, const uint8_t *mac, uint64_t now,
			uint64_t *sel);
int prism_mcast_learn_locked(struct prism_mcast *m, uint32_t vni, uint32_t port, const uint8_t *f,
			     uint32_t len, uint64_t now);

static inline void mcast_lock(struct prism_mcast *m)
{
	if (pthread_mutex_lock(&m->lock) == EOWNERDEAD)
		pthread_mutex_consistent(&m->lock); /* a worker died holding it */
}

static inline void mcast_unlock(struct prism_mcast *m)
{
	pthread_mutex_unlock(&m->lock);
}

static inline int prism_mcast_pruning(const struct prism_mcast *m, uint64_t now)
{
	return m && m->ready_at && now >= m->ready_at;
}

#endif /* PRISM_MCAST_H */
