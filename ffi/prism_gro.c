/* prism_gro.c - delivery through a packet socket: a port's TCP segments coalesced into GSO packets (as the kernel's GRO does) and sent with a virtio-net header, a whole port's share of a batch per sendmmsg(); to a container, or to the uplink for prism_gso_encap to encapsulate. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <endian.h>
#include <linux/in.h>
#include <linux/virtio_net.h>

#include "prism_overlay.h"

/*
 * Why. AF_XDP TX hands the kernel one skb per frame, never a GSO skb, and a
 * veth drops a frame longer than its peer's MTU unless it is GSO. So
 * through AF_XDP a container's TCP stack receives (and ACKs) every
 * MTU-sized segment on its own: most of the worker's CPU under bulk TCP
 * went there. The kernel path instead receives 64 KB aggregates (GRO).
 *
 * A packet socket with PACKET_VNET_HDR takes a virtio-net header with each
 * message, as a tap device does for a VM: a GSO type and size, and where
 * the checksum is to be finished (CHECKSUM_PARTIAL). So here, within the
 * frames one deliver call has for a port (in arrival order), consecutive
 * TCP segments of a flow are merged the way tcp_gro_receive() merges them,
 * sent as one GSO packet that the container's stack takes in one piece,
 * and everything else is sent as it is. When nothing merged, the frames
 * go on the port's AF_XDP ring as before: single frames cost less there. No byte is copied here: a merged
 * packet is an iovec of the first frame and the later frames' payloads;
 * the kernel copies it once into the skb, as AF_XDP's copy mode does.
 *
 * A segment merges only when nothing a receiver reads could differ from
 * the segments it replaces:
 *   - IPv4 without options, DF set, not a fragment; TCP with the same
 *     Ethernet header, addresses, ports, TOS, TTL, header length, option
 *     bytes, ACK number, window and flags (only ACK, plus PSH on the last);
 *   - its sequence number follows the group's last byte, and its payload
 *     is the group's first segment's size (a shorter one ends the group);
 *   - its checksum is known good: partial (the decap stage asked for it to
 *     be finished) or verified here in full. A segment with a wrong
 *     checksum goes alone and untouched, so the container drops it.
 * A segment that cannot merge ends its flow's open group first, so the
 * packets of one flow never change order.
 *
 * The uplink's frames come encapsulated (the encap stage wrote the outer
 * headers into their headroom). Segments merge there by their inner
 * headers, and only toward the same VTEP with the same outer source port.
 * A merged packet is sent without its outer headers, marked with the VTEP's
 * index and that port (PRISM_GSO_MARK in an SO_MARK cmsg): the uplink's
 * tcx egress program (prism_gso_encap) writes them back as a UDP tunnel's,
 * so the kernel or the NIC segments it into the frames the AF_XDP path
 * would have sent. A frame that merged with nothing leaves as it is,
 * encapsulated and unmarked. Why: remote-bound TCP otherwise crosses the
 * uplink, and the remote's stack, one MTU-sized frame at a time.
 */

#define GRO_FLOWS 8 /* open groups per port and call, as the kernel's GRO buckets */
#define GRO_MAX_IP_LEN 65535

struct gro_msg {
	uint32_t nseg; /* frames in the message (a chained packet is one) */
	uint32_t niov; /* payload iovecs: a frame's piece, or each part of a chained packet */
	uint32_t bytes; /* their frame bytes, as delivered frame by frame */
	uint32_t iov; /* first iovec: the virtio-net header */
	uint32_t cursor; /* next iovec to fill while laying out */
	uint32_t mark; /* uplink: PRISM_GSO_MARK... for a merged packet, else 0 */
	int err; /* after sending: 0, or the errno that refused it */
};

/* An SO_MARK control message, one per message. */
union gro_ctl {
	struct cmsghdr c;
	char buf[CMSG_SPACE(sizeof(uint32_t))];
};

struct gro_flow {
	uint32_t msg; /* the group's message */
	uint32_t next_seq;
	uint32_t mss; /* the first segment's payload */
	uint32_t payload; /* the group's payload bytes */
	uint32_t l3, l4, thl; /* the first frame's headers */
	uint8_t *head; /* the first frame (its inner frame, on the uplink) */
	int open;
};

