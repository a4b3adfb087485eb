/*
 * Every function of the CPG API and its error paths, in one process on a
 * one-node cpgd ($CPGD_SOCKET): bad input gets its documented code and
 * never a crash (NULL pointers, names over 128 bytes, unknown enum values,
 * garbage, stale and finalized handles, handles inherited by fork()),
 * group names whose length counts a trailing NUL are distinct, the
 * capacity rule of cpg_membership_get, zero-copy buffers the caller keeps
 * using, iterations, contexts, callbacks that call anything (finalize of
 * their own handle included).
 */
#include "check.h"

#include <sys/types.h>
#include <sys/wait.h>

/* What the callbacks saw. */
static int delivers, confchgs;
static char last_msg[256];
static size_t last_len;
static uint32_t last_nodeid, last_pid;
static struct cpg_name last_group;
static struct cpg_address last_left[8], last_joined[8];
static size_t last_members, last_nleft, last_njoined;

static void deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid,
		    uint32_t pid, void *msg, size_t len)
{
	(void)h;
	delivers++;
	last_group = *g;
	last_nodeid = nodeid;
	last_pid = pid;
	last_len = len;
	memcpy(last_msg, msg, len < sizeof(last_msg) ? len : sizeof(last_msg));
	/* the message is writable, as Corosync's */
	if (len > 0)
		((char *)msg)[0] ^= 0x20;
}

static void confchg(cpg_handle_t h, const struct cpg_name *g,
		    const struct cpg_address *m, size_t nm,
		    const struct cpg_address *l, size_t nl,
		    const struct cpg_address *j, size_t nj)
{
	(void)h;
	(void)m;
	confchgs++;
	last_group = *g;
	last_members = nm;
	last_nleft = nl < 8 ? nl : 8;
	last_njoined = nj < 8 ? nj : 8;
	memcpy(last_left, l, last_nleft * sizeof(*l));
	memcpy(last_joined, j, last_njoined * sizeof(*j));
}

static cpg_callbacks_t callbacks = { deliver, confchg };

static cpg_handle_t open_handle(void)
{
	cpg_handle_t h = 0;

	EXPECT_RC(cpg_initialize(&h, &callbacks), CS_OK);
	return h;
}

/* Every function taking a cpg handle answers `want` for `h`. */
static void every_call_is(cpg_handle_t h, cs_error_t want)
{
	struct cpg_name g = name_of("any", 0);
	struct cpg_address list[4];
	int n = 4, fd;
	unsigned int id;
	uint32_t sz;
	void *ctx, *buf;
	cpg_flow_control_state_t fc;
	cpg_iteration_handle_t it;
	struct iovec iov = { (void *)"x", 1 };

	EXPECT_RC(cpg_fd_get(h, &fd), want);
	EXPECT_RC(cpg_max_atomic_msgsize_get(h, &sz), want);
	EXPECT_RC(cpg_context_get(h, &ctx), want);
	EXPECT_RC(cpg_context_set(h, NULL), want);
	EXPECT_RC(cpg_dispatch(h, CS_DISPATCH_ALL), want);
	EXPECT_RC(cpg_dispatch(h, CS_DISPATCH_ONE_NONBLOCKING), want);
	EXPECT_RC(cpg_join(h, &g), want);
	EXPECT_RC(cpg_leave(h, &g), want);
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1), want);
	EXPECT_RC(cpg_membership_get(h, &g, list, &n), want);
	EXPECT_RC(cpg_local_get(h, &id), want);
	EXPECT_RC(cpg_flow_control_state_get(h, &fc), want);
	EXPECT_RC(cpg_zcb_alloc(h, 4096, &buf), want);
	EXPECT_RC(cpg_zcb_free(h, &n), want);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, &n, 1), want);
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_NAME_ONLY, NULL, &it), want);
	EXPECT_RC(cpg_finalize(h), want);
}

