/*
 * A group member driven by lines on stdin, reporting on stdout, for the
 * multi-process tests: a poll() loop over the CPG fd and stdin, as
 * Pacemaker's and testcpg's are.
 *
 *   member [--one] [--nul] GROUP
 *     --one  dispatch CS_DISPATCH_ONE once per wake-up (else CS_DISPATCH_ALL):
 *            everything must still arrive (the fd is level-triggered)
 *     --nul  the group name's length counts its trailing NUL
 *
 * stdin:  join | leave | send TEXT | burst COUNT MAXSIZE SEED | stats |
 *         quiet | finalize | exit | idle MS
 * stdout: ready NODEID PID
 *         confchg GROUP members=N/P,... left=N/P/R,... joined=N/P/R,...
 *         totem nodes=N,...
 *         deliver N/P len=L fnv=H
 *         sent count=C bytes=B sum=S | stats delivered=C bytes=B sum=S chain=H
 *         (sum: of the messages' FNV-1a; chain: over them in delivery order)
 *         idle readable=0|1 | rc CALL CODE | dispatch-error CODE
 */
#include "check.h"

#include <fcntl.h>

static int quiet;
static uint64_t delivered, delivered_bytes;
static uint32_t delivered_sum, delivered_chain = 2166136261u;
static struct cpg_name group;

static void print_group(const struct cpg_name *g)
{
	uint32_t i;

	for (i = 0; i < g->length; i++) {
		unsigned char c = (unsigned char)g->value[i];

		if (c > ' ' && c < 0x7f && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
}

static void print_list(const char *what, const struct cpg_address *a, size_t n, int reason)
{
	size_t i;

	printf(" %s=", what);
	for (i = 0; i < n; i++) {
		printf("%s%u/%u", i ? "," : "", a[i].nodeid, a[i].pid);
		if (reason)
			printf("/%u", a[i].reason);
	}
}

static void deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid,
		    uint32_t pid, void *msg, size_t len)
{
	uint32_t f = fnv1a(msg, len);

	(void)h;
	(void)g;
	delivered++;
	delivered_bytes += len;
	delivered_sum += f;
	/* order-sensitive: equal on two members only for one total order */
	delivered_chain = (delivered_chain ^ f) * 16777619u;
	if (!quiet)
		printf("deliver %u/%u len=%zu fnv=%08x\n", nodeid, pid, len, f);
}

static void confchg(cpg_handle_t h, const struct cpg_name *g,
		    const struct cpg_address *m, size_t nm,
		    const struct cpg_address *l, size_t nl,
		    const struct cpg_address *j, size_t nj)
{
	(void)h;
	printf("confchg ");
	print_group(g);
	print_list("members", m, nm, 0);
	print_list("left", l, nl, 1);
	print_list("joined", j, nj, 1);
	putchar('\n');
}

static void totem(cpg_handle_t h, struct cpg_ring_id ring, uint32_t n, const uint32_t *nodes)
{
	uint32_t i;

	(void)h;
	(void)ring;
	printf("totem nodes=");
	for (i = 0; i < n; i++)
		printf("%s%u", i ? "," : "", nodes[i]);
	putchar('\n');
}

static cpg_handle_t h;
static int one;

static void dispatch_or_die(cs_dispatch_flags_t how)
{
	cs_error_t rc = cpg_dispatch(h, how);

	if (rc != CS_OK && !(how == CS_DISPATCH_ONE_NONBLOCKING && rc == CS_ERR_TRY_AGAIN)) {
		printf("dispatch-error %d\n", rc);
		exit(3);
	}
}

static void burst(unsigned long count, unsigned long maxsize, unsigned long seed)
{
	unsigned char *buf = malloc(maxsize ? maxsize : 1);
	uint64_t bytes = 0;
	uint32_t sum = 0, x = (uint32_t)seed;
	unsigned long i;
	int fd;

	if (!buf)
		exit(2);
	cpg_fd_get(h, &fd);
	for (i = 0; i < count; i++) {
		size_t len, k;
		struct iovec iov;
		cs_error_t rc;

		x = x * 1103515245u + 12345u;
		len = 1 + (x >> 8) % (maxsize ? maxsize : 1);
		for (k = 0; k < len; k++) {
			x = x * 1103515245u + 12345u;
			buf[k] = (unsigned char)(x >> 16);
		}
		iov.iov_base = buf;
		iov.iov_len = len;
		while ((rc = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1)) == CS_ERR_TRY_AGAIN) {
			struct pollfd p = { fd, POLLIN, 0 };

			if (poll(&p, 1, 10) > 0)
				dispatch_or_die(CS_DISPATCH_ALL);
		}
		if (rc != CS_OK) {
			printf("rc mcast %d\n", rc);
			break;
		}
		bytes += len;
		sum += fnv1a(buf, len);
	}
	free(buf);
	printf("sent count=%lu bytes=%" PRIu64 " sum=%08x\n", i, bytes, sum);
}