struct prism_gro {
	uint32_t cap; /* frames the arrays hold */
	struct mmsghdr *mm;
	struct iovec *iov; /* 2 * cap: a header per message and a piece per frame */
	struct virtio_net_hdr *vh;
	struct gro_msg *msg;
	union gro_ctl *ctl;
	uint32_t *msgid, *off, *plen; /* per frame: its message and the bytes it adds */
	uint32_t inner; /* this call's frames: where the inner frame starts (the uplink's: PRISM_ENCAP_LEN) */
	struct gro_flow flows[GRO_FLOWS];
	uint32_t next_evict;
	uint32_t aggregates; /* chained packets in the call: they never go on a ring */
	uint32_t parts; /* their parts beyond the first: iovecs on top of one per frame */
	uint32_t iov_cap;
};

/* What one frame is to the coalescer. */
struct seg {
	uint32_t l3, l4, thl, payload, seq;
	int psh;
};

#define TCP_PSH 0x08
#define TCP_ACK 0x10

/* In the outer headers the encap stage writes (Ethernet, IPv4 without
 * options, UDP, VXLAN): destination address then UDP source port, and the VNI.
 */
#define OUTER_DADDR 30
#define OUTER_SPORT 34
#define OUTER_VNI 46

/* The mark a merged packet to the uplink goes with: its VTEP's index and
 * outer source port; 0 when no VTEP has its outer headers (it then stays
 * a single frame).
 */
static uint32_t gso_mark(const struct prism_overlay *o, const uint8_t *outer)
{
	uint32_t ip, vni = (uint32_t)outer[OUTER_VNI] << 16 | outer[OUTER_VNI + 1] << 8 |
			   outer[OUTER_VNI + 2];
	int v;

	memcpy(&ip, outer + OUTER_DADDR, 4);
	v = vtep_of(o, vni, ip);
	if (v < 0)
		return 0;
	return PRISM_GSO_MARK | (uint32_t)rd16(outer + OUTER_SPORT) << 8 | (uint32_t)v;
}

/* 0: not TCP over IPv4 behind a plain Ethernet header; 1: TCP that must
 * not merge (s locates its headers, so that it ends its flow's group);
 * 2: a segment that may merge.
 */
static int seg_parse(const uint8_t *f, uint32_t len, uint32_t csum, struct seg *s)
{
	struct prism_l4 l;
	uint8_t flags;

	if (!prism_l4_locate(f, len, &l) || l.proto != IPPROTO_TCP || l.l3 != ETH_HLEN)
		return 0;
	s->l3 = l.l3;
	s->l4 = l.start;
	s->thl = (f[l.start + 12] >> 4) * 4u;
	s->seq = rd32(f + l.start + 4);
	flags = f[l.start + 13];
	s->psh = !!(flags & TCP_PSH);
	if (s->thl < 20 || s->thl > l.l4len)
		return 1;
	s->payload = l.l4len - s->thl;
	if (l.start - l.l3 != 20 || rd16(f + l.l3 + 6) != 0x4000 || !s->payload)
		return 1; /* IP options, no DF (IDs would have to follow), or no data */
	if ((flags & ~TCP_PSH) != TCP_ACK) /* FIN, SYN, RST, URG, ECE, CWR: as GRO, alone */
		return 1;
	if (!csum && prism_l4_valid(f, len) != 1)
		return 1; /* not partial and not right: the container must see it fail */
	return 2;
}

static struct gro_flow *flow_of(struct prism_gro *g, const uint8_t *f, const struct seg *s)
{
	uint32_t i;

	for (i = 0; i < GRO_FLOWS; i++) {
		struct gro_flow *fl = &g->flows[i];

		if (fl->open && fl->l4 == s->l4 &&
		    !memcmp(fl->head + fl->l3 + 12, f + s->l3 + 12, 8) && /* addresses */
		    !memcmp(fl->head + fl->l4, f + s->l4, 4)) /* ports */
			return fl;
	}
	return NULL;
}

