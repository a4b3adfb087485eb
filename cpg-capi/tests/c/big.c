/*
 * Large messages: cpg_max_atomic_msgsize_get answers the daemon's largest
 * message (64 MiB by default), a message of exactly that size arrives as
 * one callback with every byte right, one byte more is CS_ERR_TOO_BIG,
 * and messages in many iovecs around the ring's record size come whole.
 */
#include <string.h>
#include "check.h"

static int delivers;
static size_t last_len;
static uint32_t last_sum;

static void deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid,
		    uint32_t pid, void *msg, size_t len)
{
	(void)h;
	(void)g;
	(void)nodeid;
	(void)pid;
	delivers++;
	last_len = len;
	last_sum = fnv1a(msg, len);
	/* msg is writable, as in Corosync (programs fix byte order in place) */
	memset(msg, 0x5a, len);
}

static void fill(unsigned char *p, size_t n, uint32_t seed)
{
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (unsigned char)(seed >> 16);
	}
}

int main(void)
{
	cpg_callbacks_t cb = { deliver, NULL };
	struct cpg_name g = name_of("big", 0);
	cpg_handle_t h;
	uint32_t max = 0;
	size_t sizes[] = { 1, 262136, 262144, 262145, 1047552, 1047553, 3u << 20 };
	unsigned char *buf;
	size_t i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	EXPECT_RC(cpg_initialize(&h, &cb), CS_OK);
	EXPECT_RC(cpg_max_atomic_msgsize_get(h, &max), CS_OK);
	CHECK(max == 64u << 20, "max %u", max);
	buf = malloc((size_t)max + 1);
	if (!buf)
		return 2;
	fill(buf, (size_t)max + 1, 7);
	EXPECT_RC(cpg_join(h, &g), CS_OK);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		/* in three iovecs */
		size_t a = sizes[i] / 3, b = sizes[i] / 3;
		struct iovec iov[3] = { { buf, a }, { buf + a, b }, { buf + a + b, sizes[i] - a - b } };
		int d0 = delivers;

		EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, iov, 3), CS_OK);
		WAIT_FOR(h, delivers > d0, 30000);
		CHECK(delivers == d0 + 1 && last_len == sizes[i] && last_sum == fnv1a(buf, sizes[i]),
		      "size %zu: %d callbacks, len %zu", sizes[i], delivers - d0, last_len);
	}
	{
		struct iovec iov = { buf, max };
		int d0 = delivers;
		uint64_t t = now_ms();

		EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1), CS_OK);
		WAIT_FOR(h, delivers > d0, 120000);
		CHECK(delivers == d0 + 1 && last_len == max && last_sum == fnv1a(buf, max),
		      "the largest message: %d callbacks, len %zu", delivers - d0, last_len);
		printf("64 MiB message delivered in %" PRIu64 " ms\n", now_ms() - t);
		iov.iov_len = (size_t)max + 1;
		EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1), CS_ERR_TOO_BIG);
	}
	EXPECT_RC(cpg_finalize(h), CS_OK);
	free(buf);
	return finish("big");
}
