/* prism_fdb.c - the overlay's forwarding table: static container entries and learned remote MACs that age out, bounded per VTEP, so that a flood of source MACs cannot fill it. */
#include <errno.h>
#include <string.h>

#include "prism_fdb.h"

/*
 * Like the kernel bridge's table, learned entries age out (ageing_s, 300 s
 * by default) and are refreshed by every frame from them. Unlike a CAM that
 * simply fills up, each VTEP may hold at most max_per_vtep live entries: a
 * sender inventing source MACs uses up its own share and is refused
 * (counted), while entries already known, a container's and other VTEPs',
 * stay. A known MAC that moves to another VTEP moves with its next frame.
 * A key lives within PRISM_FDB_PROBE slots of its hash, so every operation
 * is bounded; the table is kept at most half full so that windows rarely
 * fill.
 */

static inline uint32_t fdb_hash(uint32_t vni, const uint8_t *mac)
{
	uint64_t k = (uint64_t)mac[0] << 40 | (uint64_t)mac[1] << 32 | (uint64_t)mac[2] << 24 |
		     (uint64_t)mac[3] << 16 | (uint64_t)mac[4] << 8 | mac[5];

	k ^= (uint64_t)vni * 0x9E3779B97F4A7C15ull;
	k *= 0xff51afd7ed558ccdull;
	return (uint32_t)(k >> 40) & (PRISM_FDB_SIZE - 1);
}

static inline int same_key(const struct prism_fdb_entry *e, uint32_t vni, const uint8_t *mac)
{
	return e->vni == vni && !memcmp(e->mac, mac, 6);
}

static inline int expired(const struct prism_fdb *f, const struct prism_fdb_entry *e, uint64_t now)
{
	return e->kind == FDB_REMOTE && now > e->seen && now - e->seen > f->ageing_ns;
}

static void forget(struct prism_fdb *f, struct prism_fdb_entry *e)
{
	f->by_vtep[e->idx % PRISM_FDB_VTEPS]--;
	f->entries--;
	f->expired++;
	e->kind = FDB_DEAD;
}

void prism_fdb_init(struct prism_fdb *f, uint32_t ageing_s, uint32_t max_per_vtep)
{
	memset(f, 0, sizeof(*f));
	f->ageing_ns = (uint64_t)(ageing_s ? ageing_s : 300) * 1000000000ull;
	f->max_per_vtep = max_per_vtep ? max_per_vtep : PRISM_FDB_SIZE / 4;
}

/* The slot holding the key (any kind but EMPTY), or NULL; *spare gets the
 * first reusable slot of the window (EMPTY, DEAD or aged out).
 */
static struct prism_fdb_entry *probe(struct prism_fdb *f, uint32_t vni, const uint8_t *mac,
				     uint64_t now, struct prism_fdb_entry **spare)
{
	uint32_t h = fdb_hash(vni, mac), i;

	*spare = NULL;
	for (i = 0; i < PRISM_FDB_PROBE; i++) {
		struct prism_fdb_entry *e = &f->slot[(h + i) & (PRISM_FDB_SIZE - 1)];

		if (e->kind == FDB_EMPTY) {
			if (!*spare)
				*spare = e;
			return NULL; /* a key is never stored past an empty slot */
		}
		if (same_key(e, vni, mac))
			return e;
		if (!*spare && (e->kind == FDB_DEAD || expired(f, e, now)))
			*spare = e;
	}
	return NULL;
}

/* Aged-out entries leave the per-VTEP counts, at most once a second. */
static void sweep(struct prism_fdb *f, uint64_t now)
{
	uint32_t i;

	if (now && now - f->last_sweep < 1000000000ull)
		return;
	f->last_sweep = now;
	for (i = 0; i < PRISM_FDB_SIZE; i++)
		if (expired(f, &f->slot[i], now))
			forget(f, &f->slot[i]);
}

/* Put a key into a slot, first forgetting the learned entry an aged-out slot held. */
static void take(struct prism_fdb *f, struct prism_fdb_entry *e, uint32_t vni, const uint8_t *mac,
		 uint8_t kind, uint16_t idx)
{
	if (e->kind == FDB_REMOTE)
		forget(f, e);
	e->vni = vni;
	memcpy(e->mac, mac, 6);
	e->kind = kind;
	e->idx = idx;
}

int prism_fdb_add_local(struct prism_fdb *f, uint32_t vni, const uint8_t *mac, uint16_t port)
{
	struct prism_fdb_entry *spare, *e = probe(f, vni, mac, 0, &spare);

	if (e && e->kind == FDB_LOCAL)
		return -EEXIST;
	if (e && e->kind == FDB_REMOTE) /* learned before the container was added: it is ours now */
		forget(f, e);
	if (e)
		spare = e;
	if (!spare)
		return -ENOSPC;
	take(f, spare, vni, mac, FDB_LOCAL, port);
	return 0;
}

void prism_fdb_learn(struct prism_fdb *f, uint32_t vni, const uint8_t *mac, uint16_t vtep,
		     uint64_t now)
{
	struct prism_fdb_entry *spare, *e = probe(f, vni, mac, now, &spare);
	uint32_t v = vtep % PRISM_FDB_VTEPS;

	if (e && e->kind == FDB_LOCAL)
		return; /* a container's entry is static: no hijacking through learning */
	if (e && e->kind == FDB_REMOTE && !expired(f, e, now)) {
		if (e->idx != vtep) { /* moved */
			f->by_vtep[e->idx % PRISM_FDB_VTEPS]--;
			f->by_vtep[v]++;
			e->idx = vtep;
			f->changes++;
		}
		e->seen = now;
		return;
	}
	if (e) /* its own old slot, dead or aged out */
		spare = e;
	if (f->by_vtep[v] >= f->max_per_vtep || f->entries >= PRISM_FDB_SIZE / 2)
		sweep(f, now);
	if (!spare || f->by_vtep[v] >= f->max_per_vtep || f->entries >= PRISM_FDB_SIZE / 2) {
		f->refused++;
		return;
	}
	take(f, spare, vni, mac, FDB_REMOTE, vtep);
	spare->seen = now;
	f->by_vtep[v]++;
	f->entries++;
	f->changes++;
}

int prism_fdb_lookup(const struct prism_fdb *f, uint32_t vni, const uint8_t *mac, uint64_t now,
		     uint32_t *idx)
{
	uint32_t h = fdb_hash(vni, mac), i;

	for (i = 0; i < PRISM_FDB_PROBE; i++) {
		const struct prism_fdb_entry *e = &f->slot[(h + i) & (PRISM_FDB_SIZE - 1)];

		if (e->kind == FDB_EMPTY)
			return FDB_EMPTY;
		if (!same_key(e, vni, mac))
			continue;
		if (e->kind == FDB_DEAD || expired(f, e, now))
			return FDB_EMPTY;
		*idx = e->idx;
		return e->kind;
	}
	return FDB_EMPTY;
}