static void no_daemon(void)
{
	const char *was = getenv("CPGD_SOCKET");
	char *keep = was ? strdup(was) : NULL;
	cpg_handle_t h;

	setenv("CPGD_SOCKET", "/nonexistent/cpgd.sock", 1);
	EXPECT_RC(cpg_initialize(&h, NULL), CS_ERR_LIBRARY);
	EXPECT_RC(cpg_model_initialize(&h, CPG_MODEL_V1, NULL, NULL), CS_ERR_LIBRARY);
	if (keep) {
		setenv("CPGD_SOCKET", keep, 1);
		free(keep);
	} else {
		unsetenv("CPGD_SOCKET");
	}
}

static void initialize_errors(void)
{
	cpg_handle_t h;
	cpg_model_v1_data_t md = { CPG_MODEL_V1, deliver, confchg, NULL, 0 };
	void *ctx = NULL;

	EXPECT_RC(cpg_initialize(NULL, &callbacks), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_model_initialize(NULL, CPG_MODEL_V1, NULL, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_model_initialize(&h, (cpg_model_t)0, NULL, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_model_initialize(&h, (cpg_model_t)2, (cpg_model_data_t *)&md, NULL),
		  CS_ERR_INVALID_PARAM);
	md.flags = 0x02;
	EXPECT_RC(cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&md, NULL),
		  CS_ERR_INVALID_PARAM);
	md.flags = 0x80000001u;
	EXPECT_RC(cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&md, NULL),
		  CS_ERR_INVALID_PARAM);
	/* NULL model data: no callbacks; the context is kept */
	EXPECT_RC(cpg_model_initialize(&h, CPG_MODEL_V1, NULL, (void *)&md), CS_OK);
	EXPECT_RC(cpg_context_get(h, &ctx), CS_OK);
	CHECK(ctx == (void *)&md, "context %p", ctx);
	EXPECT_RC(cpg_finalize(h), CS_OK);
	/* cpg_initialize with NULL callbacks, as corosync-cpgtool does */
	EXPECT_RC(cpg_initialize(&h, NULL), CS_OK);
	EXPECT_RC(cpg_finalize(h), CS_OK);
}

static void bad_handles(void)
{
	cpg_handle_t h = open_handle();
	cpg_handle_t forged = h ^ 0x100000000ull;  /* another check value */
	struct cpg_iteration_description_t d;
	cpg_iteration_handle_t it;

	every_call_is(0, CS_ERR_BAD_HANDLE);
	every_call_is(~0ull, CS_ERR_BAD_HANDLE);
	every_call_is(0xdeadbeefcafef00dull, CS_ERR_BAD_HANDLE);
	every_call_is(forged, CS_ERR_BAD_HANDLE);
	every_call_is(h + 1000, CS_ERR_BAD_HANDLE);
	/* an iteration handle is no cpg handle, and the other way round */
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_NAME_ONLY, NULL, &it), CS_OK);
	every_call_is(it, CS_ERR_BAD_HANDLE);
	EXPECT_RC(cpg_iteration_next(h, &d), CS_ERR_BAD_HANDLE);
	EXPECT_RC(cpg_iteration_finalize(h), CS_ERR_BAD_HANDLE);
	EXPECT_RC(cpg_iteration_next(0, &d), CS_ERR_BAD_HANDLE);
	EXPECT_RC(cpg_iteration_finalize(~0ull), CS_ERR_BAD_HANDLE);
	EXPECT_RC(cpg_finalize(h), CS_OK);
	/* finalized: BAD_HANDLE everywhere, its iterations gone with it */
	every_call_is(h, CS_ERR_BAD_HANDLE);
	EXPECT_RC(cpg_iteration_next(it, &d), CS_ERR_BAD_HANDLE);
	EXPECT_RC(cpg_iteration_finalize(it), CS_ERR_BAD_HANDLE);
	/* a new handle never takes the value of a finalized one */
	{
		cpg_handle_t h2 = open_handle();
		CHECK(h2 != h, "reused value %" PRIx64, h2);
		every_call_is(h, CS_ERR_BAD_HANDLE);
		EXPECT_RC(cpg_finalize(h2), CS_OK);
	}
}