static int can_join(const struct prism_gro *g, const struct gro_flow *fl, const uint8_t *f,
		    const struct seg *s, uint32_t max_segs)
{
	const uint8_t *h = fl->head;

	/* On the uplink, the same tunnel too: outer destination and source port, VNI. */
	if (g->inner && (memcmp(h - g->inner + OUTER_DADDR, f - g->inner + OUTER_DADDR, 6) ||
			 memcmp(h - g->inner + OUTER_VNI, f - g->inner + OUTER_VNI, 3)))
		return 0;
	return s->seq == fl->next_seq && s->payload <= fl->mss && s->thl == fl->thl &&
	       g->msg[fl->msg].nseg < max_segs &&
	       /* the outer IPv4 length, on the uplink, must fit 16 bits too */
	       fl->l4 - fl->l3 + fl->thl + fl->payload + s->payload <= GRO_MAX_IP_LEN - g->inner &&
	       !memcmp(h, f, ETH_HLEN) && h[fl->l3 + 1] == f[s->l3 + 1] && /* TOS */
	       h[fl->l3 + 8] == f[s->l3 + 8] && /* TTL */
	       !memcmp(h + fl->l4 + 8, f + s->l4 + 8, 4) && /* ACK number */
	       /* flags: both ACK, maybe PSH on s (seg_parse let no other through) */
	       !memcmp(h + fl->l4 + 14, f + s->l4 + 14, 2) && /* window */
	       !memcmp(h + fl->l4 + 20, f + s->l4 + 20, fl->thl - 20); /* options, timestamps too */
}

/* A merged group's IPv4 and TCP headers and its virtio-net header, once
 * its last segment is in. A group of one stays as its frame came.
 */
static void flow_close(struct prism_gro *g, struct gro_flow *fl, int psh)
{
	struct virtio_net_hdr *vh = &g->vh[fl->msg];
	uint8_t *h = fl->head;
	struct prism_l4 l;
	fl->open = 0;
	if (g->msg[fl->msg].nseg < 2) {
		g->msg[fl->msg].mark = 0;
		return;
	}
	wr16(h + fl->l3 + 2, (uint16_t)(fl->l4 - fl->l3 + fl->thl + fl->payload));
	ipv4_write_csum(h + fl->l3);
	if (psh)
		h[fl->l4 + 13] |= TCP_PSH;
	/* The receiver's kernel takes the packet as CHECKSUM_PARTIAL; whatever
	 * ever finishes the sum (a NIC, were it forwarded) starts from the seed.
	 */
	l.l3 = fl->l3;
	l.start = fl->l4;
	l.offset = 16;
	l.l4len = fl->thl + fl->payload;
	l.proto = IPPROTO_TCP;
	prism_l4_write_seed(h, &l);
	memset(vh, 0, sizeof(*vh));
	vh->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	vh->gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
	vh->gso_size = htole16((uint16_t)fl->mss);
	vh->hdr_len = htole16((uint16_t)(fl->l4 + fl->thl));
	vh->csum_start = htole16((uint16_t)fl->l4);
	vh->csum_offset = htole16(16);
}

static void flow_open(struct prism_gro *g, uint32_t msg, uint8_t *f, const struct seg *s)
{
	struct gro_flow *fl = NULL;
	uint32_t i;

	for (i = 0; i < GRO_FLOWS && !fl; i++)
		if (!g->flows[i].open)
			fl = &g->flows[i];
	if (!fl) { /* every slot taken: the oldest group ends, as GRO evicts */
		fl = &g->flows[g->next_evict++ % GRO_FLOWS];
		flow_close(g, fl, 0);
	}
	fl->msg = msg;
	fl->next_seq = s->seq + s->payload;
	fl->mss = s->payload;
	fl->payload = s->payload;
	fl->l3 = s->l3;
	fl->l4 = s->l4;
	fl->thl = s->thl;
	fl->head = f;
	fl->open = 1;
}

/* A header and a piece per frame, and a chained packet's later parts. */
static int grow_iov(struct prism_gro *g, uint32_t n)
{
	void *p;

	if (g->iov_cap >= n)
		return 0;
	p = realloc(g->iov, n * sizeof(*g->iov));
	if (!p)
		return -ENOMEM;
	g->iov = p;
	g->iov_cap = n;
	return 0;
}

static int grow(struct prism_gro *g, uint32_t n)
{
	void *p;

	if (g->cap >= n)
		return 0;
#define GROW(field, count)                                          \
	do {                                                        \
		p = realloc(g->field, (count) * sizeof(*g->field)); \
		if (!p)                                             \
			return -ENOMEM;                             \
		g->field = p;                                       \
	} while (0)
	GROW(mm, n);
	GROW(vh, n);
	GROW(msg, n);
	GROW(ctl, n);
	GROW(msgid, n);
	GROW(off, n);
	GROW(plen, n);
#undef GROW
	g->cap = n;
	return 0;
}

