/*
 * cpgload: one client process of the Corosync side of the side-by-side
 * benchmark (issue 4). It uses Debian's libcpg against a running corosync.
 *
 *   cpgload --size N --guarantee agreed|safe --send copy|zcb --seconds S
 *           --group NAME --expect-members M [--latency] [--json]
 *           [--system LABEL] [--wait-timeout S] [--drain-timeout S]
 *
 * Throughput mode: a dispatch thread in CS_DISPATCH_BLOCKING counts every
 * delivered message (own included, each (sender pid, counter) once), the
 * main thread multicasts as fast as flow control (CS_ERR_TRY_AGAIN) allows
 * for S seconds, then sends an END marker carrying its sent count, and waits
 * (bounded) for the END of every member it started with, so losses are
 * counted exactly: lost = sum over senders of (accepted - delivered).
 *
 * Latency mode: one 64 B message in flight; round trip from just before the
 * send to its own delivery (CLOCK_MONOTONIC), into a log-bucketed HDR-style
 * histogram (2^7 sub-buckets per power of two: < 0.8 % relative error;
 * percentiles report the bucket's highest equivalent value, as HdrHistogram
 * does).
 *
 * The rates are per member: unique application payload messages (and bytes,
 * MB = 10^6) delivered to this process between the moment the group reached
 * M members and the end of the sending window, divided by that window.
 *
 * Every wait is bounded; a watchdog alarm prints an error line and exits.
 *
 * Build: cc -O2 -o cpgload cpgload.c -lcpg -lpthread
 */
#define _GNU_SOURCE
#include <corosync/cpg.h>
#include <corosync/corotypes.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x43504c44u /* "CPLD" */
#define KIND_DATA 0u
#define KIND_END 1u
#define MAX_SENDERS 64

struct msg_hdr {
	uint32_t magic;
	uint32_t pid;
	uint64_t counter;
	uint32_t kind;
	uint32_t pad;
	uint64_t t_send_ns;
	uint64_t total_sent; /* KIND_END: messages this sender had accepted */
};

struct sender {
	uint32_t nodeid, pid;
	uint64_t next_expected; /* counter of the next message in FIFO order */
	uint64_t unique;        /* distinct data messages delivered */
	uint64_t gaps;          /* counters skipped (FIFO holes) */
	uint64_t dups;          /* counters seen again */
	int end_seen;
	uint64_t end_total;
};

/* ---- options ---- */
static size_t opt_size = 64;
static cpg_guarantee_t opt_guarantee = CPG_TYPE_AGREED;
static const char *opt_guarantee_s = "agreed";
static int opt_zcb = 0;
static double opt_seconds = 3.0;
static const char *opt_group = "cpgload";
static unsigned opt_members = 1;
static int opt_latency = 0;
static int opt_json = 0;
static const char *opt_system = "corosync";
static double opt_wait_timeout = 30.0;
static double opt_drain_timeout = 10.0;

/* ---- shared state (dispatch thread writes, main thread reads) ---- */
static cpg_handle_t handle;
static uint32_t my_pid, my_nodeid;
static struct sender senders[MAX_SENDERS];
static unsigned n_senders;
static uint64_t delivered_msgs;  /* unique data messages, atomically read */
static uint64_t delivered_bytes; /* their payload bytes */
static uint64_t foreign_msgs;    /* messages without our header */
static unsigned cur_members;     /* size of the group after the last confchg */
static uint32_t start_pids[MAX_SENDERS]; /* members when the group reached M */
static unsigned n_start_pids;
static int start_pids_set;
static uint64_t confchg_count;
static cs_error_t dispatch_rc = CS_OK;
static volatile int dispatch_done;

/* latency mode */
static uint64_t await_counter = UINT64_MAX;
static uint64_t await_recv_ns;
static int await_done;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(long ns)
{
	struct timespec ts = { ns / 1000000000L, ns % 1000000000L };
	nanosleep(&ts, NULL);
}

