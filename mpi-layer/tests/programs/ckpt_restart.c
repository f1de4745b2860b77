/* SPDX-License-Identifier: Apache-2.0 */
/* A rank checkpointed between phases and restarted under a new mpirun (run_ckpt_restart.sh).
 *   ckpt_restart DIR [POINTS [refuse|freed_errh|refuse_errh|busy|self IMAGEDIR]]
 * MPI_THREAD_MULTIPLE, a helper thread that calls MPI in every phase (and waits outside MPI in
 * between). Phase 1 communicates on MPI_COMM_WORLD, on a Comm_split communicator, a Comm_dup of
 * it, a Comm_split that gives rank 0 MPI_COMM_NULL, and with derived datatypes (a vector, a struct
 * of it); then, at each of POINTS checkpoint points (default 1), every rank writes
 * DIR/pid.<point>.<rank> and sleeps outside MPI until DIR/go.<point> exists (no message in flight:
 * the harness checkpoints every rank there, kills the job and restarts it from the images). The
 * phases after a point use the same objects again, make new ones from them, and check every value.
 * Output lines are deterministic: the lines of all the jobs together equal an uninterrupted run's.
 * "refuse": an MPI window with a passive-target lock held on it (MPI_Win_lock, shared, on rank 0)
 * lives across the points (a checkpoint must be refused, naming it).
 * "busy": at point 1 the helper thread waits inside MPI_Recv (a checkpoint must be refused).
 * "freed_errh": the program frees its error handler right after setting it on a communicator,
 * which keeps it (the usual pattern: carried, the handler still called after a restart).
 * "refuse_errh": the same, and a Comm_dup of that communicator, which got the freed handler from
 * it, lives across the point (a checkpoint must be refused: nothing could set it again).
 * "refuse_greq": a generalized request (MPI_Grequest_start) is pending across the points, completed
 * after them; "refuse_mpit": the MPI tool interface is initialised across them (MPI_T handles are
 * not carried): a checkpoint must be refused, naming it.
 * "self IMAGEDIR": at point 1 every rank asks its own ghost agent for its checkpoint
 * (ghost_agent_request_checkpoint, as the job coordinator does) into IMAGEDIR/rank<R>.ghost. */
#include <dlfcn.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "mpit.h"

#define N 12

/* The helper thread: one Allreduce on its own communicator per phase. */
static pthread_barrier_t go_helper, helper_done;
static MPI_Comm helper_comm;
static int helper_step, helper_result;

static void *helper_main(void *arg) {
    (void)arg;
    for (;;) {
        pthread_barrier_wait(&go_helper);
        if (helper_step == -2) { /* "busy": inside MPI until main sends */
            int got = 0;
            MPI_Recv(&got, 1, MPI_INT, mpit_rank, 99, helper_comm, MPI_STATUS_IGNORE);
            helper_result = got;
            pthread_barrier_wait(&helper_done);
            continue;
        }
        if (helper_step < 0) return NULL;
        int x = helper_step * (mpit_rank + 1);
        MPI_Allreduce(&x, &helper_result, 1, MPI_INT, MPI_SUM, helper_comm);
        pthread_barrier_wait(&helper_done);
    }
}

static int phase(int step, MPI_Comm half, MPI_Comm dup, MPI_Comm others, MPI_Datatype vec,
                 MPI_Datatype pair) {
    int r = mpit_rank, n = mpit_size, failures = 0;
    helper_step = step;
    pthread_barrier_wait(&go_helper);
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
    /* the communicator rank 0 is not part of */
    int osum = -1;
    if (r == 0) {
        if (others != MPI_COMM_NULL) failures++;
    } else {
        int one = step;
        MPI_Allreduce(&one, &osum, 1, MPI_INT, MPI_SUM, others);
        if (osum != step * (n - 1)) failures++;
    }
    pthread_barrier_wait(&helper_done);
    if (helper_result != step * n * (n + 1) / 2) failures++;
    printf("rank %d: phase %d sum %d half %d/%d hsum %d bcast %d ring %d..%d struct %d others %d "
           "helper %d\n",
           r, step, sum, hr, hs, hsum, b, recv[0], recv[N - 2], t.tag, osum, helper_result);
    fflush(stdout);
    return failures;
}

