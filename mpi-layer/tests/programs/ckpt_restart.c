/* SPDX-License-Identifier: Apache-2.0 */
/* A rank checkpointed between two phases and restarted under a new mpirun (run_ckpt_restart.sh).
 *   ckpt_restart DIR
 * Phase 1 communicates on MPI_COMM_WORLD, on a Comm_split communicator, a Comm_dup of it and with
 * a derived datatype (a vector, and a struct of it); then every rank writes DIR/pid.<rank>
 * and sleeps outside MPI until DIR/go exists (no message in flight: the harness checkpoints every
 * rank there, kills the job and restarts it from the images). Phase 2 uses the same objects again,
 * makes new ones from them, and checks every value. Output lines are deterministic: the restarted
 * job's lines together with the first job's equal an uninterrupted run's. */
#include <time.h>
#include <unistd.h>

#include "mpit.h"

#define N 12

static int phase(int step, MPI_Comm half, MPI_Comm dup, MPI_Datatype vec, MPI_Datatype pair) {
    int r = mpit_rank, n = mpit_size, failures = 0;
    /* world: a sum whose value is known */
    int x = (r + 1) * step, sum = 0;
    MPI_Allreduce(&x, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (sum != step * n * (n + 1) / 2) failures++;
    /* the split communicator: ranks of one parity, ordered by world rank */
    int hr, hs, hsum = 0;
    MPI_Comm_rank(half, &hr);
    MPI_Comm_size(half, &hs);
    MPI_Allreduce(&r, &hsum, 1, MPI_INT, MPI_SUM, half);
    int want = 0;
    for (int k = r % 2; k < n; k += 2)
        want += k;
    if (hsum != want || hr != r / 2) failures++;
    /* the dup: a broadcast from its last rank */
    int b = hr == hs - 1 ? 1000 * step + r : -1;
    MPI_Bcast(&b, 1, MPI_INT, hs - 1, dup);
    int last = (r % 2) + 2 * (hs - 1);
    if (b != 1000 * step + last) failures++;
    /* a ring on world with the vector type: every other int of a row of N */
    int send[N], recv[N];
    for (int k = 0; k < N; k++)
        send[k] = 100 * step + 10 * r + k, recv[k] = -1;
    int to = (r + 1) % n, from = (r + n - 1) % n;
    MPI_Sendrecv(send, 1, vec, to, step, recv, 1, vec, from, step, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    for (int k = 0; k < N; k++) {
        int expect = k % 2 == 0 ? 100 * step + 10 * from + k : -1;
        if (recv[k] != expect) failures++;
    }
    /* the struct type (an int, then the vector) on the split communicator */
    struct {
        int tag;
        int row[N];
    } s = {step * 7 + r, {0}}, t = {-1, {0}};
    for (int k = 0; k < N; k++)
        s.row[k] = r * N + k;
    int hto = (hr + 1) % hs, hfrom = (hr + hs - 1) % hs;
    MPI_Sendrecv(&s, 1, pair, hto, 0, &t, 1, pair, hfrom, 0, half, MPI_STATUS_IGNORE);
    int wfrom = (r % 2) + 2 * hfrom;
    if (t.tag != step * 7 + wfrom) failures++;
    for (int k = 0; k < N; k += 2)
        if (t.row[k] != wfrom * N + k) failures++;
    printf("rank %d: phase %d sum %d half %d/%d hsum %d bcast %d ring %d..%d struct %d\n", r, step,
           sum, hr, hs, hsum, b, recv[0], recv[N - 2], t.tag);
    fflush(stdout);
    return failures;
}

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "ckpt_restart");
    if (argc < 2) {
        fprintf(stderr, "usage: ckpt_restart DIR\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const char *dir = argv[1];
    int r = mpit_rank;
    MPI_Comm half, dup;
    CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, r % 2, r, &half));
    CHECK_MPI(MPI_Comm_dup(half, &dup));
    MPI_Datatype vec, pair;
    CHECK_MPI(MPI_Type_vector(N / 2, 1, 2, MPI_INT, &vec));
    CHECK_MPI(MPI_Type_commit(&vec));
    int bl[2] = {1, 1};
    MPI_Aint disp[2] = {0, sizeof(int)};
    MPI_Datatype types[2] = {MPI_INT, vec};
    CHECK_MPI(MPI_Type_create_struct(2, bl, disp, types, &pair));
    CHECK_MPI(MPI_Type_commit(&pair));

    mpit_failures += phase(1, half, dup, vec, pair);
    MPI_Barrier(MPI_COMM_WORLD);

    /* The checkpoint point: nothing in flight, every thread outside MPI. */
    char path[4096];
    snprintf(path, sizeof path, "%s/pid.%d", dir, r);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", tmp);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    rename(tmp, path);
    snprintf(path, sizeof path, "%s/go", dir);
    struct timespec nap = {0, 20 * 1000 * 1000};
    while (access(path, F_OK) != 0)
        nanosleep(&nap, NULL);

    mpit_failures += phase(2, half, dup, vec, pair);
    /* New objects made from ones created before the checkpoint. */
    MPI_Comm again;
    CHECK_MPI(MPI_Comm_dup(dup, &again));
    MPI_Datatype vec2;
    CHECK_MPI(MPI_Type_contiguous(2, vec, &vec2));
    CHECK_MPI(MPI_Type_commit(&vec2));
    int size = 0;
    MPI_Type_size(vec2, &size);
    CHECK(size == (int)(N * sizeof(int)));
    mpit_failures += phase(3, half, again, vec, pair);
    MPI_Type_free(&vec2);
    MPI_Comm_free(&again);
    MPI_Type_free(&pair);
    MPI_Type_free(&vec);
    MPI_Comm_free(&dup);
    MPI_Comm_free(&half);
    return mpit_finish();
}