static void bad_input(cpg_handle_t h)
{
	struct cpg_name g = name_of("input", 0), lng;
	struct cpg_address list[4];
	struct cpg_iteration_description_t d;
	cpg_iteration_handle_t it;
	struct iovec iov[2] = { { NULL, 3 }, { (void *)"ok", 2 } };
	int n = 4;

	/* NULL pointers */
	EXPECT_RC(cpg_fd_get(h, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_max_atomic_msgsize_get(h, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_context_get(h, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_join(h, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_leave(h, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, NULL, 1), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, iov, 2), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_membership_get(h, NULL, list, &n), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_membership_get(h, &g, NULL, &n), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_membership_get(h, &g, list, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_local_get(h, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_flow_control_state_get(h, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_alloc(h, 100, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_free(h, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_free(h, list), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, NULL, 0), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, list, 4), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_ALL, NULL, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_ALL, NULL, &it), CS_OK);
	EXPECT_RC(cpg_iteration_next(it, NULL), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_iteration_finalize(it), CS_OK);
	/* names over 128 bytes */
	lng = name_of("long", 0);
	lng.length = 129;
	EXPECT_RC(cpg_join(h, &lng), CS_ERR_NAME_TOO_LONG);
	EXPECT_RC(cpg_leave(h, &lng), CS_ERR_NAME_TOO_LONG);
	EXPECT_RC(cpg_membership_get(h, &lng, list, &n), CS_ERR_NAME_TOO_LONG);
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_ONE_GROUP, &lng, &it),
		  CS_ERR_NAME_TOO_LONG);
	lng.length = 0xffffffffu;
	EXPECT_RC(cpg_join(h, &lng), CS_ERR_NAME_TOO_LONG);
	/* 128 bytes is a name */
	lng.length = 128;
	memset(lng.value, 'L', 128);
	n = 4;
	EXPECT_RC(cpg_membership_get(h, &lng, list, &n), CS_OK);
	CHECK(n == 0, "members of an unknown group: %d", n);
	/* unknown enum values */
	EXPECT_RC(cpg_dispatch(h, (cs_dispatch_flags_t)0), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_dispatch(h, (cs_dispatch_flags_t)5), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_mcast_joined(h, (cpg_guarantee_t)4, iov + 1, 1), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_mcast_joined(h, (cpg_guarantee_t)-1, iov + 1, 1), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_mcast_joined(h, (cpg_guarantee_t)9, list, 1), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_iteration_initialize(h, (cpg_iteration_type_t)0, NULL, &it), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_iteration_initialize(h, (cpg_iteration_type_t)4, NULL, &it), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_ONE_GROUP, NULL, &it), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_NAME_ONLY, &g, &it), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_ALL, &g, &it), CS_ERR_INVALID_PARAM);
	(void)d;
}

static void local_queries(cpg_handle_t h)
{
	int fd1 = -1, fd2 = -2, i;
	uint32_t sz = 0;
	unsigned int id = 0;
	cpg_flow_control_state_t fc = CPG_FLOW_CONTROL_ENABLED;
	void *ctx = (void *)1;

	EXPECT_RC(cpg_fd_get(h, &fd1), CS_OK);
	for (i = 0; i < 10000; i++) {
		if (cpg_fd_get(h, &fd2) != CS_OK || fd2 != fd1)
			break;
	}
	CHECK(fd1 >= 0 && fd2 == fd1, "fd %d then %d (call %d)", fd1, fd2, i);
	EXPECT_RC(cpg_max_atomic_msgsize_get(h, &sz), CS_OK);
	CHECK(sz == 64u << 20, "max atomic message %u (the daemon's max_message_size)", sz);
	EXPECT_RC(cpg_local_get(h, &id), CS_OK);
	CHECK(id == 1, "local node id %u", id);
	EXPECT_RC(cpg_flow_control_state_get(h, &fc), CS_OK);
	CHECK(fc == CPG_FLOW_CONTROL_DISABLED, "flow control %d on an idle node", fc);
	EXPECT_RC(cpg_context_get(h, &ctx), CS_OK);
	CHECK(ctx == NULL, "initial context %p", ctx);
	EXPECT_RC(cpg_context_set(h, &fd1), CS_OK);
	EXPECT_RC(cpg_context_get(h, &ctx), CS_OK);
	CHECK(ctx == &fd1, "context %p", ctx);
	EXPECT_RC(cpg_dispatch(h, CS_DISPATCH_ONE_NONBLOCKING), CS_ERR_TRY_AGAIN);
	EXPECT_RC(cpg_dispatch(h, CS_DISPATCH_ALL), CS_OK);
}

