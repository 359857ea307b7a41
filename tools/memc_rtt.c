// memc_rtt.c - a memcached text-protocol client with one request in flight that writes every request's latency (the bench's memcached HIGH workload).
//
// Why our own: the packaged load tools (memslap, memaslap from
// libmemcached-tools) report only totals or log2-bucketed statistics, not
// per-request latencies, and percentiles must come from raw samples.
//
// usage: prism-memc-rtt -s IP [-p PORT] -t SECONDS -o FILE [-k KEYS]
//                       [-v VALUE_BYTES] [-r SET_EVERY] [-T TIMEOUT_S] [-P]
//
// It stores every key once (not measured; -P: they are stored already), then until SECONDS have passed
// sends one request, waits for its whole reply, records the time from just
// before send() to the reply's last byte (CLOCK_MONOTONIC, ns), and sends the
// next: every SET_EVERY-th request a "set", the others a "get" of a key taken
// in turn. FILE gets a summary line starting with '#', then one latency in ns
// per line. Exit status: 0 done, 1 usage or connect error, 2 a bad or missing
// reply (what was measured until then is still written).

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define REPLY_MAX 65536

struct opts {
	const char *server;
	int port;
	double seconds;
	const char *out;
	int keys;
	int value_bytes;
	int set_every;
	int timeout_s;
	int preloaded;
};

struct samples {
	uint64_t *ns;
	size_t len, cap;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int push(struct samples *s, uint64_t v)
{
	if (s->len == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1 << 16;
		uint64_t *ns = realloc(s->ns, cap * sizeof(*ns));

		if (!ns)
			return -ENOMEM;
		s->ns = ns;
		s->cap = cap;
	}
	s->ns[s->len++] = v;
	return 0;
}

static int send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

// Read until the reply is complete: `want` bytes when the length is known
// (a hit), else a line ending in "\r\n" (STORED, END, or an error line).
static int read_reply(int fd, char *buf, size_t want, size_t *got)
{
	*got = 0;
	for (;;) {
		ssize_t n = recv(fd, buf + *got, REPLY_MAX - 1 - *got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		*got += (size_t)n;
		buf[*got] = '\0';
		if (*got >= want)
			return 0;
		// A miss or an error is a single line shorter than a hit.
		if (*got >= 2 && buf[*got - 2] == '\r' && buf[*got - 1] == '\n' &&
		    (strncmp(buf, "VALUE ", 6) != 0))
			return 0;
		if (*got >= REPLY_MAX - 1)
			return -EMSGSIZE;
	}
}

static int usage(const char *why)
{
	fprintf(stderr,
		"prism-memc-rtt: %s\nusage: prism-memc-rtt -s IP [-p PORT] -t SECONDS -o FILE [-k KEYS] "
		"[-v VALUE_BYTES] [-r SET_EVERY] [-T TIMEOUT_S] [-P]\n",
		why);
	return 1;
}

static int connect_to(const struct opts *o)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)o->port) };
	struct timeval tv = { .tv_sec = o->timeout_s };
	int one = 1;
	int fd;

	if (inet_pton(AF_INET, o->server, &sa.sin_addr) != 1) {
		fprintf(stderr, "prism-memc-rtt: %s is not an IPv4 address\n", o->server);
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0) {
		perror("prism-memc-rtt: socket");
		return -1;
	}
	// One small request at a time: Nagle would hold it back.
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "prism-memc-rtt: connect %s:%d: %s\n", o->server, o->port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

// One request and its reply; returns 0, 1 for a get that missed, or -errno.
static int request(int fd, const struct opts *o, const char *value, int key, int is_set, char *reply)
{
	char req[256 + 8192];
	size_t got, want;
	int len, rc;

	if (is_set) {
		len = snprintf(req, sizeof(req), "set key:%06d 0 0 %d\r\n%s\r\n", key, o->value_bytes, value);
		want = strlen("STORED\r\n");
	} else {
		len = snprintf(req, sizeof(req), "get key:%06d\r\n", key);
		// VALUE key:NNNNNN 0 <bytes>\r\n<data>\r\nEND\r\n
		want = (size_t)snprintf(NULL, 0, "VALUE key:%06d 0 %d\r\n", key, o->value_bytes) +
		       (size_t)o->value_bytes + strlen("\r\nEND\r\n");
	}
	rc = send_all(fd, req, (size_t)len);
	if (rc)
		return rc;
	rc = read_reply(fd, reply, want, &got);
	if (rc)
		return rc;
	if (is_set)
		return strcmp(reply, "STORED\r\n") == 0 ? 0 : -EPROTO;
	if (strcmp(reply, "END\r\n") == 0)
		return 1;
	return strncmp(reply, "VALUE ", 6) == 0 && got == want ? 0 : -EPROTO;
}

