/*
 * A zero-copy client that exits without cleaning up: it takes slots of
 * cpgd's shared region (cpg_zcb_alloc), sends from some, and leaves with
 * _exit() (or is killed, with "kill" as argv[1]) without cpg_zcb_free or
 * cpg_finalize. The test then checks that cpgd holds no slot and no
 * connection of it, and that nothing was left in /dev/shm.
 */
#include "check.h"

#include <signal.h>

static int delivered;

static void deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid,
		    uint32_t pid, void *msg, size_t len)
{
	(void)h;
	(void)g;
	(void)nodeid;
	(void)pid;
	(void)msg;
	(void)len;
	delivered++;
}

int main(int argc, char **argv)
{
	cpg_callbacks_t cb = { deliver, NULL };
	cpg_handle_t h;
	struct cpg_name g = name_of("zcleak", 0);
	void *bufs[10];
	size_t sizes[10] = { 4096, 65536, 65536, 30000, 1u << 20, 1u << 20, 8192, 100000, 2048, 3000 };
	int i, sent = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	EXPECT_RC(cpg_initialize(&h, &cb), CS_OK);
	EXPECT_RC(cpg_join(h, &g), CS_OK);
	for (i = 0; i < 10; i++) {
		bufs[i] = NULL;
		EXPECT_RC(cpg_zcb_alloc(h, sizes[i], &bufs[i]), CS_OK);
		if (bufs[i])
			memset(bufs[i], 'a' + i, sizes[i]);
	}
	for (i = 0; i < 10; i += 3) {
		if (bufs[i] && cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, bufs[i], sizes[i]) == CS_OK)
			sent++;
	}
	CHECK(sent == 4, "sent %d", sent);
	/* delivered back: cpgd took them (a process gone with requests still
	 * in its ring would lose them, as with Corosync) */
	WAIT_FOR(h, delivered == sent, 30000);
	CHECK(delivered == sent, "delivered %d", delivered);
	printf("holding 10 buffers, sent from %d\n", sent);
	finish("zcleak");
	fflush(stdout);
	if (argc > 1 && strcmp(argv[1], "kill") == 0)
		raise(SIGKILL);
	_exit(failures ? 1 : 0);
}