/* ---- HDR-style histogram: values in ns ---- */
#define SUB_BITS 7
#define SUB_HALF (1u << SUB_BITS)           /* 128 */
#define SUB_COUNT (2u * SUB_HALF)           /* 256 */
#define HIST_BUCKETS (SUB_COUNT + 56u * SUB_HALF)
static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_total, hist_min = UINT64_MAX, hist_max;
static long double hist_sum;

static unsigned hist_index(uint64_t v)
{
	if (v < SUB_COUNT)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= 8 */
	unsigned shift = msb - SUB_BITS;                    /* >= 1 */
	uint64_t top = v >> shift;                          /* [128, 256) */
	return SUB_COUNT + (shift - 1u) * SUB_HALF + (unsigned)(top - SUB_HALF);
}

/* highest value that maps to bucket i */
static uint64_t hist_highest(unsigned i)
{
	if (i < SUB_COUNT)
		return i;
	unsigned shift = (i - SUB_COUNT) / SUB_HALF + 1u;
	uint64_t top = (uint64_t)((i - SUB_COUNT) % SUB_HALF) + SUB_HALF;
	return ((top + 1u) << shift) - 1u;
}

static void hist_record(uint64_t v)
{
	unsigned i = hist_index(v);
	if (i >= HIST_BUCKETS)
		i = HIST_BUCKETS - 1;
	hist[i]++;
	hist_total++;
	hist_sum += (long double)v;
	if (v < hist_min)
		hist_min = v;
	if (v > hist_max)
		hist_max = v;
}

static uint64_t hist_percentile(double p)
{
	if (hist_total == 0)
		return 0;
	uint64_t want = (uint64_t)((p / 100.0) * (double)hist_total + 0.999999);
	if (want < 1)
		want = 1;
	uint64_t acc = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		acc += hist[i];
		if (acc >= want) {
			uint64_t h = hist_highest(i);
			return h > hist_max ? hist_max : h;
		}
	}
	return hist_max;
}

/* ---- callbacks ---- */
static struct sender *sender_get(uint32_t nodeid, uint32_t pid)
{
	for (unsigned i = 0; i < n_senders; i++)
		if (senders[i].pid == pid && senders[i].nodeid == nodeid)
			return &senders[i];
	if (n_senders == MAX_SENDERS)
		return NULL;
	struct sender *s = &senders[n_senders];
	memset(s, 0, sizeof *s);
	s->nodeid = nodeid;
	s->pid = pid;
	__atomic_store_n(&n_senders, n_senders + 1, __ATOMIC_RELEASE);
	return s;
}

static void deliver_cb(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid, uint32_t pid,
		       void *msg, size_t len)
{
	(void)h;
	(void)g;
	struct msg_hdr hd;
	if (len < sizeof hd) {
		foreign_msgs++;
		return;
	}
	memcpy(&hd, msg, sizeof hd);
	if (hd.magic != MAGIC) {
		foreign_msgs++;
		return;
	}
	struct sender *s = sender_get(nodeid, pid);
	if (s == NULL) {
		foreign_msgs++;
		return;
	}
	if (hd.kind == KIND_END) {
		s->end_total = hd.total_sent;
		__atomic_store_n(&s->end_seen, 1, __ATOMIC_RELEASE);
		return;
	}
	if (hd.counter < s->next_expected) {
		s->dups++;
		return;
	}
	if (hd.counter > s->next_expected)
		s->gaps += hd.counter - s->next_expected;
	s->next_expected = hd.counter + 1;
	s->unique++;
	__atomic_store_n(&delivered_msgs, delivered_msgs + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&delivered_bytes, delivered_bytes + len, __ATOMIC_RELAXED);
	if (pid == my_pid && nodeid == my_nodeid && hd.counter == await_counter) {
		await_recv_ns = now_ns();
		await_done = 1;
	}
}