static void command(char *line)
{
	unsigned long a, b, c;
	int ms;

	if (strcmp(line, "join") == 0) {
		printf("rc join %d\n", cpg_join(h, &group));
	} else if (strcmp(line, "leave") == 0) {
		printf("rc leave %d\n", cpg_leave(h, &group));
	} else if (strncmp(line, "send ", 5) == 0) {
		struct iovec iov = { line + 5, strlen(line + 5) };

		printf("rc send %d\n", cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1));
	} else if (sscanf(line, "burst %lu %lu %lu", &a, &b, &c) == 3) {
		burst(a, b, c);
	} else if (strcmp(line, "stats") == 0) {
		printf("stats delivered=%" PRIu64 " bytes=%" PRIu64 " sum=%08x chain=%08x\n",
		       delivered, delivered_bytes, delivered_sum, delivered_chain);
	} else if (strcmp(line, "quiet") == 0) {
		quiet = 1;
		printf("rc quiet 1\n");
	} else if (strcmp(line, "finalize") == 0) {
		printf("rc finalize %d\n", cpg_finalize(h));
		fflush(stdout);
		exit(0);
	} else if (strcmp(line, "exit") == 0) {
		fflush(stdout);
		_exit(0);
	} else if (sscanf(line, "idle %d", &ms) == 1) {
		/* nothing pending: the fd must stay unreadable */
		int fd;
		struct pollfd p;

		cpg_fd_get(h, &fd);
		p.fd = fd;
		p.events = POLLIN;
		p.revents = 0;
		printf("idle readable=%d\n", poll(&p, 1, ms) > 0);
	} else {
		printf("rc unknown-command 0\n");
	}
}

int main(int argc, char **argv)
{
	cpg_model_v1_data_t md = { CPG_MODEL_V1, deliver, confchg, totem,
				   CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF };
	int i, nul = 0, fd, rc;
	const char *name = NULL;
	unsigned int nodeid = 0;
	char in[65536];
	size_t have = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--one") == 0)
			one = 1;
		else if (strcmp(argv[i], "--nul") == 0)
			nul = 1;
		else
			name = argv[i];
	}
	if (!name) {
		fprintf(stderr, "usage: member [--one] [--nul] GROUP\n");
		return 2;
	}
	group = name_of(name, nul);
	rc = cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&md, NULL);
	if (rc != CS_OK) {
		printf("rc initialize %d\n", rc);
		return 1;
	}
	cpg_local_get(h, &nodeid);
	cpg_fd_get(h, &fd);
	printf("ready %u %d\n", nodeid, (int)getpid());
	for (;;) {
		struct pollfd p[2] = { { fd, POLLIN, 0 }, { 0, POLLIN, 0 } };

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (p[0].revents)
			dispatch_or_die(one ? CS_DISPATCH_ONE : CS_DISPATCH_ALL);
		if (p[1].revents) {
			ssize_t n = read(0, in + have, sizeof(in) - 1 - have);
			char *nl;

			if (n <= 0)
				return 0;
			have += (size_t)n;
			in[have] = 0;
			while ((nl = strchr(in, '\n')) != NULL) {
				*nl = 0;
				command(in);
				have -= (size_t)(nl + 1 - in);
				memmove(in, nl + 1, have + 1);
			}
		}
	}
}
