/*
 * corotypes.h: the status codes and small shared types of the Corosync
 * client API, as cpg-rs's libcpg.so.4 uses them.
 *
 * Written for cpg-rs (MIT OR Apache-2.0). Every type, value and layout
 * here is ABI-identical to Corosync 3's <corosync/corotypes.h>, so a
 * program built against either header runs against either library
 * (cpg-capi/tests/c/abi.c checks it with _Static_assert). The include
 * guard is Corosync's, so the two headers never both apply in one
 * translation unit.
 */
#ifndef COROTYPES_H_DEFINED
#define COROTYPES_H_DEFINED

#include <stdint.h>
#include <errno.h>
#include <time.h>
#include <sys/time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Time in nanoseconds. */
typedef int64_t cs_time_t;

#define CS_FALSE 0
#define CS_TRUE !CS_FALSE
#define CS_MAX_NAME_LENGTH 256
#define CS_TIME_END ((cs_time_t)0x7FFFFFFFFFFFFFFFULL)
#define CS_MAX(x, y) (((x) > (y)) ? (x) : (y))

/* printf formats for node ids and ring ids (<inttypes.h> supplies PRI*). */
#define CS_PRI_NODE_ID "%" PRIu32
#define CS_PRI_NODE_ID_PADDED "%10" PRIu32
#define CS_PRI_RING_ID_SEQ "%" PRIx64
#define CS_PRI_RING_ID "%" PRIx32 ".%" PRIx64

typedef struct {
	uint16_t length;
	uint8_t value[CS_MAX_NAME_LENGTH];
} cs_name_t;

typedef struct {
	char releaseCode;
	unsigned char majorVersion;
	unsigned char minorVersion;
} cs_version_t;

/* How cpg_dispatch takes events. */
typedef enum {
	CS_DISPATCH_ONE = 1,             /* wait for one event, run it, return */
	CS_DISPATCH_ALL = 2,             /* run every pending event, never wait */
	CS_DISPATCH_BLOCKING = 3,        /* run events until finalize or error */
	CS_DISPATCH_ONE_NONBLOCKING = 4  /* one pending event, or CS_ERR_TRY_AGAIN */
} cs_dispatch_flags_t;

#define CS_TRACK_CURRENT 0x01
#define CS_TRACK_CHANGES 0x02
#define CS_TRACK_CHANGES_ONLY 0x04

/* Status codes. Success is 1, not 0. */
typedef enum {
	CS_OK = 1,
	CS_ERR_LIBRARY = 2,              /* no daemon, the daemon went away, or evicted */
	CS_ERR_VERSION = 3,
	CS_ERR_INIT = 4,
	CS_ERR_TIMEOUT = 5,
	CS_ERR_TRY_AGAIN = 6,            /* flow control, pool or ring full: retry */
	CS_ERR_INVALID_PARAM = 7,
	CS_ERR_NO_MEMORY = 8,
	CS_ERR_BAD_HANDLE = 9,           /* unknown, finalized or inherited handle */
	CS_ERR_BUSY = 10,
	CS_ERR_ACCESS = 11,
	CS_ERR_NOT_EXIST = 12,           /* not joined, or another group */
	CS_ERR_NAME_TOO_LONG = 13,       /* a group name over 128 bytes */
	CS_ERR_EXIST = 14,
	CS_ERR_NO_SPACE = 15,            /* a caller's array is too small */
	CS_ERR_INTERRUPT = 16,
	CS_ERR_NAME_NOT_FOUND = 17,
	CS_ERR_NO_RESOURCES = 18,
	CS_ERR_NOT_SUPPORTED = 19,
	CS_ERR_BAD_OPERATION = 20,
	CS_ERR_FAILED_OPERATION = 21,
	CS_ERR_MESSAGE_ERROR = 22,
	CS_ERR_QUEUE_FULL = 23,
	CS_ERR_QUEUE_NOT_AVAILABLE = 24,
	CS_ERR_BAD_FLAGS = 25,
	CS_ERR_TOO_BIG = 26,             /* above the largest message or buffer */
	CS_ERR_NO_SECTIONS = 27,         /* an iteration's end */
	CS_ERR_CONTEXT_NOT_FOUND = 28,
	CS_ERR_TOO_MANY_GROUPS = 30,
	CS_ERR_SECURITY = 100
} cs_error_t;

#define CS_IPC_TIMEOUT_MS -1

#define CS_TIME_MS_IN_SEC 1000ULL
#define CS_TIME_US_IN_SEC 1000000ULL
#define CS_TIME_NS_IN_SEC 1000000000ULL
#define CS_TIME_US_IN_MSEC 1000ULL
#define CS_TIME_NS_IN_MSEC 1000000ULL
#define CS_TIME_NS_IN_USEC 1000ULL

/* Monotonic time in nanoseconds. */
static inline uint64_t cs_timestamp_get(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * CS_TIME_NS_IN_SEC + (uint64_t)now.tv_nsec;
}

/*
 * Error helpers of Corosync's libcorosync_common (not of libcpg): declared
 * for source compatibility; link -lcorosync_common to use them.
 */
cs_error_t qb_to_cs_error(int result);
const char *cs_strerror(cs_error_t err);
cs_error_t hdb_error_to_cs(int res);

#ifdef __cplusplus
}
#endif

#endif /* COROTYPES_H_DEFINED */
