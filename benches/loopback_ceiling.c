/*
 * loopback_ceiling: what UDP over 127.0.0.1 can carry on this machine, one
 * sender thread to one receiver thread, as the ceiling for the side-by-side
 * benchmark (issue 4). For each size it blasts datagrams for S seconds
 * (sendmmsg/recvmmsg in batches of 32, 8 MiB socket buffers) and prints one
 * JSON line with what the receiver got:
 *
 *   {"system":"loopback","size":65507,"seconds":3.0,"datagrams_per_sec":x,
 *    "mb_per_sec":y,"gb_per_sec":z,"sent_per_sec":s,"received":n,"sent":m}
 *
 * Usage: loopback_ceiling [--seconds S] [--size N]...   (default sizes 65507 64)
 * Build: cc -O2 -o loopback_ceiling loopback_ceiling.c -lpthread
 * Only 127.0.0.1 is used; every wait is bounded (100 ms receive timeout).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define MAXDG 65507

static volatile int stop_rx, stop_tx;
static int rx_fd;
static uint64_t rx_count, rx_bytes;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *receiver(void *arg)
{
	size_t size = *(size_t *)arg;
	static char bufs[BATCH][MAXDG];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = size;
		memset(&msgs[i], 0, sizeof msgs[i]);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	while (!stop_rx) {
		int n = recvmmsg(rx_fd, msgs, BATCH, MSG_WAITFORONE, NULL);
		if (n <= 0)
			continue; /* timeout (SO_RCVTIMEO) or EINTR: check stop */
		uint64_t b = 0;
		for (int i = 0; i < n; i++)
			b += msgs[i].msg_len;
		__atomic_add_fetch(&rx_count, (uint64_t)n, __ATOMIC_RELAXED);
		__atomic_add_fetch(&rx_bytes, b, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void run(size_t size, double seconds)
{
	struct sockaddr_in a = { 0 };
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	rx_fd = socket(AF_INET, SOCK_DGRAM, 0);
	int tx = socket(AF_INET, SOCK_DGRAM, 0);
	int big = 8 << 20;
	if (setsockopt(rx_fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) != 0)
		setsockopt(rx_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	if (setsockopt(tx, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) != 0)
		setsockopt(tx, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
	struct timeval tv = { 0, 100000 };
	setsockopt(rx_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (bind(rx_fd, (struct sockaddr *)&a, sizeof a) != 0) {
		perror("bind");
		exit(1);
	}
	socklen_t al = sizeof a;
	getsockname(rx_fd, (struct sockaddr *)&a, &al);
	if (connect(tx, (struct sockaddr *)&a, sizeof a) != 0) {
		perror("connect");
		exit(1);
	}

	stop_rx = 0;
	rx_count = rx_bytes = 0;
	pthread_t th;
	pthread_create(&th, NULL, receiver, &size);

	static char payload[MAXDG];
	memset(payload, 0xab, sizeof payload);
	struct mmsghdr msgs[BATCH];
	struct iovec iov = { payload, size };
	for (int i = 0; i < BATCH; i++) {
		memset(&msgs[i], 0, sizeof msgs[i]);
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	/* short warm-up, then the measured window */
	double tw = now() + 0.2;
	while (now() < tw)
		sendmmsg(tx, msgs, BATCH, 0);
	uint64_t c0 = __atomic_load_n(&rx_count, __ATOMIC_RELAXED);
	uint64_t b0 = __atomic_load_n(&rx_bytes, __ATOMIC_RELAXED);
	uint64_t sent = 0;
	double t0 = now(), t1;
	for (;;) {
		int n = sendmmsg(tx, msgs, BATCH, 0);
		if (n > 0)
			sent += (uint64_t)n;
		if (((sent & 1023) < BATCH) && (t1 = now()) - t0 >= seconds)
			break;
	}
	t1 = now();
	uint64_t c1 = __atomic_load_n(&rx_count, __ATOMIC_RELAXED);
	uint64_t b1 = __atomic_load_n(&rx_bytes, __ATOMIC_RELAXED);
	stop_rx = 1;
	pthread_join(th, NULL);
	close(tx);
	close(rx_fd);
	double dt = t1 - t0;
	double dps = (c1 - c0) / dt, bps = (b1 - b0) / dt;
	printf("{\"system\":\"loopback\",\"size\":%zu,\"seconds\":%.3f,\"datagrams_per_sec\":%.1f,"
	       "\"mb_per_sec\":%.3f,\"gb_per_sec\":%.4f,\"sent_per_sec\":%.1f,\"received\":%llu,\"sent\":%llu}\n",
	       size, dt, dps, bps / 1e6, bps / 1e9, sent / dt, (unsigned long long)(c1 - c0),
	       (unsigned long long)sent);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	double seconds = 3.0;
	size_t sizes[16];
	int n = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--size") && i + 1 < argc && n < 16) {
			sizes[n] = strtoul(argv[++i], NULL, 0);
			if (sizes[n] < 1 || sizes[n] > MAXDG) {
				fprintf(stderr, "size must be 1..%d\n", MAXDG);
				return 2;
			}
			n++;
		} else {
			fprintf(stderr, "usage: loopback_ceiling [--seconds S] [--size N]...\n");
			return 2;
		}
	}
	if (n == 0) {
		sizes[n++] = MAXDG;
		sizes[n++] = 64;
	}
	for (int i = 0; i < n; i++)
		run(sizes[i], seconds);
	return 0;
}
