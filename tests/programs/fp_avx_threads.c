// SPDX-License-Identifier: Apache-2.0
// N worker threads (default 8) iterate AVX2/FMA recurrences whose state lives in ymm registers for
// millions of iterations per phase, each thread under its own rounding mode (MXCSR). Every phase,
// each thread recomputes one lane with scalar FMA code and compares bit for bit, checks an
// integer-exact accumulator against its closed form, its thread-local counter and a ring of values
// on its own stack. Threads meet at a pthread barrier in the middle of each phase and hand their
// results to the main thread under a mutex/condition variable; the main thread prints one line per
// phase. Built with -mavx2 -mfma -ffp-contract=off (this file only).
#include "common.h"

#include <fenv.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>

#define MAX_THREADS 64
#define CHUNK 1024
#define RING 128

struct worker {
    pthread_t th;
    int idx;
    // Published at the end of each phase (under g_mu).
    double v[4];
    double x[4];
    double s[4];
    uint64_t xs[4];
    char err[256];
} __attribute__((aligned(64)));

static struct worker g_w[MAX_THREADS];
static int g_nthreads;
static uint64_t g_phases, g_iters;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv_main = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_cv_workers = PTHREAD_COND_INITIALIZER;
static uint64_t g_go_phase; // workers may run phases <= g_go_phase
static int g_done;          // workers that published the current phase
static pthread_barrier_t g_barrier;
static atomic_uint_fast64_t g_serial;
static __thread uint64_t t_iters_done;

static const int k_modes[4] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};

static uint64_t dbits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static uint64_t ring_value(int idx, uint64_t chunk) {
    return t_mix64(((uint64_t)idx << 48) ^ chunk);
}

// The recurrences: logistic map x = r*x*(1-x) (via FNMADD), a running sum, an integer-exact FMA
// accumulator v += 3*k, and a 64-bit xorshift per lane (AVX2 integer shifts).
#define STEP()                                                                                     \
    do {                                                                                           \
        __m256d t_ = _mm256_mul_pd(r, x);                                                          \
        x = _mm256_fnmadd_pd(t_, x, t_);                                                           \
        s = _mm256_add_pd(s, x);                                                                   \
        v = _mm256_fmadd_pd(k, c3, v);                                                             \
        xs = _mm256_xor_si256(xs, _mm256_slli_epi64(xs, 13));                                      \
        xs = _mm256_xor_si256(xs, _mm256_srli_epi64(xs, 7));                                       \
        xs = _mm256_xor_si256(xs, _mm256_slli_epi64(xs, 17));                                      \
    } while (0)