static void join_leave_mcast(cpg_handle_t h)
{
	struct cpg_name g = name_of("api", 0), other = name_of("api-other", 0);
	struct iovec iov[3] = { { (void *)"Hello", 5 }, { (void *)", ", 2 }, { (void *)"world", 5 } };
	struct cpg_address list[4];
	int n, d0, c0;

	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, iov, 3), CS_ERR_NOT_EXIST);
	EXPECT_RC(cpg_leave(h, &g), CS_ERR_NOT_EXIST);
	c0 = confchgs;
	EXPECT_RC(cpg_join(h, &g), CS_OK);
	EXPECT_RC(cpg_join(h, &g), CS_ERR_EXIST);
	EXPECT_RC(cpg_join(h, &other), CS_ERR_EXIST);
	/* a send while the join is requested is ordered after it */
	d0 = delivers;
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, iov, 3), CS_OK);
	WAIT_FOR(h, delivers > d0, 10000);
	CHECK(confchgs == c0 + 1, "own join confchg: %d", confchgs - c0);
	CHECK(last_njoined == 1 && last_joined[0].reason == CPG_REASON_JOIN &&
		      last_joined[0].pid == (uint32_t)getpid() && last_joined[0].nodeid == 1,
	      "joined %zu reason %u pid %u", last_njoined, last_joined[0].reason,
	      last_joined[0].pid);
	CHECK(delivers == d0 + 1 && last_len == 12 && memcmp(last_msg, "Hello, world", 12) == 0,
	      "delivered %d, len %zu", delivers - d0, last_len);
	CHECK(last_nodeid == 1 && last_pid == (uint32_t)getpid(), "sender %u/%u",
	      last_nodeid, last_pid);
	CHECK(same_name(&last_group, &g), "group of the delivery");
	/* every guarantee is accepted; an empty message is a message */
	d0 = delivers;
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_UNORDERED, iov, 1), CS_OK);
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_FIFO, iov, 1), CS_OK);
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_SAFE, iov, 1), CS_OK);
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, iov, 0), CS_OK);
	WAIT_FOR(h, delivers >= d0 + 4, 10000);
	CHECK(delivers == d0 + 4 && last_len == 0, "four messages, the last empty: %d, %zu",
	      delivers - d0, last_len);
	/* the capacity rule of cpg_membership_get */
	n = 0;
	EXPECT_RC(cpg_membership_get(h, &g, list, &n), CS_ERR_NO_SPACE);
	CHECK(n == 1, "count needed %d", n);
	n = -1;
	EXPECT_RC(cpg_membership_get(h, &g, list, &n), CS_ERR_INVALID_PARAM);
	n = 1;
	memset(list, 0xee, sizeof(list));
	EXPECT_RC(cpg_membership_get(h, &g, list, &n), CS_OK);
	CHECK(n == 1 && list[0].nodeid == 1 && list[0].pid == (uint32_t)getpid() &&
		      list[0].reason == 0,
	      "member %u/%u reason %u", list[0].nodeid, list[0].pid, list[0].reason);
	CHECK(list[1].nodeid == 0xeeeeeeeeu, "written past the capacity");
	/* leave: another name is NOT_EXIST; the own one, then the own confchg */
	EXPECT_RC(cpg_leave(h, &other), CS_ERR_NOT_EXIST);
	c0 = confchgs;
	EXPECT_RC(cpg_leave(h, &g), CS_OK);
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, iov, 1), CS_ERR_NOT_EXIST);
	EXPECT_RC(cpg_leave(h, &g), CS_ERR_NOT_EXIST);
	WAIT_FOR(h, confchgs > c0, 10000);
	CHECK(last_nleft == 1 && last_left[0].reason == CPG_REASON_LEAVE &&
		      last_left[0].pid == (uint32_t)getpid(),
	      "left %zu reason %u", last_nleft, last_left[0].reason);
	/* after the own leave: joined again, to another group */
	c0 = confchgs;
	EXPECT_RC(cpg_join(h, &other), CS_OK);
	WAIT_FOR(h, confchgs > c0, 10000);
	CHECK(same_name(&last_group, &other), "rejoined another group");
	c0 = confchgs;
	EXPECT_RC(cpg_leave(h, &other), CS_OK);
	WAIT_FOR(h, confchgs > c0, 10000);
	/* leave right after join (before its confchg): ordered after it */
	c0 = confchgs;
	EXPECT_RC(cpg_join(h, &g), CS_OK);
	EXPECT_RC(cpg_leave(h, &g), CS_OK);
	WAIT_FOR(h, confchgs >= c0 + 2, 10000);
	CHECK(confchgs == c0 + 2 && last_nleft == 1, "join then leave confchgs %d", confchgs - c0);
}

