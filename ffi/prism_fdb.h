/* prism_fdb.h - the overlay's forwarding table: static container entries and learned remote MACs that age out, bounded per VTEP; private to the C helpers. */
#ifndef PRISM_FDB_H
#define PRISM_FDB_H

#include <stdint.h>

#define PRISM_FDB_SIZE 16384 /* power of two; open addressing */
#define PRISM_FDB_PROBE 64 /* a key lives within this many slots of its hash */
#define PRISM_FDB_VTEPS 256 /* = PRISM_MAX_VTEPS */

#define FDB_EMPTY 0
#define FDB_LOCAL 1
#define FDB_REMOTE 2
#define FDB_DEAD 3 /* aged out: lookups probe past it, learning reuses it */

struct prism_fdb_entry {
	uint32_t vni;
	uint8_t mac[6];
	uint8_t kind;
	uint16_t idx; /* port (LOCAL) or VTEP (REMOTE) */
	uint64_t seen; /* last frame from it (REMOTE), CLOCK_MONOTONIC ns */
};

struct prism_fdb {
	uint64_t ageing_ns;
	uint32_t max_per_vtep;
	uint64_t last_sweep;
	uint32_t by_vtep[PRISM_FDB_VTEPS]; /* live learned entries of each VTEP */
	uint64_t entries; /* live learned entries */
	uint64_t changes; /* learned or moved */
	uint64_t refused; /* not learned: the VTEP's share or the table was full */
	uint64_t expired;
	struct prism_fdb_entry slot[PRISM_FDB_SIZE];
};

void prism_fdb_init(struct prism_fdb *f, uint32_t ageing_s, uint32_t max_per_vtep);
/* A container's static entry; -EEXIST, or -ENOSPC when its probe window is full. */
int prism_fdb_add_local(struct prism_fdb *f, uint32_t vni, const uint8_t *mac, uint16_t port);
/* A remote MAC seen behind a VTEP at time now: learned, moved or refreshed. */
void prism_fdb_learn(struct prism_fdb *f, uint32_t vni, const uint8_t *mac, uint16_t vtep,
		     uint64_t now);
/* FDB_LOCAL / FDB_REMOTE with *idx, or FDB_EMPTY when unknown or aged out. */
int prism_fdb_lookup(const struct prism_fdb *f, uint32_t vni, const uint8_t *mac, uint64_t now,
		     uint32_t *idx);

#endif /* PRISM_FDB_H */
