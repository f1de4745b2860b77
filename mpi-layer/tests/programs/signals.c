/* SPDX-License-Identifier: Apache-2.0 */
/* An application signal handler that fires while ranks are inside MPI must run with the
 * application's own TLS (errno, thread_local): a 200 us SIGALRM timer aimed at the main thread
 * (process-directed signals may land on MPI's helper threads, natively too) runs during a ping-pong
 * loop. Then a signal goes to every thread of the process, MPI's own threads included.
 *
 * The loop waits by polling MPI_Test and yields the CPU every few polls: MPICH (ch4:ucx) busy-polls
 * in MPI_Recv without ever yielding, and with more ranks than cores (np 4 on 2 here) the scheduler
 * may put both ranks of a pair on one core, where every message then waits for a time slice (20000
 * round trips took minutes: a hang). The even rank also ends the loop after a few seconds of wall
 * time and tells its peer, so that no placement can make the test run unbounded. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mpit.h"

static __thread int tls_marker;
/* Set in every thread from the TLS image: a handler run on a thread whose TLS is not the
 * program's (ghost's lower half) reads something else there. */
static __thread volatile int tls_from_image = 4242; /* volatile: never written, not folded */
static volatile sig_atomic_t all_seen, all_bad;
static int *main_marker_addr, *main_errno_addr;
static volatile sig_atomic_t ticks, bad;

static void on_alarm(int sig) {
    (void)sig;
    int saved_errno = errno; /* a handler must leave the interrupted code's errno alone (POSIX) */
    ticks++;
    if (&tls_marker != main_marker_addr || tls_marker != 4242) bad++;
    if (&errno != main_errno_addr) bad++; /* errno is the application's own, not MPI's */
    errno = 777;
    errno = saved_errno;
}

static void on_all(int sig) {
    (void)sig;
    all_seen++;
    if (tls_from_image != 4242) all_bad++;
}

/* Whether thread `tid` of this process blocks `sig` (its SigBlk). */
static int thread_blocks(int tid, int sig) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    FILE *f = fopen(path, "r");
    if (!f) return 1; /* gone */
    unsigned long long mask = ~0ULL;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "SigBlk:", 7) == 0) mask = strtoull(line + 7, NULL, 16);
    fclose(f);
    return (mask >> (sig - 1)) & 1;
}

/* A real-time signal (queued, not merged) to every thread of the process that takes it, MPI's
 * own threads included: wherever the kernel delivers it, the handler runs with the program's TLS
 * (ghost: a thread of the lower half that takes signals passes it on to one of the program's),
 * once per signal. */
static void signal_every_thread(void) {
    int sig = SIGRTMIN + 5, sent = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_all;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(sig, &sa, NULL) == 0);
    DIR *d = opendir("/proc/self/task");
    CHECK(d != NULL);
    for (struct dirent *e; d && (e = readdir(d));) {
        int tid = atoi(e->d_name);
        if (tid <= 0 || thread_blocks(tid, sig)) continue;
        if (syscall(SYS_tgkill, getpid(), tid, sig) == 0) sent++;
    }
    if (d) closedir(d);
    for (int ms = 0; all_seen < sent && ms < 5000; ms++) {
        struct timespec t = {0, 1000000};
        nanosleep(&t, NULL);
    }
    if (getenv("MPIT_DEBUG") || all_seen != sent)
        printf("rank %d: sent %d seen %d\n", mpit_rank, sent, (int)all_seen);
    CHECK(all_seen == sent);
    CHECK(all_bad == 0);
}

/* Waits for `req` inside MPI (where most timer signals land), yielding every 64 polls. */
static void wait_yielding(MPI_Request *req) {
    int done = 0;
    for (unsigned n = 1;; n++) {
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) return;
        if (n % 64 == 0) sched_yield();
    }
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "signals");
    tls_marker = 4242;
    main_marker_addr = &tls_marker;
    main_errno_addr = &errno;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
    CHECK(sigaction(SIGALRM, NULL, &old) == 0);
    CHECK(old.sa_handler == on_alarm); /* the application sees its own handler */
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGALRM;
    ev._sigev_un._tid = (int)syscall(SYS_gettid);
    timer_t tm;
    CHECK(timer_create(CLOCK_MONOTONIC, &ev, &tm) == 0);
    struct itimerspec its = {{0, 200000}, {0, 200000}};
    CHECK(timer_settime(tm, 0, &its, NULL) == 0);
    int peer = mpit_rank ^ 1, x = 0;
    double t0 = MPI_Wtime();
    MPI_Request rq;
    for (int i = 0; peer < mpit_size; i++) {
        if (mpit_rank % 2 == 0) {
            int v = (i < 20000 && MPI_Wtime() - t0 < 5.0) ? i : -1; /* -1: the last round trip */
            MPI_Irecv(&x, 1, MPI_INT, peer, 0, MPI_COMM_WORLD, &rq);
            MPI_Request sq;
            MPI_Isend(&v, 1, MPI_INT, peer, 0, MPI_COMM_WORLD, &sq);
            wait_yielding(&sq);
            wait_yielding(&rq);
            CHECK(x == v);
            if (v < 0) break;
        } else {
            MPI_Irecv(&x, 1, MPI_INT, peer, 0, MPI_COMM_WORLD, &rq);
            wait_yielding(&rq);
            MPI_Isend(&x, 1, MPI_INT, peer, 0, MPI_COMM_WORLD, &rq);
            wait_yielding(&rq);
            if (x < 0) break;
            CHECK(x == i);
        }
    }
    timer_delete(tm);
    CHECK(bad == 0);
    signal_every_thread();
    if (ticks == 0) printf("rank %d: no timer signal arrived\n", mpit_rank);
    return mpit_finish();
}