int main(int argc, char **argv)
{
	struct opts o = { .port = 11211, .seconds = 0, .keys = 1000, .value_bytes = 100, .set_every = 10,
			  .timeout_s = 5 };
	struct samples s = { 0 };
	uint64_t start, deadline, elapsed, gets = 0, sets = 0, misses = 0;
	static char reply[REPLY_MAX];
	char *value;
	int c, fd, rc = 0, status = 0;
	FILE *f;

	while ((c = getopt(argc, argv, "s:p:t:o:k:v:r:T:P")) != -1) {
		switch (c) {
		case 's': o.server = optarg; break;
		case 'p': o.port = atoi(optarg); break;
		case 't': o.seconds = atof(optarg); break;
		case 'o': o.out = optarg; break;
		case 'k': o.keys = atoi(optarg); break;
		case 'v': o.value_bytes = atoi(optarg); break;
		case 'r': o.set_every = atoi(optarg); break;
		case 'T': o.timeout_s = atoi(optarg); break;
		case 'P': o.preloaded = 1; break;
		default: return usage("unknown option");
		}
	}
	if (!o.server || !o.out || o.seconds <= 0)
		return usage("-s, -t (> 0) and -o are required");
	if (o.port <= 0 || o.port > 65535 || o.keys <= 0 || o.keys > 999999 || o.value_bytes <= 0 ||
	    o.value_bytes > 8000 || o.set_every <= 0 || o.timeout_s <= 0)
		return usage("a value is out of range (port 1..65535, keys 1..999999, value 1..8000 bytes)");
	fd = connect_to(&o);
	if (fd < 0)
		return 1;
	value = malloc((size_t)o.value_bytes + 1);
	if (!value)
		return 1;
	memset(value, 'x', (size_t)o.value_bytes);
	value[o.value_bytes] = '\0';
	for (int k = 0; k < o.keys && rc == 0 && !o.preloaded; k++)
		rc = request(fd, &o, value, k, 1, reply);
	start = now_ns();
	deadline = start + (uint64_t)(o.seconds * 1e9);
	for (uint64_t i = 0; rc >= 0; i++) {
		int is_set = i % (uint64_t)o.set_every == 0;
		uint64_t t0 = now_ns(), t1;

		if (t0 >= deadline)
			break;
		rc = request(fd, &o, value, (int)(i % (uint64_t)o.keys), is_set, reply);
		t1 = now_ns();
		if (rc < 0)
			break;
		misses += rc == 1;
		is_set ? sets++ : gets++;
		if (push(&s, t1 - t0)) {
			rc = -ENOMEM;
			break;
		}
	}
	elapsed = now_ns() - start;
	if (rc < 0) {
		fprintf(stderr, "prism-memc-rtt: request %zu: %s\n", s.len,
			rc == -EPROTO ? "unexpected reply" : strerror(-rc));
		status = 2;
	}
	close(fd);
	f = fopen(o.out, "w");
	if (!f) {
		fprintf(stderr, "prism-memc-rtt: %s: %s\n", o.out, strerror(errno));
		return 1;
	}
	fprintf(f, "# requests %zu gets %llu sets %llu misses %llu seconds %.6f value_bytes %d keys %d\n", s.len,
		(unsigned long long)gets, (unsigned long long)sets, (unsigned long long)misses,
		(double)elapsed / 1e9, o.value_bytes, o.keys);
	for (size_t i = 0; i < s.len; i++)
		fprintf(f, "%llu\n", (unsigned long long)s.ns[i]);
	if (fclose(f) != 0)
		return 1;
	free(s.ns);
	free(value);
	return status;
}