static int errh_calls;
static void count_errors(MPI_Comm *c, int *code, ...) {
    (void)c;
    if (*code == MPI_ERR_OTHER) errh_calls++;
}

static const char *self_image_dir; /* "self" mode */

/* Checkpoint point k: nothing in flight, every thread outside MPI. */
static int greq_queries;
static int greq_query(void *extra, MPI_Status *status) {
    (void)extra;
    greq_queries++;
    MPI_Status_set_elements(status, MPI_BYTE, 0);
    MPI_Status_set_cancelled(status, 0);
    status->MPI_SOURCE = MPI_UNDEFINED;
    status->MPI_TAG = MPI_UNDEFINED;
    return MPI_SUCCESS;
}
static int greq_free(void *extra) {
    (void)extra;
    return MPI_SUCCESS;
}
static int greq_cancel(void *extra, int complete) {
    (void)extra, (void)complete;
    return MPI_SUCCESS;
}

static void wait_point(const char *dir, int k) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/pid.%d.%d", dir, k, mpit_rank);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", tmp);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    rename(tmp, path);
    if (self_image_dir && k == 1) {
        int (*request)(const char *, int) =
            (int (*)(const char *, int))dlsym(RTLD_DEFAULT, "ghost_agent_request_checkpoint");
        char image[4096];
        snprintf(image, sizeof image, "%s/rank%d.ghost", self_image_dir, mpit_rank);
        if (request && request(image, 0) != 0) fprintf(stderr, "cannot request %s\n", image);
    }
    snprintf(path, sizeof path, "%s/go.%d", dir, k);
    struct timespec nap = {0, 20 * 1000 * 1000};
    while (access(path, F_OK) != 0)
        nanosleep(&nap, NULL);
}