void prism_gro_free(struct prism_gro *g)
{
	if (!g)
		return;
	free(g->mm);
	free(g->iov);
	free(g->vh);
	free(g->msg);
	free(g->ctl);
	free(g->msgid);
	free(g->off);
	free(g->plen);
	free(g);
}

/* A GSO aggregate (decap settled its checksum and made it TCP over IPv4,
 * PRISM_CSUM_AGG): a GSO message of its own, an iovec per part when its
 * frames are chained. Its sender's segment size did not come through XDP,
 * so gso_size is what the overlay's MTU leaves a segment with these
 * headers, the size the sender's MSS has on this path; a receiver reads it
 * only to estimate that MSS.
 */
static void plan_aggregate(struct prism_overlay *o, struct prism_gro *g, uint64_t b_addr,
			   uint32_t len, uint32_t csum, uint32_t k)
{
	struct virtio_net_hdr *vh = &g->vh[k];
	const uint8_t *f = o->u->area + b_addr;
	uint32_t l4 = csum >> 16, thl = (f[l4 + 12] >> 4) * 4u;
	uint32_t ip_mtu = o->cfg.uplink_mtu - PRISM_ENCAP_LEN; /* the inner IPv4 packet's */
	uint32_t mss = 536; /* IPv4's minimum, should the MTU leave less */
	uint64_t part = b_addr;

	if (ip_mtu > l4 - ETH_HLEN + thl + mss)
		mss = ip_mtu - (l4 - ETH_HLEN) - thl;
	g->msg[k].nseg = 1;
	g->msg[k].niov = 0;
	g->msg[k].mark = 0;
	for (; part; part = o->u->next[frame_of(o->u, part)])
		g->msg[k].niov++;
	g->parts += g->msg[k].niov - 1;
	g->msg[k].bytes = len;
	memset(vh, 0, sizeof(*vh));
	vh->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	vh->gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
	vh->gso_size = htole16((uint16_t)mss);
	vh->hdr_len = htole16((uint16_t)(l4 + thl));
	vh->csum_start = htole16((uint16_t)l4);
	vh->csum_offset = htole16((uint16_t)PRISM_CSUM_OFFSET(csum));
	g->aggregates++;
}

int prism_gro_holdable(const struct prism_overlay *o, const struct port *pt,
		       const struct prism_batch *b, const uint32_t *idx, uint32_t n)
{
	uint32_t inner = pt == &o->ports[PRISM_UPLINK_PORT] ? PRISM_ENCAP_LEN : 0, i;
	int psh = 0;

	for (i = 0; i < n; i++) {
		uint32_t j = idx[i], len = b->len[j];
		struct seg s = { 0 };

		/* Any csum: the sum is verified by plan() when the segment goes. */
		if (b->csum[j] & PRISM_CSUM_AGG || len <= inner ||
		    seg_parse(o->u->area + b->addr[j] + inner, len - inner, 1, &s) != 2)
			return 0;
		psh |= s.psh;
	}
	return psh ? 2 : 1;
}

/* Pass 1: which message each frame goes in (frames b[idx[0..n)]). A new
 * message starts with a frame that does not extend its flow's open group;
 * a message's later frames add their TCP payload only. Returns messages.
 * On the uplink (g->inner), segments are parsed and merged by their inner
 * frames; a message that stays a single frame is sent whole (layout).
 */
