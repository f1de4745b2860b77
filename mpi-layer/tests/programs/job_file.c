/* SPDX-License-Identifier: Apache-2.0 */
/* A job that logs to a file through stdio, fully buffered and never flushed until its end, as
 * LAMMPS writes its log: STEPS steps of a ring exchange (Sendrecv), each received value checked
 * and written as one line to a file this rank opened after MPI_Init; SLEEP_MS of sleep between
 * steps (outside MPI). At the end the file is read back: every step's line must be there once, in
 * order. A checkpoint flushes the program's streams before the image is taken; flushed from the
 * agent's manager thread (a descriptor table of its own), the file's buffer went to a descriptor
 * that did not exist there and glibc dropped it: the lines before the checkpoint were lost, also
 * from a job that went on (lammps log). Prints only at its end.
 * Usage: job_file STEPS [SLEEP_MS] */
#include <time.h>
#include <unistd.h>

#include "mpit.h"

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "job_file");
    int steps = argc > 1 ? atoi(argv[1]) : 100;
    int sleep_ms = argc > 2 ? atoi(argv[2]) : 20;
    int r = mpit_rank, n = mpit_size;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    const char *tmp = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/ghost-job-file.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    CHECK(f != NULL);
    if (!f) return mpit_finish();
    unsigned long long sum = 1469598103934665603ull;
    for (int s = 0; s < steps; s++) {
        mpit_step(s, steps);
        long long out = (long long)r * 1000003 + s, in = -1;
        MPI_Sendrecv(&out, 1, MPI_LONG_LONG, right, s, &in, 1, MPI_LONG_LONG, left, s,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        CHECK(in == (long long)left * 1000003 + s);
        fprintf(f, "step %05d from rank %d: %lld\n", s, left, in);
        sum = (sum ^ (unsigned long long)in) * 1099511628211ull;
        if (sleep_ms > 0) {
            struct timespec ts = {sleep_ms / 1000, (long)(sleep_ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0) {
            }
        }
    }
    CHECK(fclose(f) == 0);
    FILE *back = fopen(path, "r");
    CHECK(back != NULL);
    int lines = 0, wrong = 0;
    char line[128], want[128];
    while (back && fgets(line, sizeof line, back)) {
        snprintf(want, sizeof want, "step %05d from rank %d: %lld\n", lines, left,
                 (long long)left * 1000003 + lines);
        if (strcmp(line, want) != 0) wrong++;
        lines++;
    }
    if (back) fclose(back);
    unlink(path);
    if (lines != steps || wrong)
        printf("rank %d: job_file FAIL: the file has %d lines (%d wrong), %d written\n", r, lines,
               wrong, steps);
    CHECK(lines == steps && wrong == 0);
    printf("rank %d: job_file %d steps checksum %016llx\n", r, steps, sum);
    return mpit_finish();
}
