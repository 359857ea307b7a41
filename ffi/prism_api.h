/* prism_api.h - the C helpers' API as plain declarations: cffi's cdef reads this file verbatim, so no preprocessor here. */

/*
 * Conventions: every function that can fail returns a count >= 0 or -errno
 * and never prints. A call moves a whole batch; Python never loops over
 * packets. Opaque handles are created and deleted explicitly (Python's
 * ExitStack does it in reverse order of creation).
 */

/* A batch of descriptors as a struct of arrays, allocated once and reused.
 * addr is the UMEM address of the packet's first byte, len its length;
 * ts the time (CLOCK_MONOTONIC ns) the packet was taken off its RX ring;
 * port the output port a stage chose for it (0 = the uplink); cls the
 * class the rules give its inner packet (for measurement: in vanilla mode
 * every packet shares one socket, yet a HIGH flow's latency is still seen).
 */
struct prism_batch {
	uint32_t cap;
	uint32_t n;
	uint64_t *addr;
	uint32_t *len;
	uint64_t *ts;
	uint16_t *port;
	uint8_t *cls;
	uint64_t *poll_ts; /* when the RX ring was polled (ts: when XDP saw it, if stamped) */
	uint32_t *csum; /* TX checksum request: csum_start << 16 | csum_offset, 0 = none */
};

/* XDP_STATISTICS of one socket; fields the kernel does not report are 0. */
struct prism_xsk_stats {
	uint64_t rx_dropped;
	uint64_t rx_invalid_descs;
	uint64_t tx_invalid_descs;
	uint64_t rx_ring_full;
	uint64_t rx_fill_ring_empty_descs;
	uint64_t tx_ring_empty_descs;
};

/* What the helpers did on one socket (kept in user space, no syscall). */
struct prism_xsk_counters {
	uint64_t rx_packets;
	uint64_t rx_bytes;
	uint64_t rx_batches;
	uint64_t rx_wakeups;
	uint64_t tx_packets;
	uint64_t tx_bytes;
	uint64_t tx_ring_full;
	uint64_t tx_kicks;
	uint64_t tx_kick_errors;
	uint64_t comp_reaped;
	uint64_t fill_added;
	uint64_t rx_multibuf; /* packets that came in several parts (XDP_USE_SG), kept chained */
	uint64_t rx_multibuf_parts;
};

/* Where every frame of a UMEM is: pool + kernel_rx + kernel_tx + user is
 * always frames. kernel_rx = frames given to a fill ring and not yet taken
 * off an RX ring; of those, fill_ring and rx_ring are on the rings right
 * now and the rest is held by the kernel in between (copy mode keeps a few
 * in its buffer pool). kernel_tx likewise: tx_ring + comp_ring + frames in
 * the kernel's transmit path.
 */
struct prism_frame_account {
	uint64_t frames;
	uint64_t pool;
	uint64_t kernel_rx;
	uint64_t kernel_tx;
	uint64_t user;
	uint64_t fill_ring;
	uint64_t rx_ring;
	uint64_t tx_ring;
	uint64_t comp_ring;
};

typedef struct prism_umem prism_umem;
typedef struct prism_xsk prism_xsk;
typedef struct prism_prog prism_prog;

/* batches */
struct prism_batch *prism_batch_new(uint32_t cap);
void prism_batch_delete(struct prism_batch *b);

/* UMEM: frames, headroom, one free-frame pool. With register_kernel 0 the
 * memory and pool exist without a kernel UMEM (unit tests, tools).
 * multibuf: sockets bound with XDP_USE_SG may bring packets in several
 * frames, which stay chained (1), or not (0).
 */
int prism_umem_create(prism_umem **out, uint32_t frame_count, uint32_t frame_size,
		      uint32_t headroom, uint32_t fill_size, uint32_t comp_size,
		      int register_kernel, int multibuf);
int prism_umem_delete(prism_umem *u);
uint8_t *prism_umem_area(prism_umem *u);
uint32_t prism_umem_pool_count(prism_umem *u);
/* Bytes of TX metadata in front of each frame: PRISM_TXMD_LEN when the kernel
 * takes a checksum request with a frame (probed at create), else 0. */