static void confchg_cb(cpg_handle_t h, const struct cpg_name *g,
		       const struct cpg_address *members, size_t n_members,
		       const struct cpg_address *left, size_t n_left,
		       const struct cpg_address *joined, size_t n_joined)
{
	(void)h;
	(void)g;
	(void)left;
	(void)n_left;
	(void)joined;
	(void)n_joined;
	if (!start_pids_set && n_members >= opt_members) {
		n_start_pids = 0;
		for (size_t i = 0; i < n_members && i < MAX_SENDERS; i++)
			start_pids[n_start_pids++] = members[i].pid;
		__atomic_store_n(&start_pids_set, 1, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&cur_members, (unsigned)n_members, __ATOMIC_RELEASE);
	__atomic_add_fetch(&confchg_count, 1, __ATOMIC_RELAXED);
}

static void *dispatch_thread(void *arg)
{
	(void)arg;
	dispatch_rc = cpg_dispatch(handle, CS_DISPATCH_BLOCKING);
	dispatch_done = 1;
	return NULL;
}

/* ---- output ---- */
static void print_error(const char *what, int rc)
{
	printf("{\"system\":\"%s\",\"members\":%u,\"size\":%zu,\"guarantee\":\"%s\",\"send\":\"%s\","
	       "\"seconds\":%g,\"latency\":%s,\"error\":\"%s (cs_error %d)\"}\n",
	       opt_system, opt_members, opt_size, opt_guarantee_s, opt_zcb ? "zcb" : "copy",
	       opt_seconds, opt_latency ? "true" : "false", what, rc);
	fflush(stdout);
}

static void watchdog(int sig)
{
	(void)sig;
	static const char m[] = "{\"error\":\"cpgload watchdog: run exceeded its time bound\"}\n";
	ssize_t w = write(1, m, sizeof m - 1);
	(void)w;
	_exit(3);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: cpgload --size N --guarantee agreed|safe --send copy|zcb --seconds S\n"
		"               --group NAME --expect-members M [--latency] [--json]\n"
		"               [--system LABEL] [--wait-timeout S] [--drain-timeout S]\n");
	exit(2);
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;
#define NEED() do { if (v == NULL) usage(); i++; } while (0)
		if (!strcmp(a, "--size")) {
			NEED();
			opt_size = strtoull(v, NULL, 0);
		} else if (!strcmp(a, "--guarantee")) {
			NEED();
			if (!strcmp(v, "agreed"))
				opt_guarantee = CPG_TYPE_AGREED;
			else if (!strcmp(v, "safe"))
				opt_guarantee = CPG_TYPE_SAFE;
			else
				usage();
			opt_guarantee_s = v;
		} else if (!strcmp(a, "--send")) {
			NEED();
			if (!strcmp(v, "copy"))
				opt_zcb = 0;
			else if (!strcmp(v, "zcb"))
				opt_zcb = 1;
			else
				usage();
		} else if (!strcmp(a, "--seconds")) {
			NEED();
			opt_seconds = atof(v);
		} else if (!strcmp(a, "--group")) {
			NEED();
			opt_group = v;
		} else if (!strcmp(a, "--expect-members")) {
			NEED();
			opt_members = (unsigned)atoi(v);
		} else if (!strcmp(a, "--system")) {
			NEED();
			opt_system = v;
		} else if (!strcmp(a, "--wait-timeout")) {
			NEED();
			opt_wait_timeout = atof(v);
		} else if (!strcmp(a, "--drain-timeout")) {
			NEED();
			opt_drain_timeout = atof(v);
		} else if (!strcmp(a, "--latency")) {
			opt_latency = 1;
		} else if (!strcmp(a, "--json")) {
			opt_json = 1;
		} else {
			usage();
		}
#undef NEED
	}
	if (opt_members < 1 || opt_members > MAX_SENDERS || opt_seconds <= 0 || strlen(opt_group) > 128)
		usage();
	if (opt_latency && opt_size != 64)
		opt_size = 64; /* the latency run is defined on 64 B messages */
	if (opt_size < sizeof(struct msg_hdr))
		opt_size = sizeof(struct msg_hdr);
}

