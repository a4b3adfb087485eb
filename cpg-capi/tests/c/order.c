/*
 * Callback order and the model's flag: with CPG_MODEL_V1 and
 * CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF, after a join come the own
 * confchg (reason JOIN), then the totem confchg, then messages; plain
 * cpg_initialize, or the model without the flag, gets no totem confchg.
 * Callbacks run in the thread that calls cpg_dispatch.
 */
#include "check.h"

#include <pthread.h>

#define LOG_MAX 64

struct entry {
	char kind;  /* 'c' confchg, 't' totem, 'd' deliver */
	cpg_handle_t h;
	uint32_t reason;
	uint32_t nodes;
	int self_in;
	char msg[16];
};

static struct entry log_[LOG_MAX];
static int nlog;
static pthread_t dispatcher;
static int wrong_thread;

static void note(struct entry e)
{
	if (!pthread_equal(pthread_self(), dispatcher))
		wrong_thread++;
	if (nlog < LOG_MAX)
		log_[nlog++] = e;
}

static void deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid,
		    uint32_t pid, void *msg, size_t len)
{
	struct entry e = { 'd', h, 0, 0, 0, "" };

	(void)g;
	(void)nodeid;
	(void)pid;
	memcpy(e.msg, msg, len < 15 ? len : 15);
	note(e);
}

static void confchg(cpg_handle_t h, const struct cpg_name *g,
		    const struct cpg_address *m, size_t nm,
		    const struct cpg_address *l, size_t nl,
		    const struct cpg_address *j, size_t nj)
{
	struct entry e = { 'c', h, 0, (uint32_t)nm, 0, "" };
	size_t i;

	(void)g;
	(void)l;
	(void)nl;
	if (nj > 0)
		e.reason = j[0].reason;
	for (i = 0; i < nm; i++)
		e.self_in |= m[i].pid == (uint32_t)getpid();
	note(e);
}

static void totem(cpg_handle_t h, struct cpg_ring_id ring, uint32_t n, const uint32_t *nodes)
{
	struct entry e = { 't', h, 0, n, 0, "" };
	uint32_t i;

	for (i = 0; i < n; i++)
		e.self_in |= nodes[i] == 1;
	CHECK(ring.nodeid == 1 && ring.seq > 0, "ring %x.%" PRIx64, ring.nodeid, ring.seq);
	note(e);
}

/* Join `name`, send "m1" and "m2", dispatch until both came; the log. */
static void run(cpg_handle_t h, const char *name)
{
	struct cpg_name g = name_of(name, 1);
	struct iovec m1 = { (void *)"m1", 2 }, m2 = { (void *)"m2", 2 };
	int seen = 0, i;

	nlog = 0;
	EXPECT_RC(cpg_join(h, &g), CS_OK);
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_AGREED, &m1, 1), CS_OK);
	EXPECT_RC(cpg_mcast_joined(h, CPG_TYPE_SAFE, &m2, 1), CS_OK);
	WAIT_FOR(h, ({
			 seen = 0;
			 for (i = 0; i < nlog; i++)
				 seen += log_[i].kind == 'd';
			 seen == 2;
		 }),
		 10000);
	/* nothing more comes */
	WAIT_FOR(h, 0, 200);
}

static const char *kinds(void)
{
	static char s[LOG_MAX + 1];
	int i;

	for (i = 0; i < nlog; i++)
		s[i] = log_[i].kind;
	s[nlog] = 0;
	return s;
}

int main(void)
{
	cpg_handle_t h;
	cpg_model_v1_data_t md = { CPG_MODEL_V1, deliver, confchg, totem,
				   CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF };
	cpg_callbacks_t cb = { deliver, confchg };

	setvbuf(stdout, NULL, _IOLBF, 0);
	dispatcher = pthread_self();

	/* the model with the flag: confchg (JOIN), totem, messages */
	EXPECT_RC(cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&md, NULL), CS_OK);
	run(h, "order-flag");
	CHECK(strcmp(kinds(), "ctdd") == 0, "order %s, want ctdd", kinds());
	if (nlog == 4) {
		CHECK(log_[0].reason == CPG_REASON_JOIN && log_[0].self_in && log_[0].nodes == 1,
		      "own confchg reason %u", log_[0].reason);
		CHECK(log_[1].self_in && log_[1].nodes == 1, "totem nodes %u", log_[1].nodes);
		CHECK(strcmp(log_[2].msg, "m1") == 0 && strcmp(log_[3].msg, "m2") == 0,
		      "messages in order: %s %s", log_[2].msg, log_[3].msg);
		CHECK(log_[0].h == h && log_[1].h == h && log_[2].h == h, "the handle passed");
	}
	EXPECT_RC(cpg_finalize(h), CS_OK);

	/* plain cpg_initialize: no totem confchg */
	EXPECT_RC(cpg_initialize(&h, &cb), CS_OK);
	run(h, "order-plain");
	CHECK(strcmp(kinds(), "cdd") == 0, "order %s, want cdd", kinds());
	EXPECT_RC(cpg_finalize(h), CS_OK);

	/* the model with a totem callback but without the flag: none either
	 * (a totem confchg comes only with a ring change) */
	md.flags = 0;
	EXPECT_RC(cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&md, NULL), CS_OK);
	run(h, "order-noflag");
	CHECK(strcmp(kinds(), "cdd") == 0, "order %s, want cdd", kinds());
	EXPECT_RC(cpg_finalize(h), CS_OK);

	/* the flag without a totem callback: consumed, nothing called */
	md.flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF;
	md.cpg_totem_confchg_fn = NULL;
	EXPECT_RC(cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&md, NULL), CS_OK);
	run(h, "order-nocb");
	CHECK(strcmp(kinds(), "cdd") == 0, "order %s, want cdd", kinds());
	EXPECT_RC(cpg_finalize(h), CS_OK);

	CHECK(wrong_thread == 0, "callbacks in another thread: %d", wrong_thread);
	return finish("order");
}