uint32_t prism_umem_tx_metadata(prism_umem *u);
void prism_umem_account(prism_umem *u, struct prism_frame_account *out);

/* Frames between the pool and a batch, without the kernel. */
int prism_alloc_batch(prism_umem *u, struct prism_batch *b, uint32_t n, uint32_t len);
/* One packet of len bytes into b, in as many chained frames as it takes, as
 * RX leaves a multi-buffer packet (tests and tools; a multibuf UMEM): 1, or 0
 * when b or the pool has no room. */
int prism_alloc_multibuf(prism_umem *u, struct prism_batch *b, const uint8_t *data, uint32_t len);
/* Copy len bytes of the packet at addr to out, following its chain: len, or
 * -EINVAL past the packet or the UMEM (tests and tools). */
int prism_umem_read(prism_umem *u, uint64_t addr, uint32_t len, uint8_t *out);
int prism_free_batch(prism_umem *u, struct prism_batch *b, uint32_t start, uint32_t n);
int prism_copy_frames_batch(prism_umem *u, struct prism_batch *b, uint32_t start, uint32_t n,
			    const uint8_t *data, uint32_t len);

/* Sockets. bind_flags are XDP_COPY / XDP_ZEROCOPY / XDP_USE_NEED_WAKEUP.
 * Sockets on the same (device, queue) share one fill/completion ring pair;
 * sockets on other devices join the same UMEM with a pair of their own.
 */
int prism_xsk_create(prism_xsk **out, prism_umem *u, const char *ifname, uint32_t queue,
		     uint32_t rx_size, uint32_t tx_size, uint32_t bind_flags);
void prism_xsk_delete(prism_xsk *x);
int prism_xsk_fd(prism_xsk *x);
/* The socket's XDP program puts metadata in front of packets
 * (PRISM_STEER_F_META): rx strips it and takes the packet's class (cls) and,
 * when there is one, its arrival time (ts) from it. */
void prism_xsk_set_rx_stamped(prism_xsk *x, int on);
int prism_xsk_zerocopy(prism_xsk *x);
int prism_xsk_set_busy_poll(prism_xsk *x, int usecs, int budget);
int prism_xsk_statistics(prism_xsk *x, struct prism_xsk_stats *out);
void prism_xsk_counters(prism_xsk *x, struct prism_xsk_counters *out);
int prism_xsk_map_insert(prism_xsk *x, int map_fd, uint32_t slot);

/* The hot path, a batch per call. */
int prism_fill_batch(prism_xsk *x, uint32_t max);
int prism_rx_batch(prism_xsk *x, struct prism_batch *b);
/* At most max frames' worth: a multi-buffer packet counts the descriptors it
 * came in (the first packet is always taken). */
int prism_rx_upto(prism_xsk *x, struct prism_batch *b, uint32_t max);
/* Bit i set when socket i has packets on its RX ring: one call tells a
 * scheduler where work waits. Sockets 0-63 are the returned word; with more
 * than 64, sockets 64.. go to more[0..(n - 1) / 64 - 1], 64 a word. */
uint64_t prism_xsk_pending_mask(prism_xsk **xs, uint32_t n, uint64_t *more);
/* The same from the kernel's own readiness: an epoll set over the sockets
 * (data = index; an fd, or -errno), then one epoll_wait(0) per call: a
 * syscall instead of a look at every ring, for hundreds of sockets. */
int prism_xsk_ready_new(prism_xsk **xs, uint32_t n);
uint64_t prism_xsk_ready_mask(int epfd, uint32_t n, uint64_t *more);
/* Entries start.. of b onto the TX ring (a frame whose csum is set asks for
 * the checksum in TX metadata, when the UMEM has it); returns how many went,
 * the rest stay in b. */
int prism_tx_batch(prism_xsk *x, struct prism_batch *b, uint32_t start, uint32_t n);
int prism_complete_batch(prism_xsk *x, uint32_t max);
int prism_xsk_kick(prism_xsk *x);
int prism_xsk_rx_pending(prism_xsk *x);
int prism_xsk_tx_pending(prism_xsk *x);

