/* prism_uapi.h - AF_XDP UAPI that Debian 12's kernel headers (6.1) lack: multi-buffer sockets (Linux >= 6.6), TX metadata (>= 6.8) and the UMEM flag that actuates it (>= 6.11). */
#ifndef PRISM_UAPI_H
#define PRISM_UAPI_H

#include <linux/if_xdp.h>
#include <linux/types.h>

/*
 * The values are the kernel's (include/uapi/linux/if_xdp.h); defined here
 * only when the installed headers are older, so a newer header wins.
 */
#ifndef XDP_UMEM_TX_METADATA_LEN
#define XDP_UMEM_TX_SW_CSUM (1 << 1)
#define XDP_UMEM_TX_METADATA_LEN (1 << 2)
#endif

#ifndef XDP_USE_SG
#define XDP_USE_SG (1 << 4) /* bind: a packet may span several descriptors */
#endif

#ifndef XDP_PKT_CONTD
#define XDP_PKT_CONTD (1 << 0) /* xdp_desc.options: more parts of this packet follow */
#endif

#ifndef XDP_TX_METADATA
#define XDP_TX_METADATA (1 << 1) /* xdp_desc.options: metadata in front of addr */
#endif

#ifndef XDP_TXMD_FLAGS_CHECKSUM
#define XDP_TXMD_FLAGS_TIMESTAMP (1 << 0)
#define XDP_TXMD_FLAGS_CHECKSUM (1 << 1)

struct xsk_tx_metadata {
	__u64 flags;
	union {
		struct {
			/* the L4 checksum, as skb->csum_start/csum_offset:
			 * from the packet's first byte, and from csum_start
			 */
			__u16 csum_start;
			__u16 csum_offset;
		} request;
		struct {
			__u64 tx_timestamp;
		} completion;
	};
};
#endif

/* struct xdp_umem_reg as of 6.8: tx_metadata_len takes the padding after
 * flags, so the size is the same as the 6.1 struct's.
 */
struct prism_umem_reg {
	__u64 addr;
	__u64 len;
	__u32 chunk_size;
	__u32 headroom;
	__u32 flags;
	__u32 tx_metadata_len;
};

#define PRISM_TXMD_LEN 16 /* sizeof(struct xsk_tx_metadata), a multiple of 8 */

#endif /* PRISM_UAPI_H */