int main(int argc, char **argv) {
    mpit_name = "ckpt_restart";
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &mpit_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &mpit_size);
    if (argc < 2 || provided != MPI_THREAD_MULTIPLE) {
        fprintf(stderr, "usage: ckpt_restart DIR [POINTS [refuse]] (needs MPI_THREAD_MULTIPLE)\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const char *dir = argv[1];
    int points = argc > 2 ? atoi(argv[2]) : 1;
    int refuse = argc > 3 && strcmp(argv[3], "refuse") == 0;
    int refuse_greq = argc > 3 && strcmp(argv[3], "refuse_greq") == 0;
    int refuse_mpit = argc > 3 && strcmp(argv[3], "refuse_mpit") == 0;
    int busy = argc > 3 && strcmp(argv[3], "busy") == 0;
    int refuse_errh = argc > 3 && strcmp(argv[3], "refuse_errh") == 0;
    int freed_errh = refuse_errh || (argc > 3 && strcmp(argv[3], "freed_errh") == 0);
    if (argc > 4 && strcmp(argv[3], "self") == 0) self_image_dir = argv[4];
    int r = mpit_rank;
    MPI_Comm half, dup, others;
    CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, r % 2, r, &half));
    CHECK_MPI(MPI_Comm_dup(half, &dup));
    CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, r == 0 ? MPI_UNDEFINED : 1, r, &others));
    CHECK_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &helper_comm));
    /* what communicators carry besides their creation: error handlers, names */
    MPI_Errhandler counting;
    CHECK_MPI(MPI_Comm_create_errhandler(count_errors, &counting));
    CHECK_MPI(MPI_Comm_set_errhandler(dup, counting));
    if (freed_errh) MPI_Errhandler_free(&counting); /* dup keeps it; the handle is gone */
    MPI_Comm inherits = MPI_COMM_NULL;
    if (refuse_errh) CHECK_MPI(MPI_Comm_dup(dup, &inherits)); /* gets the freed handler */
    CHECK_MPI(MPI_Comm_set_errhandler(half, MPI_ERRORS_RETURN));
    CHECK_MPI(MPI_Comm_set_name(half, "half"));
    /* objects made from parents freed before the checkpoint (a common idiom) */
    MPI_Comm tmp, child;
    CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, 0, -r, &tmp)); /* reversed order */
    CHECK_MPI(MPI_Comm_dup(tmp, &child));
    MPI_Comm_free(&tmp);
    MPI_Datatype triple, padded;
    CHECK_MPI(MPI_Type_contiguous(3, MPI_INT, &triple));
    CHECK_MPI(MPI_Type_create_resized(triple, 0, 4 * sizeof(int), &padded));
    CHECK_MPI(MPI_Type_commit(&padded));
    MPI_Type_free(&triple);
    /* a window whose passive-target epoch stays open: what the layer does not carry */
    static char win_buf[64];
    MPI_Win win = MPI_WIN_NULL;
    if (refuse) {
        CHECK_MPI(MPI_Win_create(win_buf, sizeof win_buf, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win));
        CHECK_MPI(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, win));
    }
    MPI_Request greq = MPI_REQUEST_NULL;
    if (refuse_greq) CHECK_MPI(MPI_Grequest_start(greq_query, greq_free, greq_cancel, NULL, &greq));
    int mpit_level = 0;
    if (refuse_mpit) CHECK_MPI(MPI_T_init_thread(MPI_THREAD_MULTIPLE, &mpit_level));
    pthread_barrier_init(&go_helper, NULL, 2);
    pthread_barrier_init(&helper_done, NULL, 2);
    pthread_t helper;
    pthread_create(&helper, NULL, helper_main, NULL);
    MPI_Datatype vec, pair;
    CHECK_MPI(MPI_Type_vector(N / 2, 1, 2, MPI_INT, &vec));
    CHECK_MPI(MPI_Type_commit(&vec));
    int bl[2] = {1, 1};
    MPI_Aint disp[2] = {0, sizeof(int)};
    MPI_Datatype types[2] = {MPI_INT, vec};
    CHECK_MPI(MPI_Type_create_struct(2, bl, disp, types, &pair));
    CHECK_MPI(MPI_Type_commit(&pair));

    mpit_failures += phase(1, half, dup, others, vec, pair);
    /* Answers the layer keeps in the upper half must stay right in a restored rank. */
    int hr0 = -1, hs0 = -1, psz0 = -1, csz0 = -1;
    MPI_Comm_rank(half, &hr0);
    MPI_Comm_size(half, &hs0);
    MPI_Type_size(pair, &psz0);
    MPI_Type_size(MPI_INT, &csz0);
    double t_before = MPI_Wtime();
    for (int k = 1; k <= points; k++) {
        MPI_Barrier(MPI_COMM_WORLD);
        if (busy && k == 1) {
            helper_step = -2;
            pthread_barrier_wait(&go_helper);
        }
        wait_point(dir, k);
        if (busy && k == 1) {
            int token = 4242;
            MPI_Send(&token, 1, MPI_INT, mpit_rank, 99, helper_comm);
            pthread_barrier_wait(&helper_done);
            CHECK(helper_result == 4242);
        }
        mpit_failures += phase(k + 1, half, dup, others, vec, pair);
    }
    if (refuse_greq) {
        CHECK_MPI(MPI_Grequest_complete(greq));
        CHECK_MPI(MPI_Waitall(1, &greq, MPI_STATUSES_IGNORE));
        CHECK(greq_queries == 1); /* (MPICH's path asked for the status twice: two calls) */
    }
    if (refuse_mpit) CHECK_MPI(MPI_T_finalize());
    {
        int hr = -2, hs = -2, psz = -2, csz = -2, lvl = -1, ini = 0, fin = 1, mainth = 0;
        MPI_Comm_rank(half, &hr);
        MPI_Comm_size(half, &hs);
        MPI_Type_size(pair, &psz);
        MPI_Type_size(MPI_INT, &csz);
        MPI_Query_thread(&lvl);
        MPI_Initialized(&ini);
        MPI_Finalized(&fin);
        MPI_Is_thread_main(&mainth);
        CHECK(hr == hr0 && hs == hs0 && hr == r / 2 && hs == (mpit_size + 1 - r % 2) / 2);
        CHECK(psz == psz0 && psz == (int)(sizeof(int) + (N / 2) * sizeof(int)) &&
              csz == (int)sizeof(int));
        CHECK(lvl == MPI_THREAD_MULTIPLE && ini == 1 && fin == 0 && mainth == 1);
        CHECK(MPI_Wtime() >= t_before && MPI_Wtick() > 0);
    }
    /* New objects made from ones created before the checkpoint. */
    MPI_Comm again;
    CHECK_MPI(MPI_Comm_dup(dup, &again));
    MPI_Datatype vec2;
    CHECK_MPI(MPI_Type_contiguous(2, vec, &vec2));
    CHECK_MPI(MPI_Type_commit(&vec2));
    int size = 0;
    MPI_Type_size(vec2, &size);
    CHECK(size == (int)(N * sizeof(int)));
    mpit_failures += phase(points + 2, half, again, others, vec, pair);
    int crank = -1, cmax = -1;
    MPI_Comm_rank(child, &crank);
    MPI_Allreduce(&crank, &cmax, 1, MPI_INT, MPI_MAX, child);
    CHECK(crank == mpit_size - 1 - r && cmax == mpit_size - 1);
    int quad[8] = {r, r + 1, r + 2, -1, r + 3, r + 4, r + 5, -1}, got[8];
    for (int k = 0; k < 8; k++)
        got[k] = -2;
    MPI_Sendrecv(quad, 2, padded, 0, 5, got, 2, padded, 0, 5, MPI_COMM_SELF, MPI_STATUS_IGNORE);
    MPI_Aint lb = -1, extent = -1;
    MPI_Type_get_extent(padded, &lb, &extent);
    CHECK(lb == 0 && extent == 4 * sizeof(int) && got[4] == r + 3 && got[3] == -2);
    printf("rank %d: child rank %d max %d padded extent %ld got %d %d %d\n", r, crank, cmax,
           (long)extent, got[0], got[4], got[6]);
    MPI_Type_free(&padded);
    MPI_Comm_free(&child);
    MPI_Errhandler eh;
    CHECK_MPI(MPI_Comm_get_errhandler(half, &eh));
    int returns = eh == MPI_ERRORS_RETURN;
    CHECK(returns);
    MPI_Errhandler_free(&eh);
    CHECK_MPI(MPI_Comm_call_errhandler(dup, MPI_ERR_OTHER));
    char name[MPI_MAX_OBJECT_NAME] = "";
    int len = 0;
    CHECK_MPI(MPI_Comm_get_name(half, name, &len));
    printf("rank %d: name %s errhandler %s calls %d\n", r, name,
           returns ? "MPI_ERRORS_RETURN" : "other", errh_calls);
    if (!freed_errh) MPI_Errhandler_free(&counting);
    if (inherits != MPI_COMM_NULL) MPI_Comm_free(&inherits);
    helper_step = -1;
    pthread_barrier_wait(&go_helper);
    pthread_join(helper, NULL);
    if (win != MPI_WIN_NULL) {
        MPI_Win_unlock(0, win);
        MPI_Win_free(&win);
    }
    if (others != MPI_COMM_NULL) MPI_Comm_free(&others);
    MPI_Comm_free(&helper_comm);
    MPI_Type_free(&vec2);
    MPI_Comm_free(&again);
    MPI_Type_free(&pair);
    MPI_Type_free(&vec);
    MPI_Comm_free(&dup);
    MPI_Comm_free(&half);
    return mpit_finish();
}