/* ---- sending ---- */
static uint64_t try_again_count, interrupt_count, send_errors;
static int last_send_error = 0; /* cs_error_t of the last failed send, 0 if none */
static void *zcb_buf;
static char *copy_buf;

/* Send one message; retry TRY_AGAIN until `deadline` (ns). 1 = accepted. */
static int send_one(uint32_t kind, uint64_t counter, uint64_t total_sent, size_t len, uint64_t deadline,
		    int force_copy)
{
	struct msg_hdr hd = { MAGIC, my_pid, counter, kind, 0, 0, total_sent };
	int use_zcb = opt_zcb && !force_copy;
	char *buf = use_zcb ? (char *)zcb_buf : copy_buf;
	unsigned spins = 0;
	for (;;) {
		hd.t_send_ns = now_ns();
		memcpy(buf, &hd, sizeof hd);
		cs_error_t rc;
		if (use_zcb) {
			rc = cpg_zcb_mcast_joined(handle, opt_guarantee, buf, len);
		} else {
			struct iovec iov = { buf, len };
			rc = cpg_mcast_joined(handle, opt_guarantee, &iov, 1);
		}
		if (rc == CS_OK)
			return 1;
		if (rc == CS_ERR_TRY_AGAIN || rc == CS_ERR_INTERRUPT) {
			if (rc == CS_ERR_TRY_AGAIN)
				try_again_count++;
			else
				interrupt_count++;
			if (now_ns() >= deadline)
				return 0;
			if (++spins < 32)
				sched_yield();
			else
				sleep_ns(20000);
			continue;
		}
		send_errors++;
		last_send_error = (int)rc;
		return 0;
	}
}