/* "cib" and "cib\0" are two groups, byte for byte. */
static void names_with_nul(void)
{
	cpg_handle_t a = open_handle(), b = open_handle();
	struct cpg_name plain = name_of("cib", 0), nul = name_of("cib", 1);
	struct cpg_address list[4];
	struct cpg_iteration_description_t d;
	cpg_iteration_handle_t it;
	int n, found_plain = 0, found_nul = 0, c0 = confchgs;

	EXPECT_RC(cpg_join(a, &plain), CS_OK);
	/* the same process in the other one: not the same group, so no EXIST */
	EXPECT_RC(cpg_join(b, &nul), CS_OK);
	WAIT_FOR(a, confchgs > c0, 10000);
	WAIT_FOR(b, confchgs > c0 + 1, 10000);
	n = 4;
	EXPECT_RC(cpg_membership_get(a, &plain, list, &n), CS_OK);
	CHECK(n == 1, "members of \"cib\": %d", n);
	n = 4;
	EXPECT_RC(cpg_membership_get(a, &nul, list, &n), CS_OK);
	CHECK(n == 1, "members of \"cib\\0\": %d", n);
	EXPECT_RC(cpg_iteration_initialize(a, CPG_ITERATION_NAME_ONLY, NULL, &it), CS_OK);
	while (cpg_iteration_next(it, &d) == CS_OK) {
		found_plain += same_name(&d.group, &plain);
		found_nul += same_name(&d.group, &nul);
		CHECK(d.nodeid == 0 && d.pid == 0, "NAME_ONLY entry %u/%u", d.nodeid, d.pid);
	}
	CHECK(found_plain == 1 && found_nul == 1, "both names listed: %d %d", found_plain,
	      found_nul);
	EXPECT_RC(cpg_iteration_finalize(it), CS_OK);
	EXPECT_RC(cpg_iteration_finalize(it), CS_ERR_BAD_HANDLE);
	/* a message to one is not delivered to the other */
	{
		struct iovec iov = { (void *)"to cib\\0", 8 };
		int d0 = delivers;

		EXPECT_RC(cpg_mcast_joined(b, CPG_TYPE_AGREED, &iov, 1), CS_OK);
		WAIT_FOR(b, delivers > d0, 10000);
		CHECK(same_name(&last_group, &nul), "delivered in \"cib\\0\"");
		WAIT_FOR(a, delivers > d0 + 1, 300);
		CHECK(delivers == d0 + 1, "\"cib\" got it too: %d", delivers - d0);
	}
	EXPECT_RC(cpg_finalize(a), CS_OK);
	EXPECT_RC(cpg_finalize(b), CS_OK);
}

static void iterations(cpg_handle_t h)
{
	struct cpg_name g = name_of("iter", 0);
	struct cpg_iteration_description_t d;
	cpg_iteration_handle_t it, all;
	int n = 0, mine = 0, c0 = confchgs;

	EXPECT_RC(cpg_join(h, &g), CS_OK);
	WAIT_FOR(h, confchgs > c0, 10000);
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_ONE_GROUP, &g, &it), CS_OK);
	while (cpg_iteration_next(it, &d) == CS_OK) {
		n++;
		CHECK(same_name(&d.group, &g), "ONE_GROUP entry of another group");
		CHECK(d.nodeid == 1 && d.pid == (uint32_t)getpid(), "entry %u/%u", d.nodeid, d.pid);
	}
	CHECK(n == 1, "ONE_GROUP entries %d", n);
	EXPECT_RC(cpg_iteration_next(it, &d), CS_ERR_NO_SECTIONS);
	EXPECT_RC(cpg_iteration_finalize(it), CS_OK);
	EXPECT_RC(cpg_iteration_next(it, &d), CS_ERR_BAD_HANDLE);
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_ALL, NULL, &all), CS_OK);
	while (cpg_iteration_next(all, &d) == CS_OK)
		mine += same_name(&d.group, &g) && d.pid == (uint32_t)getpid();
	CHECK(mine == 1, "ALL lists this member once: %d", mine);
	/* an unfinished iteration ends with its handle (below) */
	EXPECT_RC(cpg_iteration_initialize(h, CPG_ITERATION_ALL, NULL, &all), CS_OK);
	c0 = confchgs;
	EXPECT_RC(cpg_leave(h, &g), CS_OK);
	WAIT_FOR(h, confchgs > c0, 10000);
}

