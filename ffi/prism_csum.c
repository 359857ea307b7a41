/* prism_csum.c - TCP/UDP checksums of (inner) IPv4 packets: where the checksum is, the pseudo-header seed a checksum offload needs, and completing it in software. */
#include <errno.h>
#include <string.h>

#include <linux/if_ether.h>
#include <linux/in.h>

#include "prism.h"
#include "prism_internal.h"

/*
 * Why this exists. A container's veth has TX checksum offload on by
 * default: its stack leaves only the pseudo-header sum (the "seed") in the
 * TCP/UDP checksum field and marks the skb CHECKSUM_PARTIAL, trusting
 * "hardware" to finish it. Once the frame has gone through XDP into an
 * AF_XDP socket, that mark is gone, and a receiver would see a wrong
 * checksum. Two ways to finish it:
 *
 *   offload  write the seed (O(1)) and hand the frame to the kernel with
 *            TX metadata asking for the checksum at csum_start/csum_offset
 *            (Linux >= 6.11 here); the kernel makes a CHECKSUM_PARTIAL skb
 *            that a NIC completes, or that a receiving stack on the host
 *            accepts as it accepts any veth frame;
 *   software sum the L4 bytes here (O(length)), for older kernels.
 *
 * Either works whether the field held the seed or a full checksum: the
 * field is rewritten from the headers, never trusted. Only frames the host
 * itself produced (a container's) are treated this way; see csum_ingress
 * in prism_vxlan.c for frames from the wire.
 */

static inline uint32_t fold(uint64_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint32_t)sum;
}

/* Ones'-complement sum of len bytes, 8 at a time (byte order does not
 * matter to a ones'-complement sum as long as it is the same throughout,
 * so the words are read in host order and swapped once at the end).
 */
static uint32_t sum_bytes(const uint8_t *p, uint32_t len)
{
	uint64_t sum = 0, w;
	uint32_t i = 0, t;

	for (; i + 8 <= len; i += 8) {
		memcpy(&w, p + i, 8);
		sum += (w & 0xffffffffu) + (w >> 32);
	}
	for (; i + 2 <= len; i += 2) {
		uint16_t h;

		memcpy(&h, p + i, 2);
		sum += h;
	}
	if (i < len) {
		uint16_t h = 0;

		memcpy(&h, p + i, 1); /* the odd byte is the high byte of a zero-padded word */
		sum += h;
	}
	t = fold(sum);
	return (uint16_t)(t << 8 | t >> 8); /* to network order's value */
}

int prism_l4_locate(const uint8_t *f, uint32_t len, struct prism_l4 *l)
{
	uint32_t l3 = ETH_HLEN, ihl, tot, tags;
	uint16_t type;

	if (len < ETH_HLEN)
		return 0;
	type = rd16(f + 12);
	for (tags = 0; tags < 2 && (type == ETH_P_8021Q || type == ETH_P_8021AD); tags++) {
		if (len < l3 + 4)
			return 0;
		type = rd16(f + l3 + 2);
		l3 += 4;
	}
	if (type != ETH_P_IP || len < l3 + 20 || (f[l3] >> 4) != 4)
		return 0;
	ihl = (f[l3] & 0xf) * 4u;
	tot = rd16(f + l3 + 2);
	if (ihl < 20 || tot < ihl || l3 + tot > len)
		return 0;
	if (rd16(f + l3 + 6) & 0x3fff) /* a fragment: the kernel summed the datagram before */
		return 0;
	l->proto = f[l3 + 9];
	l->l3 = l3;
	l->start = l3 + ihl;
	l->l4len = tot - ihl;
	l->end = l3 + tot; /* anything after is Ethernet padding */
	if (l->proto == IPPROTO_TCP && l->l4len >= 20)
		l->offset = 16;
	else if (l->proto == IPPROTO_UDP && l->l4len >= 8 && rd16(f + l->start + 6))
		l->offset = 6; /* 0 in the field: the sender chose no checksum (IPv4) */
	else
		return 0;
	return 1;
}

uint16_t prism_l4_seed(const uint8_t *f, const struct prism_l4 *l)
{
	uint32_t sum = rd16(f + l->l3 + 12) + rd16(f + l->l3 + 14) + rd16(f + l->l3 + 16) +
		       rd16(f + l->l3 + 18) + l->proto + l->l4len;

	return (uint16_t)fold(sum);
}

void prism_l4_write_seed(uint8_t *f, const struct prism_l4 *l)
{
	wr16(f + l->start + l->offset, prism_l4_seed(f, l));
}

int prism_l4_is_seed(const uint8_t *f, const struct prism_l4 *l)
{
	return rd16(f + l->start + l->offset) == prism_l4_seed(f, l);
}

void prism_l4_complete(uint8_t *f, const struct prism_l4 *l)
{
	uint8_t *field = f + l->start + l->offset;
	uint16_t c;

	wr16(field, 0);
	c = (uint16_t)~fold((uint64_t)prism_l4_seed(f, l) + sum_bytes(f + l->start, l->l4len));
	if (!c && l->proto == IPPROTO_UDP)
		c = 0xffff; /* 0 means "no checksum" in UDP */
	wr16(field, c);
}

int prism_l4_valid(const uint8_t *f, uint32_t len)
{
	struct prism_l4 l;

	if (!prism_l4_locate(f, len, &l))
		return -EINVAL;
	return fold((uint64_t)prism_l4_seed(f, &l) + sum_bytes(f + l.start, l.l4len)) == 0xffff;
}

int prism_csum_batch(prism_umem *u, struct prism_batch *b, uint32_t how)
{
	uint32_t i, done = 0;
	struct prism_l4 l;

	for (i = 0; i < b->n; i++) {
		uint8_t *f = u->area + b->addr[i];

		b->csum[i] = 0;
		if (!prism_l4_locate(f, b->len[i], &l))
			continue;
		if (how == PRISM_CSUM_OFFLOAD) {
			prism_l4_write_seed(f, &l);
			b->csum[i] = PRISM_CSUM_REQ(l.start, l.offset);
		} else if (how == PRISM_CSUM_SOFTWARE) {
			prism_l4_complete(f, &l);
		} /* else: only found, for a benchmark's baseline */
		done++;
	}
	return done;
}
