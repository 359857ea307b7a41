/* prism_mcast.c - MLD snooping: reads containers' MLD reports, keeps which port joined which IPv6 multicast group (bounded, ageing), and says which ports a group's frame goes to. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include <linux/if_ether.h>
#include <linux/in6.h>

#include "prism_mcast.h"

/*
 * Every container with IPv6 sends link-local multicast: neighbour
 * solicitations to solicited-node groups, router solicitations to
 * all-routers, MLD reports. A VNI that floods them, as a bridge without
 * snooping does, makes N x (N-1) copies for N containers. Like the kernel
 * bridge with multicast snooping (RFC 4541), memberships are learned from
 * the containers' MLD reports, keyed by the group's MAC (33:33 and the
 * group's low 32 bits: groups that share a MAC share their members, which
 * only ever adds a copy). Reports go to the VTEPs only, never to another
 * container (an MLDv1 host that hears another's report stays silent, and
 * its membership would be missed). All-nodes and queries reach everyone.
 * The daemon is the querier: it queries at start, and pruning starts only
 * once the containers had time to answer (prism_mcast_set_ready), so a
 * group joined before the daemon started is not withheld.
 */

#define ICMPV6_MLD_QUERY 130
#define ICMPV6_MLD_REPORT 131
#define ICMPV6_MLD_DONE 132
#define ICMPV6_MLD2_REPORT 143
#define MLD2_MODE_IS_INCLUDE 1
#define MLD2_CHANGE_TO_INCLUDE 3
#define MLD2_ALLOW_NEW_SOURCES 5
#define SWEEP_NS 1000000000ull /* expired memberships are freed at least this often */

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t mc_hash(uint32_t vni, const uint8_t *mac)
{
	uint32_t k = (uint32_t)mac[2] << 24 | (uint32_t)mac[3] << 16 | (uint32_t)mac[4] << 8 |
		     mac[5];

	k ^= vni * 0x9E3779B1u;
	k *= 0x85ebca6bu;
	return (k ^ k >> 16) & (PRISM_MCAST_BUCKETS - 1);
}

/* The ICMPv6 message of an Ethernet / IPv6 (/ hop-by-hop) frame: its offset,
 * its length in *mlen; 0 if there is none.
 */
static uint32_t icmp6_at(const uint8_t *f, uint32_t len, uint32_t *mlen)
{
	uint32_t off = ETH_HLEN + 40, end;
	uint8_t nh;

	if (len < off || rd16(f + 12) != ETH_P_IPV6 || (f[ETH_HLEN] >> 4) != 6)
		return 0;
	end = off + rd16(f + ETH_HLEN + 4);
	if (end > len)
		return 0;
	nh = f[ETH_HLEN + 6];
	if (nh == IPPROTO_HOPOPTS) { /* MLD carries a router alert there */
		if (off + 8 > end)
			return 0;
		nh = f[off];
		off += (f[off + 1] + 1u) * 8;
	}
	if (nh != IPPROTO_ICMPV6 || off + 4 > end)
		return 0;
	*mlen = end - off;
	return off;
}

int prism_mcast_classify(const uint8_t *f, uint32_t len)
{
	static const uint8_t all_nodes[6] = { 0x33, 0x33, 0, 0, 0, 1 };
	uint32_t off, mlen;

	if (len < ETH_HLEN || f[0] != 0x33 || f[1] != 0x33 || !memcmp(f, all_nodes, 6))
		return PRISM_MC_ALL;
	off = icmp6_at(f, len, &mlen);
	if (!off)
		return PRISM_MC_DATA;
	switch (f[off]) {
	case ICMPV6_MLD_QUERY:
		return PRISM_MC_ALL;
	case ICMPV6_MLD_REPORT:
	case ICMPV6_MLD_DONE:
	case ICMPV6_MLD2_REPORT:
		return PRISM_MC_REPORT;
	}
	return PRISM_MC_DATA;
}

/* ---- the table -------------------------------------------------------- */

/* Shared memory, made before the daemon forks its workers (one process per
 * queue), with a process-shared lock: every worker learns into and reads
 * the same table. The lock is robust: a worker killed while holding it
 * leaves it to the next taker, and the table (updated a field at a time)
 * stays usable.
 */
