/* SPDX-License-Identifier: Apache-2.0 */
/* An application signal handler that fires while ranks are inside MPI must run with the application's
 * own TLS (errno, thread_local): a 200 us SIGALRM timer aimed at the main thread (process-directed
 * signals may land on MPI's helper threads, natively too) runs during a ping-pong loop. */
#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mpit.h"

static __thread int tls_marker;
static int *main_marker_addr;
static volatile int ticks, bad;

static void on_alarm(int sig) {
  (void)sig;
  ticks++;
  if (&tls_marker != main_marker_addr || tls_marker != 4242) bad++;
  errno = 777; /* must not leak into the interrupted code's errno */
}

int main(int argc, char **argv) {
  mpit_init(&argc, &argv, "signals");
  tls_marker = 4242;
  main_marker_addr = &tls_marker;
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
  for (int i = 0; i < 20000 && peer < mpit_size; i++) {
    if (mpit_rank % 2 == 0) {
      MPI_Send(&i, 1, MPI_INT, peer, 0, MPI_COMM_WORLD);
      MPI_Recv(&x, 1, MPI_INT, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {
      MPI_Recv(&x, 1, MPI_INT, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(&x, 1, MPI_INT, peer, 0, MPI_COMM_WORLD);
    }
    CHECK(x == i);
  }
  timer_delete(tm);
  CHECK(bad == 0);
  if (ticks == 0) printf("rank %d: no timer signal arrived\n", mpit_rank);
  return mpit_finish();
}