static uint32_t plan(struct prism_overlay *o, struct prism_gro *g, const struct prism_batch *b,
		     const uint32_t *idx, uint32_t n, uint32_t max_segs)
{
	uint32_t i, nmsg = 0;

	for (i = 0; i < GRO_FLOWS; i++)
		g->flows[i].open = 0;
	g->aggregates = 0;
	g->parts = 0;
	for (i = 0; i < n; i++) {
		uint32_t j = idx[i], len = b->len[j], csum = b->csum[j];
		uint8_t *f = o->u->area + b->addr[j] + g->inner;
		struct gro_flow *fl = NULL;
		struct virtio_net_hdr *vh;
		struct seg s = { 0 };
		int agg = !!(csum & PRISM_CSUM_AGG);
		int kind = (max_segs > 1 || agg) && len > g->inner ?
				   seg_parse(f, len - g->inner, csum, &s) :
				   0;

		if (kind)
			fl = flow_of(g, f, &s);
		if (agg) {
			if (fl) /* its flow's group goes first: the flow keeps its order */
				flow_close(g, fl, 0);
			g->msgid[i] = nmsg;
			g->off[i] = 0;
			g->plen[i] = len;
			plan_aggregate(o, g, b->addr[j], len, csum, nmsg++);
			continue;
		}
		if (fl && kind == 2 && can_join(g, fl, f, &s, max_segs)) {
			struct gro_msg *m = &g->msg[fl->msg];

			g->msgid[i] = fl->msg;
			g->off[i] = g->inner + s.l4 + s.thl;
			g->plen[i] = s.payload;
			m->nseg++;
			m->niov++;
			m->bytes += len;
			fl->payload += s.payload;
			fl->next_seq += s.payload;
			if (s.payload < fl->mss || s.psh || m->nseg >= max_segs)
				flow_close(g, fl, s.psh);
			continue;
		}
		if (fl)
			flow_close(g, fl, 0);
		/* A message of its own, sent as it is (its checksum finished by
		 * the receiving kernel when a stage asked for that).
		 */
		g->msgid[i] = nmsg;
		g->off[i] = g->inner;
		g->plen[i] = kind == 2 ? s.l4 + s.thl + s.payload :
					 len - g->inner; /* no Ethernet padding */
		g->msg[nmsg].nseg = 1;
		g->msg[nmsg].niov = 1;
		g->msg[nmsg].bytes = len;
		g->msg[nmsg].mark = g->inner && kind == 2 ? gso_mark(o, f - g->inner) : 0;
		if (g->inner && !g->msg[nmsg].mark)
			kind = 1; /* no tunnel to mark it for: it stays a single frame */
		vh = &g->vh[nmsg];
		memset(vh, 0, sizeof(*vh));
		if (csum) {
			vh->flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
			vh->csum_start = htole16((uint16_t)(csum >> 16));
			vh->csum_offset = htole16((uint16_t)(csum & 0xffff));
		}
		if (kind == 2 && !s.psh && max_segs > 1)
			flow_open(g, nmsg, f, &s);
		nmsg++;
	}
	for (i = 0; i < GRO_FLOWS; i++)
		if (g->flows[i].open)
			flow_close(g, &g->flows[i], 0);
	return nmsg;
}

/* Pass 2: each message's iovecs, contiguous: its header, then its frames' pieces in order. */
static void layout(struct prism_overlay *o, struct prism_gro *g, const struct prism_batch *b,
		   const uint32_t *idx, uint32_t n, uint32_t nmsg)
{
	uint32_t k, i, pos = 0;

	for (k = 0; k < nmsg; k++) {
		struct gro_msg *m = &g->msg[k];

		m->iov = pos;
		m->cursor = pos + 1;
		m->err = 0;
		g->iov[pos].iov_base = &g->vh[k];
		g->iov[pos].iov_len = sizeof(g->vh[k]);
		memset(&g->mm[k], 0, sizeof(g->mm[k]));
		g->mm[k].msg_hdr.msg_iov = &g->iov[pos];
		g->mm[k].msg_hdr.msg_iovlen = 1 + m->niov;
		pos += 1 + m->niov;
		if (m->nseg > 1 && m->mark) { /* for prism_gso_encap */
			struct cmsghdr *c = &g->ctl[k].c;

			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SO_MARK;
			c->cmsg_len = CMSG_LEN(sizeof(m->mark));
			memcpy(CMSG_DATA(c), &m->mark, sizeof(m->mark));
			g->mm[k].msg_hdr.msg_control = c;
			g->mm[k].msg_hdr.msg_controllen = sizeof(g->ctl[k]);
		}
	}
	for (i = 0; i < n; i++) {
		struct gro_msg *m = &g->msg[g->msgid[i]];
		uint64_t addr = b->addr[idx[i]] + g->off[i], next;
		uint32_t left = g->plen[i], piece;

		if (g->inner && m->nseg == 1) { /* unmerged: the frame as encap left it */
			addr = b->addr[idx[i]];
			left = b->len[idx[i]];
		}

		do { /* one piece, or each part of a chained packet */
			next = o->u->multibuf ? o->u->next[frame_of(o->u, addr)] : 0;
			piece = left;
			if (next && o->u->part_end[frame_of(o->u, addr)] - addr < piece)
				piece = (uint32_t)(o->u->part_end[frame_of(o->u, addr)] - addr);
			g->iov[m->cursor].iov_base = o->u->area + addr;
			g->iov[m->cursor].iov_len = piece;
			m->cursor++;
			left -= piece;
			addr = next;
		} while (left && addr);
	}
	for (k = 0; k < nmsg; k++) /* a packet cut short of its last parts uses fewer */
		g->mm[k].msg_hdr.msg_iovlen = g->msg[k].cursor - g->msg[k].iov;
}