/* The buffer stays the caller's: rewritten and sent again, contents kept. */
static void zero_copy(cpg_handle_t h)
{
	struct cpg_name g = name_of("zcb", 0);
	void *small = NULL, *big = NULL, *huge = NULL, *z = NULL;
	int c0 = confchgs, d0, i;

	EXPECT_RC(cpg_zcb_alloc(h, 100, &small), CS_OK);
	EXPECT_RC(cpg_zcb_alloc(h, 65536, &big), CS_OK);
	EXPECT_RC(cpg_zcb_alloc(h, 0, &z), CS_OK);
	CHECK(small && big && z && small != big && z != small, "buffers %p %p %p", small, big, z);
	EXPECT_RC(cpg_zcb_alloc(h, 2u << 20, &huge), CS_ERR_TOO_BIG);
	memset(big, 'b', 65536);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, big, 10), CS_ERR_NOT_EXIST);
	EXPECT_RC(cpg_join(h, &g), CS_OK);
	WAIT_FOR(h, confchgs > c0, 10000);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, big, 65537), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, (char *)big + 1, 10),
		  CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, big, (64u << 20) + 1), CS_ERR_TOO_BIG);
	for (i = 0; i < 20; i++) {
		d0 = delivers;
		snprintf(big, 65536, "zero copy %d", i);
		EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, big, 30000), CS_OK);
		/* rewritten at once: the message sent is what was there */
		memset(big, 'x', 16);
		WAIT_FOR(h, delivers > d0, 10000);
		{
			char want[32];

			snprintf(want, sizeof(want), "zero copy %d", i);
			CHECK(last_len == 30000 && strcmp(last_msg, want) == 0, "got \"%.20s\" (%zu)",
			      last_msg, last_len);
		}
		CHECK(((char *)big)[20] == 'b' && ((char *)big)[29999] == 'b',
		      "the buffer's contents kept");
	}
	d0 = delivers;
	memcpy(small, "small", 5);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, small, 5), CS_OK);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, z, 0), CS_OK);
	WAIT_FOR(h, delivers >= d0 + 2, 10000);
	CHECK(delivers == d0 + 2, "small and empty zcb messages: %d", delivers - d0);
	EXPECT_RC(cpg_zcb_free(h, big), CS_OK);
	EXPECT_RC(cpg_zcb_free(h, big), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, big, 10), CS_ERR_INVALID_PARAM);
	EXPECT_RC(cpg_zcb_free(h, small), CS_OK);
	/* z is left for finalize to free */
	c0 = confchgs;
	EXPECT_RC(cpg_leave(h, &g), CS_OK);
	WAIT_FOR(h, confchgs > c0, 10000);
}

/* Callbacks may call anything; finalize of their own handle ends dispatch. */
static cpg_handle_t inner_handle;
static int inner_rc_local, inner_rc_members, inner_rc_mcast, inner_rc_dispatch,
	inner_rc_finalize = -1, inner_calls;

static void inner_deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid,
			  uint32_t pid, void *msg, size_t len)
{
	struct cpg_address list[4];
	int n = 4;
	unsigned int id;
	struct iovec iov = { (void *)"again", 5 };

	(void)nodeid;
	(void)pid;
	inner_calls++;
	CHECK(h == inner_handle, "the callback's handle");
	if (len == 5 && memcmp(msg, "first", 5) == 0) {
		inner_rc_local = cpg_local_get(h, &id);
		inner_rc_members = cpg_membership_get(h, (struct cpg_name *)g, list, &n);
		inner_rc_mcast = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1);
		inner_rc_dispatch = cpg_dispatch(h, CS_DISPATCH_ALL);
	} else {
		inner_rc_finalize = cpg_finalize(h);
	}
}