static int all_ends_seen(void)
{
	for (unsigned i = 0; i < n_start_pids; i++) {
		int found = 0;
		for (unsigned j = 0; j < __atomic_load_n(&n_senders, __ATOMIC_ACQUIRE); j++)
			if (senders[j].pid == start_pids[i] && __atomic_load_n(&senders[j].end_seen, __ATOMIC_ACQUIRE))
				found = 1;
		if (!found)
			return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	my_pid = (uint32_t)getpid();
	signal(SIGALRM, watchdog);
	alarm((unsigned)(opt_wait_timeout + opt_seconds + opt_drain_timeout + 30.0));
	setvbuf(stdout, NULL, _IOLBF, 0);

	cpg_model_v1_data_t model = { 0 };
	model.model = CPG_MODEL_V1;
	model.cpg_deliver_fn = deliver_cb;
	model.cpg_confchg_fn = confchg_cb;
	model.flags = 0;

	cs_error_t rc;
	uint64_t t_bound = now_ns() + (uint64_t)(opt_wait_timeout * 1e9);
	while ((rc = cpg_model_initialize(&handle, CPG_MODEL_V1, (cpg_model_data_t *)&model, NULL)) != CS_OK) {
		if ((rc != CS_ERR_TRY_AGAIN && rc != CS_ERR_LIBRARY) || now_ns() > t_bound) {
			print_error("cpg_model_initialize", rc);
			return 2;
		}
		sleep_ns(50000000);
	}
	if ((rc = cpg_local_get(handle, &my_nodeid)) != CS_OK) {
		print_error("cpg_local_get", rc);
		return 2;
	}
	copy_buf = calloc(1, opt_size);
	if (copy_buf == NULL) {
		print_error("calloc", 0);
		return 2;
	}
	if (opt_zcb) {
		rc = cpg_zcb_alloc(handle, opt_size, &zcb_buf);
		if (rc != CS_OK || zcb_buf == NULL) {
			print_error("cpg_zcb_alloc", rc);
			return 2;
		}
		memset(zcb_buf, 0, opt_size);
	}

	struct cpg_name group;
	group.length = (uint32_t)strlen(opt_group);
	memcpy(group.value, opt_group, group.length);
	while ((rc = cpg_join(handle, &group)) != CS_OK) {
		if (rc != CS_ERR_TRY_AGAIN || now_ns() > t_bound) {
			print_error("cpg_join", rc);
			return 2;
		}
		sleep_ns(10000000);
	}

	/* our own sender entry exists from the start, so that messages of ours
	 * that never come back are counted as lost even if none does */
	sender_get(my_nodeid, my_pid);

	int fd = -1;
	pthread_t th;
	if (opt_latency) {
		if ((rc = cpg_fd_get(handle, &fd)) != CS_OK) {
			print_error("cpg_fd_get", rc);
			return 2;
		}
	} else if (pthread_create(&th, NULL, dispatch_thread, NULL) != 0) {
		print_error("pthread_create", 0);
		return 2;
	}

	/* wait (bounded) until the group has M members */
	while (!__atomic_load_n(&start_pids_set, __ATOMIC_ACQUIRE)) {
		if (now_ns() > t_bound) {
			print_error("timed out waiting for the group to reach --expect-members", 0);
			_exit(2);
		}
		if (opt_latency) {
			struct pollfd p = { fd, POLLIN, 0 };
			if (poll(&p, 1, 10) > 0)
				cpg_dispatch(handle, CS_DISPATCH_ALL);
		} else {
			sleep_ns(1000000);
		}
	}

	uint64_t counter = 0, accepted = 0, latency_lost = 0;
	uint64_t m0 = __atomic_load_n(&delivered_msgs, __ATOMIC_RELAXED);
	uint64_t b0 = __atomic_load_n(&delivered_bytes, __ATOMIC_RELAXED);
	uint64_t t0 = now_ns();
	uint64_t t_end = t0 + (uint64_t)(opt_seconds * 1e9);
	uint64_t m1, b1, t1;
	int drained = 1;

	if (opt_latency) {
		const unsigned warmup = 100;
		uint64_t n = 0;
		for (;;) {
			uint64_t ts = now_ns();
			if (ts >= t_end)
				break;
			await_counter = counter;
			await_done = 0;
			if (!send_one(KIND_DATA, counter, 0, opt_size, t_end, 0))
				break;
			counter++;
			accepted++;
			uint64_t bound = now_ns() + 5000000000ull;
			while (!await_done) {
				struct pollfd p = { fd, POLLIN, 0 };
				int pr = poll(&p, 1, 100);
				if (pr > 0) {
					rc = cpg_dispatch(handle, CS_DISPATCH_ALL);
					if (rc != CS_OK && rc != CS_ERR_TRY_AGAIN) {
						dispatch_rc = rc;
						break;
					}
				}
				if (now_ns() > bound)
					break;
			}
			if (!await_done) {
				latency_lost++;
				if (dispatch_rc != CS_OK)
					break;
				continue;
			}
			if (n++ >= warmup)
				hist_record(await_recv_ns - ts);
		}
		t1 = now_ns();
		m1 = delivered_msgs;
		b1 = delivered_bytes;
	} else {
		for (;;) {
			if (now_ns() >= t_end)
				break;
			if (!send_one(KIND_DATA, counter, 0, opt_size, t_end, 0)) {
				if (send_errors > 1000)
					break;
				continue;
			}
			counter++;
			accepted++;
		}
		t1 = now_ns();
		m1 = __atomic_load_n(&delivered_msgs, __ATOMIC_RELAXED);
		b1 = __atomic_load_n(&delivered_bytes, __ATOMIC_RELAXED);
		/* END marker (always through the copying path, small) and a bounded drain */
		uint64_t drain_bound = now_ns() + (uint64_t)(opt_drain_timeout * 1e9);
		send_one(KIND_END, counter, accepted, sizeof(struct msg_hdr), drain_bound, 1);
		while (!all_ends_seen() && now_ns() < drain_bound && !dispatch_done)
			sleep_ns(1000000);
		drained = all_ends_seen();
	}

	/* losses: per sender, accepted (from its END, or own count) minus delivered */
	uint64_t lost = 0, gaps = 0, dups = 0;
	unsigned ends_missing = 0;
	for (unsigned i = 0; i < n_senders; i++) {
		struct sender *s = &senders[i];
		gaps += s->gaps;
		dups += s->dups;
		uint64_t expect;
		if (s->pid == my_pid && s->nodeid == my_nodeid)
			expect = accepted;
		else if (s->end_seen)
			expect = s->end_total;
		else {
			expect = s->next_expected; /* at least the highest counter seen */
			if (!opt_latency)
				ends_missing++;
		}
		if (expect > s->unique)
			lost += expect - s->unique;
	}
	if (opt_latency)
		lost = latency_lost > lost ? latency_lost : lost;

	double secs = (double)(t1 - t0) / 1e9;
	double msgs = (double)(m1 - m0);
	double bytes = (double)(b1 - b0);
	char lat[256];
	if (opt_latency && hist_total > 0)
		snprintf(lat, sizeof lat,
			 "{\"p50\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"min\":%.2f,\"max\":%.2f,\"mean\":%.2f,\"samples\":%" PRIu64 "}",
			 hist_percentile(50.0) / 1e3, hist_percentile(99.0) / 1e3, hist_percentile(99.9) / 1e3,
			 hist_min / 1e3, hist_max / 1e3, (double)(hist_sum / hist_total) / 1e3, hist_total);
	else
		snprintf(lat, sizeof lat, "null");

	printf("{\"system\":\"%s\",\"members\":%u,\"size\":%zu,\"guarantee\":\"%s\",\"send\":\"%s\","
	       "\"seconds\":%.3f,\"msgs_per_sec\":%.1f,\"mb_per_sec\":%.3f,\"delivered\":%.0f,\"lost\":%" PRIu64 ","
	       "\"latency_us\":%s,\"settings\":{\"pid\":%u,\"sent\":%" PRIu64 ",\"try_again\":%" PRIu64
	       ",\"interrupt\":%" PRIu64 ",\"send_errors\":%" PRIu64 ",\"last_send_error\":%d,\"gaps\":%" PRIu64
	       ",\"dups\":%" PRIu64 ",\"ends_missing\":%u,\"drained\":%s,\"foreign\":%" PRIu64
	       ",\"confchgs\":%" PRIu64 ",\"start_members\":%u,\"dispatch_rc\":%d}}\n",
	       opt_system, opt_members, opt_size, opt_guarantee_s, opt_zcb ? "zcb" : "copy", secs,
	       secs > 0 ? msgs / secs : 0.0, secs > 0 ? bytes / secs / 1e6 : 0.0, msgs, lost, lat, my_pid,
	       accepted, try_again_count, interrupt_count, send_errors, last_send_error, gaps, dups,
	       ends_missing, drained ? "true" : "false", foreign_msgs, confchg_count, n_start_pids,
	       (int)dispatch_rc);
	if (!opt_json)
		fprintf(stderr, "%s: %u members, %zu B %s %s: %.0f msgs/s %.1f MB/s per member, lost %" PRIu64 "\n",
			opt_system, opt_members, opt_size, opt_guarantee_s, opt_zcb ? "zcb" : "copy",
			secs > 0 ? msgs / secs : 0.0, secs > 0 ? bytes / secs / 1e6 : 0.0, lost);
	fflush(stdout);

	/* Stay in the group until every member has sent its END (bounded above), so
	 * nobody's tail is cut by a PROCDOWN; then finalize and stop the thread. */
	if (opt_zcb)
		cpg_zcb_free(handle, zcb_buf);
	cpg_finalize(handle);
	if (!opt_latency) {
		/* cpg_finalize does not always wake a thread blocked in
		 * CS_DISPATCH_BLOCKING: give it a moment, then leave anyway */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (pthread_timedjoin_np(th, NULL, &ts) != 0)
			_exit(0);
	}
	return 0;
}