/* Every message, as many per sendmmsg() as the socket takes; a message it
 * refuses is marked with the errno and skipped. Never blocks.
 */
static void send_all(int fd, struct prism_gro *g, uint32_t nmsg)
{
	uint32_t done = 0;

	while (done < nmsg) {
		int r = sendmmsg(fd, g->mm + done, nmsg - done, MSG_DONTWAIT);

		if (r > 0) {
			done += (uint32_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		g->msg[done++].err = r < 0 ? errno : EIO;
	}
}

/* Frames a port's AF_XDP TX rings still hold leave before anything is
 * sent on its packet socket, so that a flow's packets keep their order
 * across the two ways in (each kick is synchronous in copy mode, at most
 * a few dozen frames a call).
 */
static void drain_rings(struct port *pt)
{
	uint32_t c, round;

	for (c = 0; c < PRISM_NCLASS; c++) {
		struct prism_xsk *x = pt->xsk[c];

		if (!x || (c && x == pt->xsk[0]))
			continue;
		for (round = 0; round < 64 && prism_xsk_tx_pending(x); round++)
			prism_xsk_kick(x);
	}
}

int prism_gro_deliver(struct prism_overlay *o, struct port *pt, const struct prism_batch *b,
		      const uint32_t *idx, uint32_t n)
{
	struct prism_gro *g = o->gro;
	uint32_t nmsg, i, sent = 0;
	uint64_t now;

	if (!g) {
		g = calloc(1, sizeof(*g));
		if (!g)
			return -ENOMEM;
		o->gro = g;
	}
	if (grow(g, n))
		return -ENOMEM;
	g->inner = pt == &o->ports[PRISM_UPLINK_PORT] ? PRISM_ENCAP_LEN : 0;
	nmsg = plan(o, g, b, idx, n, pt->gro_segs);
	/* Nothing merged: the AF_XDP ring is the cheaper way for single frames
	 * (a packet socket's message costs ~25 % more for small UDP), and
	 * plan() changed no byte.
	 */
	if (nmsg == n && !g->aggregates && pt->xsk[0])
		return 0;
	if (grow_iov(g, 2 * n + g->parts))
		return -ENOMEM;
	drain_rings(pt);
	layout(o, g, b, idx, n, nmsg);
	send_all(pt->pkt_fd, g, nmsg);
	now = prism_now_ns();
	for (i = 0; i < nmsg; i++) {
		struct gro_msg *m = &g->msg[i];

		if (m->err) {
			if (m->err == EAGAIN || m->err == ENOBUFS)
				o->cnt.drop_tx_full += m->nseg;
			else
				o->cnt.drop_tx_error += m->nseg;
			pt->cnt.tx_full += m->err == EAGAIN || m->err == ENOBUFS ? m->nseg : 0;
			continue;
		}
		pt->cnt.tx_packets += m->nseg;
		pt->cnt.tx_bytes += m->bytes;
		if (m->nseg > 1 && g->inner) {
			o->cnt.gso_out_packets++;
			o->cnt.gso_out_segments += m->nseg;
		} else if (m->nseg > 1) { /* merged here; an aggregate came merged */
			o->cnt.gro_packets++;
			o->cnt.gro_segments += m->nseg;
		}
		sent += m->nseg;
	}
	o->cnt.deliver_out += sent;
	for (i = 0; i < n; i++) {
		uint32_t j = idx[i];

		if (!g->msg[g->msgid[i]].err)
			record_latency(o, b, j, now);
		pool_put(o->u, b->addr[j]);
		o->u->user--;
	}
	return 1;
}
