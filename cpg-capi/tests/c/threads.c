/*
 * Calls from several threads on one handle: one thread blocks in
 * cpg_dispatch(CS_DISPATCH_BLOCKING) (as Corosync's cpgbench does) while
 * four send and two more query; every message arrives once, in each
 * sender's order; cpg_finalize from the main thread ends the blocked
 * dispatch with CS_ERR_BAD_HANDLE, and later calls on the handle from any
 * thread answer CS_ERR_BAD_HANDLE.
 */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

#define SENDERS 4
#define PER_SENDER 2000

static cpg_handle_t h;
static atomic_int received;
static int next_seq[SENDERS];
static atomic_int out_of_order;
static atomic_int stop_queries;
static atomic_int query_errors;
static cs_error_t dispatch_rc;
static atomic_int after_finalize_ok;

struct msg {
	uint32_t sender;
	uint32_t seq;
	char pad[56];
};

static void deliver(cpg_handle_t hh, const struct cpg_name *g, uint32_t nodeid,
		    uint32_t pid, void *m, size_t len)
{
	struct msg x;

	(void)hh;
	(void)g;
	(void)nodeid;
	(void)pid;
	if (len != sizeof(x))
		return;
	memcpy(&x, m, sizeof(x));
	if (x.sender >= SENDERS || x.seq != (uint32_t)next_seq[x.sender]) {
		atomic_fetch_add(&out_of_order, 1);
	} else {
		next_seq[x.sender]++;
	}
	atomic_fetch_add(&received, 1);
}

static void *dispatch_thread(void *arg)
{
	(void)arg;
	dispatch_rc = cpg_dispatch(h, CS_DISPATCH_BLOCKING);
	return NULL;
}

static void *sender(void *arg)
{
	uint32_t id = (uint32_t)(uintptr_t)arg, i;
	struct msg x;
	struct iovec iov = { &x, sizeof(x) };

	memset(&x, 0, sizeof(x));
	x.sender = id;
	for (i = 0; i < PER_SENDER; i++) {
		cs_error_t rc;

		x.seq = i;
		while ((rc = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1)) == CS_ERR_TRY_AGAIN)
			usleep(200);
		if (rc != CS_OK) {
			fprintf(stderr, "FAIL sender %u: mcast %d at %u\n", id, rc, i);
			atomic_fetch_add(&query_errors, 1);
			return NULL;
		}
	}
	return NULL;
}

static void *querier(void *arg)
{
	struct cpg_name g = name_of("threads", 0);
	struct cpg_address list[8];
	unsigned int id;
	cpg_flow_control_state_t fc;

	(void)arg;
	while (!atomic_load(&stop_queries)) {
		int n = 8;

		if (cpg_membership_get(h, &g, list, &n) != CS_OK || n != 1 ||
		    cpg_local_get(h, &id) != CS_OK ||
		    cpg_flow_control_state_get(h, &fc) != CS_OK)
			atomic_fetch_add(&query_errors, 1);
	}
	return NULL;
}

static void *late_caller(void *arg)
{
	unsigned int id;
	struct iovec iov = { (void *)"late", 4 };

	(void)arg;
	if (cpg_local_get(h, &id) == CS_ERR_BAD_HANDLE &&
	    cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1) == CS_ERR_BAD_HANDLE &&
	    cpg_dispatch(h, CS_DISPATCH_ALL) == CS_ERR_BAD_HANDLE)
		atomic_fetch_add(&after_finalize_ok, 1);
	return NULL;
}

static void confchg(cpg_handle_t hh, const struct cpg_name *g,
		    const struct cpg_address *m, size_t nm,
		    const struct cpg_address *l, size_t nl,
		    const struct cpg_address *j, size_t nj)
{
	(void)hh;
	(void)g;
	(void)m;
	(void)nm;
	(void)l;
	(void)nl;
	(void)j;
	(void)nj;
}

int main(void)
{
	cpg_callbacks_t cb = { deliver, confchg };
	struct cpg_name g = name_of("threads", 0);
	pthread_t d, s[SENDERS], q[2], late;
	uint64_t end, start = now_ms();
	int i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	EXPECT_RC(cpg_initialize(&h, &cb), CS_OK);
	EXPECT_RC(cpg_join(h, &g), CS_OK);
	pthread_create(&d, NULL, dispatch_thread, NULL);
	/* the queries expect this member: wait for the join to be delivered */
	end = now_ms() + 10000;
	for (;;) {
		struct cpg_address list[8];
		int n = 8;

		if ((cpg_membership_get(h, &g, list, &n) == CS_OK && n == 1) || now_ms() > end)
			break;
		usleep(1000);
	}
	for (i = 0; i < 2; i++)
		pthread_create(&q[i], NULL, querier, NULL);
	for (i = 0; i < SENDERS; i++)
		pthread_create(&s[i], NULL, sender, (void *)(uintptr_t)i);
	for (i = 0; i < SENDERS; i++)
		pthread_join(s[i], NULL);
	end = now_ms() + 60000;
	while (atomic_load(&received) < SENDERS * PER_SENDER && now_ms() < end)
		usleep(1000);
	atomic_store(&stop_queries, 1);
	for (i = 0; i < 2; i++)
		pthread_join(q[i], NULL);
	CHECK(atomic_load(&received) == SENDERS * PER_SENDER, "received %d of %d",
	      atomic_load(&received), SENDERS * PER_SENDER);
	CHECK(atomic_load(&out_of_order) == 0, "out of order %d", atomic_load(&out_of_order));
	CHECK(atomic_load(&query_errors) == 0, "query errors %d", atomic_load(&query_errors));
	/* finalize from this thread wakes the blocked dispatch */
	EXPECT_RC(cpg_finalize(h), CS_OK);
	pthread_join(d, NULL);
	EXPECT_RC(dispatch_rc, CS_ERR_BAD_HANDLE);
	pthread_create(&late, NULL, late_caller, NULL);
	pthread_join(late, NULL);
	CHECK(atomic_load(&after_finalize_ok) == 1, "calls after finalize");
	printf("%d messages from %d threads in %" PRIu64 " ms\n", SENDERS * PER_SENDER, SENDERS,
	       now_ms() - start);
	return finish("threads");
}