/* XDP programs through libxdp, and their maps through libbpf. */
/* reuse: maps of the object that take an existing map's fd instead of
 * being created (names and fds, n_reuse of each); frags: load an XDP
 * program as taking multi-buffer packets (BPF_F_XDP_HAS_FRAGS). */
int prism_prog_open(prism_prog **out, const char *path, const char *const *reuse_names,
		    const int *reuse_fds, uint32_t n_reuse, int frags);
void prism_prog_close(prism_prog *p);
const char *prism_prog_name(prism_prog *p);
uint32_t prism_prog_id(prism_prog *p);
int prism_prog_fd(prism_prog *p);
int prism_prog_attach(prism_prog *p, int ifindex, int mode);
int prism_prog_attach_link(prism_prog *p, int ifindex, int mode);
int prism_link_detach(int link_fd);
int prism_tcx_attach_link(int prog_fd, int ifindex, int egress);
int prism_tcx_query(int ifindex, int egress, uint32_t *ids, uint32_t n);
int prism_prog_map_fd(prism_prog *p, const char *map_name);
int prism_xdp_query(int ifindex, uint32_t *prog_id, int *mode, char *name, uint32_t name_len);
int prism_xdp_detach_id(int ifindex, uint32_t prog_id, int mode);

int prism_map_update(int fd, const void *key, const void *value, uint64_t flags);
int prism_map_lookup(int fd, const void *key, void *value);
int prism_map_delete(int fd, const void *key);
int prism_map_next_key(int fd, const void *key, void *next_key);
int prism_array_u8_dump(int fd, uint32_t n, uint8_t *values);
int prism_percpu_sum(int fd, uint32_t key, uint32_t words, uint64_t *out);

/* Traffic for benchmarks: BPF_PROG_RUN with live frames. */
int prism_prog_run_live(int prog_fd, const uint8_t *frame, uint32_t len, uint32_t repeat,
			uint32_t batch_size);
int prism_prog_run_test(int prog_fd, const uint8_t *frame, uint32_t len, uint32_t repeat,
			uint32_t *duration_ns, uint32_t *retval);

uint64_t prism_now_ns(void);
void prism_install_log(int min_level);

/* ---- Checksums of TCP/UDP over IPv4 (prism_csum.c) ---------------------
 * How a container's (possibly partial) checksum is finished: OFFLOAD writes
 * the pseudo-header seed and asks the kernel through TX metadata; SOFTWARE
 * computes the whole sum.
 */
#define PRISM_CSUM_OFFLOAD 1
#define PRISM_CSUM_SOFTWARE 2

struct prism_l4 {
	uint32_t l3; /* IPv4 header, from the frame's first byte */
	uint32_t start; /* TCP/UDP header */
	uint32_t offset; /* checksum field, from start */
	uint32_t l4len;
	uint32_t end; /* the IPv4 packet's end; Ethernet padding follows */
	uint8_t proto;
};

/* 1 and *l filled for an unfragmented IPv4 TCP/UDP packet with a checksum. */
int prism_l4_locate(const uint8_t *f, uint32_t len, struct prism_l4 *l);
uint16_t prism_l4_seed(const uint8_t *f, const struct prism_l4 *l);
void prism_l4_write_seed(uint8_t *f, const struct prism_l4 *l);
int prism_l4_is_seed(const uint8_t *f, const struct prism_l4 *l);
void prism_l4_complete(uint8_t *f, const struct prism_l4 *l);
/* 1 if the frame's TCP/UDP checksum is right, 0 if wrong, -EINVAL if none. */
int prism_l4_valid(const uint8_t *f, uint32_t len);
/* Finish every packet's checksum as `how` says (0: only find it, a
 * benchmark's baseline); returns packets with a checksum. */
int prism_csum_batch(prism_umem *u, struct prism_batch *b, uint32_t how);

/* ---- The overlay: forwarding table and the decap / encap / deliver stages.
 * Port 0 is the uplink; ports 1.. are containers' host-side veths. Remote
 * VTEPs are reached through port 0 with the outer headers encap writes.
 */
#define PRISM_MAX_PORTS 512 /* the uplink and up to 511 containers */
#define PRISM_MAX_VTEPS 256
#define PRISM_UPLINK_PORT 0