static void set_err(struct worker *w, const char *fmt, ...) {
    if (w->err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    const int idx = w->idx;
    const int mode = k_modes[idx % 4];
    if (fesetround(mode) != 0) t_fail("fesetround");

    uint64_t ring[RING]; // lives on this thread's stack
    memset(ring, 0, sizeof ring);
    uint64_t chunk_no = 0;

    __m256d r = _mm256_set_pd(3.71 + 0.003 * idx, 3.77 + 0.002 * idx, 3.83 + 0.001 * idx,
                              3.89 + 0.0005 * idx);
    __m256d x = _mm256_set_pd(0.11 + 0.01 * idx, 0.23 + 0.005 * idx, 0.37 + 0.002 * idx,
                              0.41 + 0.001 * idx);
    __m256d s = _mm256_setzero_pd();
    __m256d v = _mm256_setzero_pd();
    const __m256d k = _mm256_set_pd(idx + 4, idx + 3, idx + 2, idx + 1);
    const __m256d c3 = _mm256_set1_pd(3.0);
    __m256i xs = _mm256_set_epi64x(
        (long long)(t_mix64(idx * 4 + 3) | 1), (long long)(t_mix64(idx * 4 + 2) | 1),
        (long long)(t_mix64(idx * 4 + 1) | 1), (long long)(t_mix64(idx * 4 + 0) | 1));

    for (uint64_t p = 1; p <= g_phases; p++) {
        pthread_mutex_lock(&g_mu);
        while (g_go_phase < p)
            pthread_cond_wait(&g_cv_workers, &g_mu);
        pthread_mutex_unlock(&g_mu);

        // Starting values of the lane that is recomputed with scalar code this phase.
        const int lane = (int)(p % 4);
        double lx[4], ls[4], lr[4];
        uint64_t lxs[4];
        _mm256_storeu_pd(lx, x);
        _mm256_storeu_pd(ls, s);
        _mm256_storeu_pd(lr, r);
        _mm256_storeu_si256((__m256i *)lxs, xs);

        for (int half = 0; half < 2; half++) {
            uint64_t n = half == 0 ? g_iters / 2 : g_iters - g_iters / 2;
            while (n > 0) {
                uint64_t m = n < CHUNK ? n : CHUNK;
                for (uint64_t i = 0; i < m; i++)
                    STEP();
                n -= m;
                t_iters_done += m;
                ring[chunk_no % RING] = ring_value(idx, chunk_no);
                if (chunk_no >= RING / 2 &&
                    ring[(chunk_no - RING / 2) % RING] != ring_value(idx, chunk_no - RING / 2))
                    set_err(w, "thread %d: stack ring slot corrupted at chunk %" PRIu64, idx,
                            chunk_no);
                chunk_no++;
            }
            if (half == 0) {
                int rc = pthread_barrier_wait(&g_barrier);
                if (rc == PTHREAD_BARRIER_SERIAL_THREAD)
                    atomic_fetch_add(&g_serial, 1);
                else if (rc != 0)
                    t_fail("pthread_barrier_wait: %d", rc);
            }
        }

        // Scalar recomputation of one lane, same operations, same rounding mode.
        double sx = lx[lane], ss = ls[lane], sr = lr[lane];
        uint64_t sq = lxs[lane];
        for (uint64_t i = 0; i < g_iters; i++) {
            double t = sr * sx;
            sx = fma(-t, sx, t);
            ss = ss + sx;
            sq ^= sq << 13;
            sq ^= sq >> 7;
            sq ^= sq << 17;
        }
        double vx[4], vs[4], vv[4];
        uint64_t vxs[4];
        _mm256_storeu_pd(vx, x);
        _mm256_storeu_pd(vs, s);
        _mm256_storeu_pd(vv, v);
        _mm256_storeu_si256((__m256i *)vxs, xs);
        if (dbits(sx) != dbits(vx[lane]) || dbits(ss) != dbits(vs[lane]))
            set_err(w,
                    "thread %d phase %" PRIu64 " lane %d: vector %a/%a != scalar %a/%a "
                    "(ymm state or MXCSR lost?)",
                    idx, p, lane, vx[lane], vs[lane], sx, ss);
        if (sq != vxs[lane])
            set_err(w,
                    "thread %d phase %" PRIu64 " lane %d: xorshift %016" PRIx64 " != %016" PRIx64,
                    idx, p, lane, vxs[lane], sq);
        for (int l = 0; l < 4; l++) {
            double want = 3.0 * (double)(idx + 1 + l) * (double)(p * g_iters);
            if (vv[l] != want)
                set_err(w, "thread %d phase %" PRIu64 " lane %d: fma accumulator %.1f != %.1f", idx,
                        p, l, vv[l], want);
        }
        if (fegetround() != mode)
            set_err(w, "thread %d: rounding mode %d != %d (MXCSR/x87 CW lost)", idx, fegetround(),
                    mode);
        if (t_iters_done != p * g_iters)
            set_err(w, "thread %d: thread-local counter %" PRIu64 " != %" PRIu64, idx, t_iters_done,
                    p * g_iters);

        pthread_mutex_lock(&g_mu);
        memcpy(w->v, vv, sizeof vv);
        memcpy(w->x, vx, sizeof vx);
        memcpy(w->s, vs, sizeof vs);
        memcpy(w->xs, vxs, sizeof vxs);
        g_done++;
        pthread_cond_signal(&g_cv_main);
        pthread_mutex_unlock(&g_mu);
    }
    return NULL;
}

int main(int argc, char **argv) {
    t_init("fp_avx_threads");
    static const char *const known[] = {"--threads", "--phases", "--iters", NULL};
    t_check_args(argc, argv, known, "[--threads N] [--phases N] [--iters N]");
    g_nthreads = (int)t_opt_u64(argc, argv, "--threads", 8);
    g_phases = t_opt_u64(argc, argv, "--phases", 40);
    g_iters = t_opt_u64(argc, argv, "--iters", 2000000);
    if (g_nthreads < 1 || g_nthreads > MAX_THREADS || g_phases < 1 || g_iters < 2)
        t_usage("[--threads 1..64] [--phases >=1] [--iters >=2]");
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        t_fail("CPU lacks AVX2/FMA");

    t_line("fp_avx_threads threads=%d phases=%" PRIu64 " iters=%" PRIu64, g_nthreads, g_phases,
           g_iters);
    if (pthread_barrier_init(&g_barrier, NULL, (unsigned)g_nthreads) != 0)
        t_fail("pthread_barrier_init");
    for (int i = 0; i < g_nthreads; i++) {
        g_w[i].idx = i;
        if (pthread_create(&g_w[i].th, NULL, worker_main, &g_w[i]) != 0) t_fail("pthread_create");
    }

    for (uint64_t p = 1; p <= g_phases; p++) {
        pthread_mutex_lock(&g_mu);
        g_go_phase = p;
        pthread_cond_broadcast(&g_cv_workers);
        while (g_done < g_nthreads)
            pthread_cond_wait(&g_cv_main, &g_mu);
        g_done = 0;
        uint64_t hx = T_FNV_INIT, hs = T_FNV_INIT, hq = T_FNV_INIT;
        double vsum = 0;
        for (int i = 0; i < g_nthreads; i++) {
            if (g_w[i].err[0]) {
                pthread_mutex_unlock(&g_mu);
                t_fail("%s", g_w[i].err);
            }
            hx = t_fnv1a(hx, g_w[i].x, sizeof g_w[i].x);
            hs = t_fnv1a(hs, g_w[i].s, sizeof g_w[i].s);
            hq = t_fnv1a(hq, g_w[i].xs, sizeof g_w[i].xs);
            for (int l = 0; l < 4; l++)
                vsum += g_w[i].v[l];
        }
        pthread_mutex_unlock(&g_mu);
        t_line("phase %3" PRIu64 " fma=%.0f logistic=%016" PRIx64 " sum=%016" PRIx64
               " xorshift=%016" PRIx64,
               p, vsum, hx, hs, hq);
    }
    for (int i = 0; i < g_nthreads; i++)
        pthread_join(g_w[i].th, NULL);
    uint64_t serial = atomic_load(&g_serial);
    if (serial != g_phases)
        t_fail("barrier serial thread count %" PRIu64 " != %" PRIu64, serial, g_phases);
    if (fegetround() != FE_TONEAREST) t_fail("main thread rounding mode changed");
    t_line("barriers=%" PRIu64, serial);
    return t_pass();
}
