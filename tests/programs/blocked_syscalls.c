// SPDX-License-Identifier: Apache-2.0
// Threads that spend most of their time blocked in system calls, so that a checkpoint finds them
// there:
//  * a reader blocked in read() on a pipe, fed by a writer thread that sleeps (nanosleep and
//    relative clock_nanosleep alternately) between messages; every fifth message is followed by a
//    16 KiB block that the reader leaves in the pipe for a while (buffered pipe data);
//  * a sleeper in absolute clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME);
//  * a poller blocked in poll() with no timeout on a second pipe, woken at the end;
//  * the main thread blocked in pthread_join().
// EINTR is tolerated everywhere (sleeps continue with the remaining time). The reader checks the
// sequence and content of every message and prints a checksum every tenth of the run.
#include "common.h"

#include <poll.h>
#include <pthread.h>

#define BULK 16384

struct msg {
    uint64_t seq;
    uint64_t payload[6];
    uint64_t sum;
};

static uint64_t g_rounds, g_ms;
static int g_pipe[2], g_wake[2];
static volatile int g_done;
static uint64_t g_ticks, g_poll_byte;

static void fill_bulk(unsigned char *b, uint64_t r) {
    for (int i = 0; i < BULK; i += 8) {
        uint64_t v = t_mix64(r * BULK + (uint64_t)i);
        memcpy(b + i, &v, 8);
    }
}

static void *writer(void *arg) {
    (void)arg;
    static unsigned char bulk[BULK];
    for (uint64_t r = 0; r < g_rounds; r++) {
        if (r % 2 == 0) {
            t_sleep_ns(g_ms * 1000000ULL);
        } else {
            struct timespec req = {0, (long)(g_ms * 1000000ULL)}, rem;
            int rc;
            while ((rc = clock_nanosleep(CLOCK_REALTIME, 0, &req, &rem)) != 0) {
                if (rc != EINTR) t_fail("clock_nanosleep: %s", strerror(rc));
                req = rem;
            }
        }
        struct msg m;
        m.seq = r;
        m.sum = 0;
        for (int i = 0; i < 6; i++) {
            m.payload[i] = t_mix64(r * 6 + (uint64_t)i);
            m.sum ^= m.payload[i];
        }
        t_write_all(g_pipe[1], &m, sizeof m, "pipe");
        if (r % 5 == 0) {
            fill_bulk(bulk, r);
            t_write_all(g_pipe[1], bulk, BULK, "pipe bulk");
        }
    }
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    static unsigned char bulk[BULK], want[BULK];
    uint64_t acc = 0;
    for (uint64_t r = 0; r < g_rounds; r++) {
        struct msg m;
        if (t_read_full(g_pipe[0], &m, sizeof m, "pipe") != sizeof m) t_fail("pipe closed early");
        if (m.seq != r) t_fail("message %" PRIu64 " arrived as number %" PRIu64, m.seq, r);
        uint64_t sum = 0;
        for (int i = 0; i < 6; i++) {
            if (m.payload[i] != t_mix64(r * 6 + (uint64_t)i))
                t_fail("message %" PRIu64 " corrupted", r);
            sum ^= m.payload[i];
        }
        if (sum != m.sum) t_fail("message %" PRIu64 " checksum wrong", r);
        // Some CPU work per message.
        uint64_t x = m.sum;
        for (int i = 0; i < 20000; i++)
            x = t_mix64(x + (uint64_t)i);
        acc ^= x;
        if (r % 5 == 0) {
            t_sleep_ns(g_ms * 1000000ULL); // leave the bulk block in the pipe for a while
            if (t_read_full(g_pipe[0], bulk, BULK, "pipe bulk") != BULK)
                t_fail("pipe closed early");
            fill_bulk(want, r);
            if (memcmp(bulk, want, BULK) != 0) t_fail("bulk block %" PRIu64 " corrupted", r);
            acc = t_fnv1a(acc, bulk, 64);
        }
        if ((r + 1) % (g_rounds / 10) == 0) t_line("round %" PRIu64 " acc=%016" PRIx64, r + 1, acc);
    }
    return NULL;
}

static void *sleeper(void *arg) {
    (void)arg;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    while (!g_done) {
        deadline.tv_nsec += (long)(g_ms * 1000000ULL / 2);
        while (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_nsec -= 1000000000L;
            deadline.tv_sec++;
        }
        int rc;
        while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL)) != 0)
            if (rc != EINTR) t_fail("clock_nanosleep(TIMER_ABSTIME): %s", strerror(rc));
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec < deadline.tv_sec ||
            (now.tv_sec == deadline.tv_sec && now.tv_nsec < deadline.tv_nsec))
            t_fail("absolute clock_nanosleep returned before its deadline");
        g_ticks++;
    }
    return NULL;
}

static void *poller(void *arg) {
    (void)arg;
    struct pollfd p = {.fd = g_wake[0], .events = POLLIN};
    for (;;) {
        int n = poll(&p, 1, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n != 1 || !(p.revents & POLLIN))
            t_fail("poll: %d revents %#x %s", n, p.revents, strerror(errno));
        break;
    }
    unsigned char b;
    if (t_read_full(g_wake[0], &b, 1, "wake pipe") != 1) t_fail("wake pipe empty after POLLIN");
    g_poll_byte = b;
    return NULL;
}

int main(int argc, char **argv) {
    t_init("blocked_syscalls");
    static const char *const known[] = {"--rounds", "--ms", NULL};
    const char *usage = "[--rounds N] [--ms N]";
    t_check_args(argc, argv, known, usage);
    g_rounds = t_opt_u64(argc, argv, "--rounds", 150);
    g_ms = t_opt_u64(argc, argv, "--ms", 20);
    if (g_rounds < 10 || g_ms < 1 || g_ms > 900) t_usage(usage);
    t_line("blocked_syscalls rounds=%" PRIu64 " ms=%" PRIu64, g_rounds, g_ms);
    if (pipe(g_pipe) != 0 || pipe(g_wake) != 0) t_fail("pipe: %s", strerror(errno));

    pthread_t tw, tr, ts, tp;
    if (pthread_create(&tr, NULL, reader, NULL) || pthread_create(&tw, NULL, writer, NULL) ||
        pthread_create(&ts, NULL, sleeper, NULL) || pthread_create(&tp, NULL, poller, NULL))
        t_fail("pthread_create");
    pthread_join(tw, NULL);
    pthread_join(tr, NULL);
    g_done = 1;
    pthread_join(ts, NULL);
    t_write_all(g_wake[1], "W", 1, "wake pipe");
    pthread_join(tp, NULL);
    if (g_poll_byte != 'W') t_fail("poller read %#x", (unsigned)g_poll_byte);
    if (g_ticks == 0) t_fail("the sleeper never woke up");

    // Nothing may be left in the data pipe.
    struct pollfd p = {.fd = g_pipe[0], .events = POLLIN};
    if (poll(&p, 1, 0) != 0) t_fail("data left in the pipe after the last message");
    close(g_pipe[1]);
    unsigned char b;
    if (t_read_full(g_pipe[0], &b, 1, "pipe") != 0) t_fail("pipe not at EOF");
    t_line("all %" PRIu64 " messages ok, poller woken", g_rounds);
    return t_pass();
}