struct prism_overlay_config {
	uint16_t vxlan_port; /* host order */
	uint8_t local_mac[6]; /* uplink's MAC: outer source */
	uint32_t local_ip; /* network order: outer source */
	uint32_t uplink_mtu; /* an encapsulated packet's IP length must fit */
	uint8_t ttl;
	uint32_t learn; /* learn remote inner MACs from decapsulated frames */
	uint32_t checksum; /* PRISM_CSUM_*: how containers' checksums are finished */
	/* From the uplink, a checksum field that holds exactly the pseudo-header
	 * seed is taken as partial (a veth "wire" leaves it so) and finished like
	 * a container's; any other value is left for the container to verify. */
	uint32_t accept_partial;
	uint32_t fdb_ageing_s; /* learned remote MACs age out (0: 300 s, the kernel bridge's) */
	uint32_t fdb_max_per_vtep; /* live learned entries per VTEP (0: 4096) */
};

/* Per stage and per reason; every packet a stage takes is counted once
 * as passed on or as dropped for one reason.
 */
struct prism_overlay_counters {
	uint64_t decap_in;
	uint64_t decap_out;
	uint64_t encap_in;
	uint64_t encap_out; /* encapsulated toward a VTEP */
	uint64_t local_out; /* container to container, no tunnel */
	uint64_t flood_copies; /* extra frames made for broadcast / unknown */
	uint64_t mcast_pruned; /* copies not made: ports that did not join the frame's group */
	uint64_t learned; /* remote MACs learned or moved */
	uint64_t fdb_entries; /* learned entries live now (a level, not a count) */
	uint64_t fdb_refused; /* not learned: the VTEP's share or the table was full */
	uint64_t fdb_expired; /* learned entries aged out */
	uint64_t deliver_in;
	uint64_t deliver_out;
	uint64_t drop_malformed_outer;
	uint64_t drop_malformed_inner;
	uint64_t drop_unknown_vni;
	uint64_t drop_unknown_vtep;
	uint64_t drop_unknown_dst;
	uint64_t drop_no_listener; /* a group's frame from the uplink that no container joined */
	uint64_t drop_mtu;
	uint64_t drop_no_headroom;
	uint64_t drop_no_frame; /* pool empty when a flood copy was needed */
	uint64_t drop_batch_full;
	uint64_t drop_tx_full;
	uint64_t drop_tx_error; /* a packet socket refused a message for another reason */
	uint64_t drop_no_port;
	uint64_t drop_no_memory; /* deliver could not grow its sort array */
	uint64_t csum_offload; /* checksums handed to the kernel with TX metadata */
	uint64_t csum_software; /* checksums completed here */
	uint64_t csum_partial_in; /* partial checksums from the uplink (accept_partial) */
	uint64_t gro_packets; /* GSO packets made of merged TCP segments (packet delivery) */
	uint64_t gro_segments; /* the segments in them */
	uint64_t agg_in; /* multi-buffer packets from the uplink, passed on as GSO packets */
	uint64_t drop_aggregate; /* multi-buffer packets that cannot be one GSO packet */
	uint64_t gso_out_packets; /* GSO packets of merged segments sent to the uplink (prism_gso_encap) */
	uint64_t gso_out_segments; /* the segments in them */
	uint64_t hold_frames; /* LOW TCP segments held for the next batches' (the hold) */
	uint64_t hold_flush_full; /* held segments sent: a GSO packet's worth */
	uint64_t hold_flush_psh; /* ... one had PSH, its sender's write ended */
	uint64_t hold_flush_idle; /* ... the worker found nothing to do, switched modes or stopped */
	uint64_t hold_flush_age; /* ... the oldest waited PRISM_HOLD_AGE_NS */
	uint64_t hold_flush_other; /* ... a frame that could not wait came, or the hold was full */
};

struct prism_port_counters {
	uint64_t tx_packets;
	uint64_t tx_bytes;
	uint64_t tx_full;
};

/* Latency in the pipeline, HDR-style: 16 linear sub-buckets per power of
 * two (values below 16 exact), so any value is off by at most 1/16. Values
 * are nanoseconds from a packet's RX poll to the TX kick that sent it.
 */