static void callbacks_call_anything(void)
{
	cpg_callbacks_t cb = { inner_deliver, NULL };
	struct cpg_name g = name_of("inner", 0);
	struct iovec iov = { (void *)"first", 5 };
	cs_error_t rc = CS_OK;
	uint64_t end;

	EXPECT_RC(cpg_initialize(&inner_handle, &cb), CS_OK);
	EXPECT_RC(cpg_join(inner_handle, &g), CS_OK);
	EXPECT_RC(cpg_mcast_joined(inner_handle, CPG_TYPE_AGREED, &iov, 1), CS_OK);
	end = now_ms() + 10000;
	while (rc == CS_OK && now_ms() < end)
		rc = cpg_dispatch(inner_handle, CS_DISPATCH_ONE);
	CHECK(rc == CS_ERR_BAD_HANDLE, "dispatch after finalize in a callback: %d", rc);
	EXPECT_RC(inner_rc_local, CS_OK);
	EXPECT_RC(inner_rc_members, CS_OK);
	EXPECT_RC(inner_rc_mcast, CS_OK);
	/* dispatch of the own handle from its callback: BUSY, not a deadlock */
	EXPECT_RC(inner_rc_dispatch, CS_ERR_BUSY);
	EXPECT_RC(inner_rc_finalize, CS_OK);
	CHECK(inner_calls == 2, "callbacks %d", inner_calls);
	EXPECT_RC(cpg_finalize(inner_handle), CS_ERR_BAD_HANDLE);
}

/* A handle made before fork() is not the child's: BAD_HANDLE, untouched. */
static void after_fork(cpg_handle_t h)
{
	struct cpg_name g = name_of("fork", 0);
	int c0 = confchgs, d0, status = -1;
	pid_t child;

	EXPECT_RC(cpg_join(h, &g), CS_OK);
	WAIT_FOR(h, confchgs > c0, 10000);
	fflush(stdout);
	fflush(stderr);
	child = fork();
	if (child == 0) {
		cpg_handle_t mine;
		struct cpg_name cg = name_of("fork-child", 0);

		checks = failures = 0;
		every_call_is(h, CS_ERR_BAD_HANDLE);
		EXPECT_RC(cpg_initialize(&mine, &callbacks), CS_OK);
		CHECK(mine != h, "the child's handle");
		EXPECT_RC(cpg_join(mine, &cg), CS_OK);
		WAIT_FOR(mine, confchgs > c0, 10000);
		CHECK(confchgs > c0, "the child's own join confchg");
		EXPECT_RC(cpg_finalize(mine), CS_OK);
		_exit(finish("api (forked child)"));
	}
	CHECK(child > 0, "fork: %s", strerror(errno));
	waitpid(child, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed (%d)", status);
	/* the parent's connection is untouched */
	{
		struct iovec iov = { (void *)"after fork", 10 };

		d0 = delivers;
		EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1), CS_OK);
		WAIT_FOR(h, delivers > d0, 10000);
		CHECK(delivers == d0 + 1 && last_len == 10, "parent after fork: %d", delivers - d0);
	}
	c0 = confchgs;
	EXPECT_RC(cpg_leave(h, &g), CS_OK);
	WAIT_FOR(h, confchgs > c0, 10000);
}

int main(void)
{
	cpg_handle_t h;

	setvbuf(stdout, NULL, _IOLBF, 0);
	no_daemon();
	initialize_errors();
	bad_handles();
	h = open_handle();
	bad_input(h);
	local_queries(h);
	join_leave_mcast(h);
	names_with_nul();
	iterations(h);
	zero_copy(h);
	callbacks_call_anything();
	after_fork(h);
	EXPECT_RC(cpg_finalize(h), CS_OK);
	EXPECT_RC(cpg_finalize(h), CS_ERR_BAD_HANDLE);
	return finish("api");
}