int prism_mcast_new(struct prism_mcast **out, uint32_t member_s, uint32_t per_port)
{
	pthread_mutexattr_t attr;
	struct prism_mcast *m;
	uint32_t i;
	int err;

	if (!member_s || !per_port || per_port > PRISM_MCAST_ENTRIES)
		return -EINVAL;
	m = mmap(NULL, sizeof(*m), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -errno;
	err = pthread_mutexattr_init(&attr);
	if (!err)
		err = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	if (!err)
		err = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	if (!err)
		err = pthread_mutex_init(&m->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	if (err) {
		munmap(m, sizeof(*m));
		return -err;
	}
	m->member_ns = (uint64_t)member_s * 1000000000ull;
	m->per_port = per_port;
	for (i = 0; i < PRISM_MCAST_ENTRIES; i++)
		m->e[i].next = i + 2 <= PRISM_MCAST_ENTRIES ? i + 2 : 0;
	m->free = 1;
	*out = m;
	return 0;
}

/* Unmaps this process's view (a worker's copy goes with the worker). */
void prism_mcast_delete(struct prism_mcast *m)
{
	if (m)
		munmap(m, sizeof(*m));
}

void prism_mcast_set_ready(struct prism_mcast *m, uint64_t at_ns)
{
	mcast_lock(m);
	m->ready_at = at_ns;
	mcast_unlock(m);
}

void prism_mcast_counters(struct prism_mcast *m, struct prism_mcast_counters *out)
{
	mcast_lock(m);
	*out = m->cnt;
	mcast_unlock(m);
}

/* Unlink the entry that *link points to and free it. */
static void release(struct prism_mcast *m, uint32_t *link)
{
	struct prism_mcast_entry *e = &m->e[*link - 1];
	uint32_t idx = *link;

	*link = e->next;
	m->held[e->port]--;
	m->cnt.groups--;
	e->expires = 0;
	e->next = m->free;
	m->free = idx;
}

static void sweep(struct prism_mcast *m, uint64_t now)
{
	uint32_t b, *link;

	if (now - m->last_sweep < SWEEP_NS)
		return;
	m->last_sweep = now;
	for (b = 0; b < PRISM_MCAST_BUCKETS; b++) {
		link = &m->bucket[b];
		while (*link) {
			if (m->e[*link - 1].expires <= now) {
				release(m, link);
				m->cnt.expired++;
			} else {
				link = &m->e[*link - 1].next;
			}
		}
	}
}

static uint32_t *find(struct prism_mcast *m, uint32_t vni, const uint8_t *mac, uint32_t port)
{
	uint32_t *link = &m->bucket[mc_hash(vni, mac)];

	for (; *link; link = &m->e[*link - 1].next) {
		struct prism_mcast_entry *e = &m->e[*link - 1];

		if (e->port == port && e->vni == vni && !memcmp(e->mac, mac, 6))
			return link;
	}
	return NULL;
}

static void join(struct prism_mcast *m, uint32_t vni, const uint8_t *mac, uint32_t port,
		 uint64_t now)
{
	uint32_t *link = find(m, vni, mac, port), idx, b;
	struct prism_mcast_entry *e;

	if (link) {
		m->e[*link - 1].expires = now + m->member_ns;
		return;
	}
	if (m->held[port] >= m->per_port || !m->free) {
		m->cnt.refused++;
		m->all_until[port] = now + m->member_ns;
		if (m->all_until[port] > m->all_until_max)
			m->all_until_max = m->all_until[port];
		return;
	}
	idx = m->free;
	e = &m->e[idx - 1];
	m->free = e->next;
	b = mc_hash(vni, mac);
	e->expires = now + m->member_ns;
	e->vni = vni;
	e->port = (uint16_t)port;
	memcpy(e->mac, mac, 6);
	e->next = m->bucket[b];
	m->bucket[b] = idx;
	m->held[port]++;
	m->cnt.groups++;
	m->cnt.joins++;
}

/* Fast leave, without a last-listener query: a port is one container, so
 * its done is the only listener's on that port (the bridge's
 * multicast_fast_leave, for ports with one host behind them).
 */
static void leave(struct prism_mcast *m, uint32_t vni, const uint8_t *mac, uint32_t port)
{
	uint32_t *link = find(m, vni, mac, port);

	if (link) {
		release(m, link);
		m->cnt.leaves++;
	}
}

static void group_mac(const uint8_t *group, uint8_t *mac)
{
	mac[0] = mac[1] = 0x33;
	memcpy(mac + 2, group + 12, 4);
}

/* The length of the MLDv2 record at off, or 0 if it does not fit in mlen. */
static uint32_t record_len(const uint8_t *msg, uint32_t mlen, uint32_t off)
{
	uint32_t rlen;

	if (off + 20 > mlen)
		return 0;
	rlen = 20 + 16u * rd16(msg + off + 2) + 4u * msg[off + 1];
	return off + rlen <= mlen && msg[off + 4] == 0xff ? rlen : 0;
}

/* MLDv2 records: any-source membership, as the bridge keeps it without
 * source lists. EXCLUDE (any sources) or INCLUDE with sources is a join;
 * INCLUDE {} or TO_IN {} is a leave; BLOCK changes nothing. A report with
 * one unreadable record changes nothing at all.
 */
static int learn_v2(struct prism_mcast *m, uint32_t vni, uint32_t port, const uint8_t *msg,
		    uint32_t mlen, uint64_t now)
{
	uint32_t nrec, i, off, rlen;
	uint8_t mac[6];

	if (mlen < 8)
		return -EINVAL;
	nrec = rd16(msg + 6);
	for (i = 0, off = 8; i < nrec; i++, off += rlen)
		if (!(rlen = record_len(msg, mlen, off)))
			return -EINVAL;
	for (i = 0, off = 8; i < nrec; i++, off += record_len(msg, mlen, off)) {
		uint8_t type = msg[off];
		uint16_t nsrc = rd16(msg + off + 2);

		group_mac(msg + off + 4, mac);
		if ((type == MLD2_MODE_IS_INCLUDE || type == MLD2_CHANGE_TO_INCLUDE) && !nsrc)
			leave(m, vni, mac, port);
		else if (type >= MLD2_MODE_IS_INCLUDE && type <= MLD2_ALLOW_NEW_SOURCES)
			join(m, vni, mac, port, now);
	}
	return (int)nrec;
}

int prism_mcast_learn_locked(struct prism_mcast *m, uint32_t vni, uint32_t port, const uint8_t *f,
			     uint32_t len, uint64_t now)
{
	uint32_t off, mlen;
	const uint8_t *msg;
	uint8_t mac[6];
	int rc;

	if (port >= PRISM_MAX_PORTS)
		return -EINVAL;
	sweep(m, now);
	off = icmp6_at(f, len, &mlen);
	if (!off) {
		m->cnt.malformed++;
		return -EINVAL;
	}
	msg = f + off;
	switch (msg[0]) {
	case ICMPV6_MLD_REPORT:
	case ICMPV6_MLD_DONE:
		if (mlen < 24 || msg[8] != 0xff) {
			rc = -EINVAL;
			break;
		}
		group_mac(msg + 8, mac);
		if (msg[0] == ICMPV6_MLD_REPORT)
			join(m, vni, mac, port, now);
		else
			leave(m, vni, mac, port);
		rc = 1;
		break;
	case ICMPV6_MLD2_REPORT:
		rc = learn_v2(m, vni, port, msg, mlen, now);
		break;
	default:
		return -EINVAL;
	}
	if (rc < 0)
		m->cnt.malformed++;
	else
		m->cnt.reports++;
	return rc;
}

int prism_mcast_learn(struct prism_mcast *m, uint32_t vni, uint32_t port, const uint8_t *f,
		      uint32_t len, uint64_t now)
{
	int rc;

	mcast_lock(m);
	rc = prism_mcast_learn_locked(m, vni, port, f, len, now);
	mcast_unlock(m);
	return rc;
}

void prism_mcast_select(struct prism_mcast *m, uint32_t vni, const uint8_t *mac, uint64_t now,
			uint64_t *sel)
{
	uint32_t *link, p;

	sweep(m, now);
	for (link = &m->bucket[mc_hash(vni, mac)]; *link; link = &m->e[*link - 1].next) {
		const struct prism_mcast_entry *e = &m->e[*link - 1];

		if (e->expires > now && e->vni == vni && !memcmp(e->mac, mac, 6))
			sel[e->port / 64] |= 1ull << (e->port % 64);
	}
	if (m->all_until_max > now)
		for (p = 0; p < PRISM_MAX_PORTS; p++)
			if (m->all_until[p] > now)
				sel[p / 64] |= 1ull << (p % 64);
}

int prism_mcast_members(struct prism_mcast *m, uint32_t vni, const uint8_t *mac, uint64_t now,
			uint32_t *ports, uint32_t cap)
{
	uint64_t sel[PRISM_MCAST_WORDS] = { 0 };
	uint32_t p, n = 0;

	mcast_lock(m);
	prism_mcast_select(m, vni, mac, now, sel);
	mcast_unlock(m);
	for (p = 0; p < PRISM_MAX_PORTS; p++)
		if (sel[p / 64] >> (p % 64) & 1) {
			if (n < cap)
				ports[n] = p;
			n++;
		}
	return (int)n;
}