#define PRISM_HIST_SUB_BITS 4
#define PRISM_HIST_BUCKETS 1024
#define PRISM_BATCH_SIZE_BUCKETS 14 /* log2 buckets: 1, 2-3, 4-7, ..., 8192+ */

struct prism_hist {
	uint64_t count;
	uint64_t sum;
	uint64_t min;
	uint64_t max;
	uint64_t buckets[PRISM_HIST_BUCKETS];
	uint64_t batch_sizes[PRISM_BATCH_SIZE_BUCKETS]; /* per deliver call, by class */
};

typedef struct prism_overlay prism_overlay;

int prism_overlay_new(prism_overlay **out, prism_umem *u, const struct prism_overlay_config *cfg);
void prism_overlay_delete(prism_overlay *o);
/* A port's sockets, one per class (NULL where a class has none: the
 * port's class 0 socket is used; nclass 0: no sockets at all, for tests of
 * the stages). Returns the port number.
 */
int prism_overlay_set_uplink(prism_overlay *o, prism_xsk **by_class, uint32_t nclass);
int prism_overlay_add_container(prism_overlay *o, prism_xsk **by_class, uint32_t nclass,
				uint32_t vni, const uint8_t *mac);
int prism_overlay_add_vtep(prism_overlay *o, uint32_t vni, uint32_t ip, const uint8_t *mac);
void prism_overlay_counters(prism_overlay *o, struct prism_overlay_counters *out);
/* A copy of class cls's latency histogram: from arrival (XDP's stamp, or
 * the RX poll) to TX kick, or with from_poll from the RX poll only. Reset
 * clears all. */
int prism_overlay_hist(prism_overlay *o, uint32_t cls, int from_poll, struct prism_hist *out);
void prism_overlay_hist_reset(prism_overlay *o);
int prism_hist_bucket(uint64_t value);
uint64_t prism_hist_bucket_low(int bucket);
int prism_overlay_port_counters(prism_overlay *o, uint32_t port, struct prism_port_counters *out);
/* Where (vni, mac) goes: 0 = unknown, 1 = local port (*idx), 2 = VTEP (*idx). */
int prism_overlay_lookup(prism_overlay *o, uint32_t vni, const uint8_t *mac, uint32_t *idx);

/* Stages: each takes every packet of in (in->n becomes 0), appends what it
 * passes on to out with out->port set, and frees what it drops.
 */
int prism_decap_batch(prism_overlay *o, struct prism_batch *in, struct prism_batch *out);
int prism_encap_batch(prism_overlay *o, uint32_t src_port, struct prism_batch *in,
		      struct prism_batch *out);
/* Transmit every packet of b on its port's socket of class cls; returns
 * packets sent; a packet that finds its TX ring full is dropped. b is empty
 * afterwards whatever happened (-ENOMEM: all dropped and counted).
 */
int prism_deliver_batch(prism_overlay *o, uint32_t cls, struct prism_batch *b);
/* Reap every port's completion ring and top its fill ring up to
 * fill_level frames (the uplink to uplink_fill); returns frames reaped.
 */
int prism_overlay_service(prism_overlay *o, uint32_t uplink_fill, uint32_t fill_level);
/* rx (up to max) + decap or encap + deliver in one call; packets taken, or
 * -errno from a stage (which dropped and counted what it could not pass on). */
int prism_overlay_through(prism_overlay *o, prism_xsk *x, uint32_t src_port, uint32_t cls,
			  struct prism_batch *in, struct prism_batch *out, uint32_t max);
/* Deliver to a container port through a packet socket (AF_PACKET bound to
 * the port's device, PACKET_VNET_HDR on) instead of its AF_XDP sockets; up
 * to gro_segs TCP segments of a flow become one GSO packet (0 or 1: none,
 * at most PRISM_GRO_MAX_SEGS). fd < 0 goes back to AF_XDP. The caller owns
 * the fd. On the uplink (PRISM_UPLINK_PORT) the socket must go through the
 * device's egress hook, where prism_gso_encap encapsulates what is merged
 * (sent inner, marked PRISM_GSO_MARK); single frames leave encapsulated.
 */
