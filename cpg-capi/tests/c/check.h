/*
 * What the C test programs share: checks that count, waiting while
 * dispatching, group names, a checksum. Each program prints one line per
 * failure on stderr and a summary on stdout, and exits 1 if anything
 * failed (tests/c_programs.rs runs them).
 */
#ifndef CPG_CAPI_TEST_CHECK_H
#define CPG_CAPI_TEST_CHECK_H

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <corosync/cpg.h>

static int checks;
static int failures;

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		checks++;                                                      \
		if (!(cond)) {                                                 \
			failures++;                                            \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__,          \
				__LINE__, #cond);                              \
			fprintf(stderr, __VA_ARGS__);                          \
			fputc('\n', stderr);                                   \
		}                                                              \
	} while (0)

#define EXPECT_RC(call, want)                                                  \
	do {                                                                   \
		cs_error_t rc_ = (call);                                       \
		checks++;                                                      \
		if (rc_ != (want)) {                                           \
			failures++;                                            \
			fprintf(stderr, "FAIL %s:%d: %s = %d, want %s (%d)\n", \
				__FILE__, __LINE__, #call, (int)rc_, #want,    \
				(int)(want));                                  \
		}                                                              \
	} while (0)

static inline int finish(const char *name)
{
	printf("%s: %d checks, %d failures\n", name, checks, failures);
	fflush(stdout);
	return failures ? 1 : 0;
}

static inline uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* Poll h's fd and dispatch ALL while `expr` is false, at most `ms`. */
#define WAIT_FOR(h, expr, ms)                                                  \
	do {                                                                   \
		uint64_t end_ = now_ms() + (ms);                               \
		while (!(expr) && now_ms() < end_) {                           \
			int fd_;                                               \
			struct pollfd p_;                                      \
			if (cpg_fd_get((h), &fd_) != CS_OK)                    \
				break;                                         \
			p_.fd = fd_;                                           \
			p_.events = POLLIN;                                    \
			p_.revents = 0;                                        \
			if (poll(&p_, 1, 50) > 0 &&                            \
			    cpg_dispatch((h), CS_DISPATCH_ALL) != CS_OK)       \
				break;                                         \
		}                                                              \
	} while (0)

/* A group name of the string's bytes, plus its NUL if `with_nul`. */
static inline struct cpg_name name_of(const char *s, int with_nul)
{
	struct cpg_name n;

	memset(&n, 0, sizeof(n));
	n.length = (uint32_t)strlen(s) + (with_nul ? 1 : 0);
	memcpy(n.value, s, strlen(s));
	return n;
}

static inline int same_name(const struct cpg_name *a, const struct cpg_name *b)
{
	return a->length == b->length && memcmp(a->value, b->value, a->length) == 0;
}

/* FNV-1a, 32 bits. */
static inline uint32_t fnv1a(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= b[i];
		h *= 16777619u;
	}
	return h;
}

#endif
