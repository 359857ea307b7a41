/* prism_overlay.c - the overlay's setup: the uplink and container ports with their sockets, remote VTEPs, the forwarding table's static entries, and counters. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "prism_overlay.h"

/*
 * The stages live in prism_vxlan.c (decap, encap) and prism_deliver.c
 * (TX on each port, ring service); every one of them takes a whole batch.
 *
 * Forwarding follows the kernel's VXLAN device and bridge: containers are
 * static entries (VNI, MAC) -> port; remote MACs are learned from the inner
 * source of decapsulated frames, (VNI, MAC) -> the VTEP that sent them;
 * broadcast, multicast and unknown unicast are flooded — to the local
 * ports of the VNI when they came from the uplink (split horizon), and to
 * the other local ports and every VTEP of the VNI when a container sent them.
 * With MLD snooping (prism_mcast.c), an IPv6 group's frames go to the
 * containers that joined it only.
 */

int prism_overlay_lookup(struct prism_overlay *o, uint32_t vni, const uint8_t *mac, uint32_t *idx)
{
	return overlay_lookup(o, vni, mac, idx);
}

/* ---- setup ------------------------------------------------------------ */

int prism_overlay_new(struct prism_overlay **out, struct prism_umem *u,
		      const struct prism_overlay_config *cfg)
{
	struct prism_overlay *o;

	if (!cfg->vxlan_port || cfg->uplink_mtu < 68 || !cfg->ttl ||
	    (cfg->checksum != PRISM_CSUM_OFFLOAD && cfg->checksum != PRISM_CSUM_SOFTWARE))
		return -EINVAL;
	/* Offload needs a kernel that reads TX metadata (a UMEM without the
	 * kernel, in unit tests, only records the requests).
	 */
	if (cfg->checksum == PRISM_CSUM_OFFLOAD && u->registered && !u->txmd_len)
		return -EOPNOTSUPP;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->u = u;
	o->cfg = *cfg;
	prism_fdb_init(&o->fdb, cfg->fdb_ageing_s, cfg->fdb_max_per_vtep);
	*out = o;
	return 0;
}

void prism_overlay_delete(struct prism_overlay *o)
{
	uint32_t p;

	if (!o)
		return;
	/* Frames still held go with the UMEM: the worker sends them on its way
	 * out (prism_overlay_flush_tx), this is for an overlay that never ran.
	 */
	for (p = 0; p < PRISM_MAX_PORTS; p++)
		prism_batch_delete(o->ports[p].held);
	free(o->order);
	prism_gro_free(o->gro);
	free(o);
}

static int set_sockets(struct port *p, struct prism_xsk **by_class, uint32_t nclass)
{
	uint32_t c;

	memset(p->xsk, 0, sizeof(p->xsk));
	if (!nclass)
		return 0; /* no sockets: the stages still work (unit tests) */
	if (nclass > PRISM_NCLASS || !by_class[0])
		return -EINVAL;
	for (c = 0; c < nclass; c++)
		p->xsk[c] = by_class[c];
	for (c = 0; c < PRISM_NCLASS; c++)
		if (!p->xsk[c])
			p->xsk[c] = p->xsk[0];
	return 0;
}

int prism_overlay_set_uplink(struct prism_overlay *o, struct prism_xsk **by_class, uint32_t nclass)
{
	int err = set_sockets(&o->ports[PRISM_UPLINK_PORT], by_class, nclass);

	if (err)
		return err;
	if (!o->nports)
		o->nports = 1;
	return PRISM_UPLINK_PORT;
}

int prism_overlay_add_container(struct prism_overlay *o, struct prism_xsk **by_class,
				uint32_t nclass, uint32_t vni, const uint8_t *mac)
{
	uint32_t idx, i;
	struct port *p;
	int err;

	if (!o->nports)
		return -EINVAL; /* the uplink comes first: it is port 0 */
	if (o->nports >= PRISM_MAX_PORTS)
		return -ENOSPC;
	if (vni >= 1u << 24 || (mac[0] & 1))
		return -EINVAL;
	if (overlay_lookup(o, vni, mac, &idx) == FDB_LOCAL)
		return -EEXIST;
	p = &o->ports[o->nports];
	err = set_sockets(p, by_class, nclass);
	if (err)
		return err;
	err = prism_fdb_add_local(&o->fdb, vni, mac, o->nports);
	if (err)
		return err;
	p->vni = vni;
	memcpy(p->mac, mac, ETH_ALEN);
	for (i = 0; i < o->nvnis && o->vnis[i] != vni; i++)
		;
	if (i == o->nvnis)
		o->vnis[o->nvnis++] = vni;
	return o->nports++;
}

int prism_overlay_add_vtep(struct prism_overlay *o, uint32_t vni, uint32_t ip, const uint8_t *mac)
{
	uint32_t i;

	if (vni >= 1u << 24)
		return -EINVAL;
	for (i = 0; i < o->nvteps; i++)
		if (o->vteps[i].vni == vni && o->vteps[i].ip == ip)
			return -EEXIST;
	if (o->nvteps >= PRISM_MAX_VTEPS)
		return -ENOSPC;
	o->vteps[o->nvteps].vni = vni;
	o->vteps[o->nvteps].ip = ip;
	memcpy(o->vteps[o->nvteps].mac, mac, ETH_ALEN);
	return o->nvteps++;
}

int prism_overlay_set_port_packet(struct prism_overlay *o, uint32_t port, int fd, uint32_t gro_segs)
{
	struct port *pt;

	if (port >= o->nports || gro_segs > PRISM_GRO_MAX_SEGS)
		return -EINVAL;
	pt = &o->ports[port];
	pt->has_pkt = fd >= 0;
	pt->pkt_fd = fd;
	pt->gro_segs = gro_segs ? gro_segs : 1;
	return 0;
}

int prism_overlay_set_mcast(struct prism_overlay *o, struct prism_mcast *m)
{
	o->mc = m;
	return 0;
}

void prism_overlay_counters(struct prism_overlay *o, struct prism_overlay_counters *out)
{
	*out = o->cnt;
	out->learned = o->fdb.changes;
	out->fdb_entries = o->fdb.entries;
	out->fdb_refused = o->fdb.refused;
	out->fdb_expired = o->fdb.expired;
}

int prism_overlay_port_counters(struct prism_overlay *o, uint32_t port,
				struct prism_port_counters *out)
{
	if (port >= o->nports)
		return -ENOENT;
	*out = o->ports[port].cnt;
	return 0;
}