#define PRISM_GRO_MAX_SEGS 64
int prism_overlay_set_port_packet(prism_overlay *o, uint32_t port, int fd, uint32_t gro_segs);
/* Kick until every TX ring is empty (before a flow may change sockets);
 * held segments go first. */
int prism_overlay_flush_tx(prism_overlay *o, uint32_t max_rounds);
/* The hold (PRISM's modes, whose LOW batches are cut short while HIGH is
 * active): a port's LOW TCP data segments toward a packet socket wait,
 * instead of leaving with their batch, until segs of them (at most the
 * port's gro_segs) are there, a segment with PSH comes (it goes too), a
 * frame that cannot wait comes (it goes after them), the worker finds
 * nothing to do (the caller flushes), or the oldest waited
 * PRISM_HOLD_AGE_NS (checked at each service). Cut batches then still
 * make large packets, with one kick each, as the kernel's GRO keeps
 * packets across NAPI polls while a device has more work. 0 (the
 * default) is off; a smaller size sends what is held. -EINVAL past
 * PRISM_GRO_MAX_SEGS.
 */
#define PRISM_HOLD_AGE_NS 1000000
#define PRISM_HOLD_TOTAL 256 /* frames held over every port */
int prism_overlay_set_hold(prism_overlay *o, uint32_t segs);
/* Send what is held for longer than older_than_ns (0: everything); frames sent. */
int prism_overlay_flush_held(prism_overlay *o, uint64_t older_than_ns);

/* ---- MLD snooping (prism_mcast.c) --------------------------------------
 * Which container port joined which IPv6 multicast group, learned from the
 * containers' MLD reports, so that a group's frames reach its members only
 * (RFC 4541, as the kernel bridge does). One table serves every worker of a
 * daemon; an overlay without one floods, as before.
 */
#define PRISM_MC_ALL 0 /* to everyone: not IPv6 multicast, all-nodes, an MLD query */
#define PRISM_MC_DATA 1 /* a group's traffic: to its members */
#define PRISM_MC_REPORT 2 /* an MLD report or done: to the VTEPs only */

struct prism_mcast_counters {
	uint64_t groups; /* live memberships, (group, port) pairs (a level) */
	uint64_t joins;
	uint64_t leaves; /* a done, or a record leaving the group */
	uint64_t expired; /* not renewed within the membership interval */
	uint64_t refused; /* the port's share or the table was full: it gets every group */
	uint64_t reports; /* MLD reports and dones read */
	uint64_t malformed; /* MLD reports that could not be read */
};

typedef struct prism_mcast prism_mcast;

/* member_s: how long a report keeps a membership; per_port: memberships a port may hold. */
int prism_mcast_new(prism_mcast **out, uint32_t member_s, uint32_t per_port);
void prism_mcast_delete(prism_mcast *m);
/* Frames of a group go to its members only from at_ns on (0: flood them). */
void prism_mcast_set_ready(prism_mcast *m, uint64_t at_ns);
void prism_mcast_counters(prism_mcast *m, struct prism_mcast_counters *out);
/* PRISM_MC_* of a multicast or broadcast Ethernet frame. */
int prism_mcast_classify(const uint8_t *f, uint32_t len);
/* An MLD report or done that port sent: records applied, or -EINVAL. */
int prism_mcast_learn(prism_mcast *m, uint32_t vni, uint32_t port, const uint8_t *f, uint32_t len,
		      uint64_t now);
/* Ports a frame for (vni, group MAC) goes to at time now; the count, the first cap in ports. */
int prism_mcast_members(prism_mcast *m, uint32_t vni, const uint8_t *mac, uint64_t now,
			uint32_t *ports, uint32_t cap);
/* The table an overlay snoops with (NULL: none); it must outlive the overlay. */
int prism_overlay_set_mcast(prism_overlay *o, prism_mcast *m);
/* A copy of frame for every container port, appended to out (class 0): the
 * daemon's MLD queries. Returns copies made; a port that finds no frame is
 * counted in drop_no_frame. */
int prism_overlay_inject(prism_overlay *o, const uint8_t *frame, uint32_t len,
			 struct prism_batch *out);
