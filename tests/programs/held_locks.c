// SPDX-License-Identifier: Apache-2.0
// Locks that remember their owner's thread id, held across a checkpoint. Pairs of threads take
// turns on a recursive mutex, an error-checking mutex, a robust mutex, a priority-inheritance
// mutex and a rwlock (write side; a reader thread reads meanwhile), each holding it across a
// sleep, so that a park almost always finds them inside. One thread holds flockfile(stdout) the
// same way, and one keeps the dynamic linker's locks busy: dl_iterate_phdr with a callback that
// sleeps (_dl_load_write_lock), dlopen/dlsym/dladdr/dlclose of libm (_dl_load_lock).
//
// Every relock and unlock is checked: an owner check that fails (EPERM from unlock, a relock that
// does not report EDEADLK or blocks) means the lock still names a thread id the process no longer
// has — what a copy with new thread ids gets unless ghost rewrites those ids. A watchdog fails the
// run if a thread makes no progress for 10 s of its own ticks (time spent parked or stopped by a
// checkpoint does not count), so that such a deadlock ends with FAIL instead of a hang.
// Failures are written with write(2): the stdout lock may be what is stuck.
#include "common.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

enum { K_RECURSIVE, K_ERRORCHECK, K_ROBUST, K_PI, K_RWLOCK, K_KINDS };
static const char *const kind_names[K_KINDS] = {"recursive", "errorcheck", "robust", "pi",
                                                "rwlock"};

enum { HOLDERS = 2 };
enum { T_STDIO = K_KINDS * HOLDERS, T_READER, T_DL, T_COUNT };

static pthread_mutex_t g_mutex[K_RWLOCK];
// One more, taken by the main thread before anything else and released at the end, in a page of
// its own that nothing writes meanwhile: a pre-copy copies that page once and the image after it
// never again, so a copy with new ids gets this owner right only if ghost looks at what the
// pre-copy placed (a write to the page would hide that).
static pthread_mutex_t *g_quiet;
// And one made and unmade in a page of its own: zeros, then an error-checking mutex taken across a
// hold, released, zeros again. A pre-copy may copy that page empty and the image after it find
// the lock held: its owner is then only in a page the image stores again, which must be looked at
// whatever the pre-copy's copy of it held.
static pthread_mutex_t *g_anew;
static uint64_t g_anew_count;
static pthread_rwlock_t g_rwlock;
static uint64_t g_guarded[K_KINDS]; // bumped only under the lock of its kind
static uint64_t g_done[T_COUNT];    // per thread: critical sections completed
static atomic_uint_fast64_t g_progress[T_COUNT];
static atomic_int g_finished[T_COUNT];
static atomic_int g_stop, g_joined;
static uint64_t g_hold_ns;

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "FAIL held_locks: ");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(msg + n, sizeof msg - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof msg - 2) n = (int)sizeof msg - 2;
    msg[n++] = '\n';
    (void)!write(1, msg, (size_t)n);
    (void)!write(2, msg, (size_t)n);
    _exit(1);
}

static void expect(int got, int want, const char *what, int t) {
    if (got != want)
        fail("thread %d: %s returned %d (%s), expected %d", t, what, got, strerror(got), want);
}

static void hold(void) {
    t_sleep_ns(g_hold_ns);
}

static void *holder(void *arg) {
    int t = (int)(intptr_t)arg, kind = t / HOLDERS;
    while (!atomic_load(&g_stop)) {
        if (kind == K_RWLOCK) {
            expect(pthread_rwlock_wrlock(&g_rwlock), 0, "pthread_rwlock_wrlock", t);
            expect(pthread_rwlock_wrlock(&g_rwlock), EDEADLK, "pthread_rwlock_wrlock again", t);
            g_guarded[kind]++;
            hold();
            expect(pthread_rwlock_unlock(&g_rwlock), 0, "pthread_rwlock_unlock", t);
        } else {
            pthread_mutex_t *m = &g_mutex[kind];
            int r = pthread_mutex_lock(m);
            if (r == EOWNERDEAD) fail("thread %d: %s mutex: EOWNERDEAD", t, kind_names[kind]);
            expect(r, 0, "pthread_mutex_lock", t);
            // The owner checks: a recursive mutex counts up, the others report the deadlock.
            expect(pthread_mutex_lock(m), kind == K_RECURSIVE ? 0 : EDEADLK,
                   "pthread_mutex_lock again", t);
            g_guarded[kind]++;
            hold();
            if (kind == K_RECURSIVE) expect(pthread_mutex_unlock(m), 0, "inner unlock", t);
            expect(pthread_mutex_unlock(m), 0, "pthread_mutex_unlock", t);
        }
        g_done[t]++;
        atomic_fetch_add(&g_progress[t], 1);
        // The rwlock prefers writers: with its two writers each waiting while the other holds it,
        // the reader never got in (natively too, once a run lasted the watchdog's 10 s). Its
        // writers rest longer than a hold, which leaves the lock free now and then.
        t_sleep_ns(kind == K_RWLOCK ? g_hold_ns * 3 : g_hold_ns / 4);
    }
    atomic_store(&g_finished[t], 1);
    return NULL;
}

static void *reader(void *arg) {
    int t = (int)(intptr_t)arg;
    while (!atomic_load(&g_stop)) {
        expect(pthread_rwlock_rdlock(&g_rwlock), 0, "pthread_rwlock_rdlock", t);
        uint64_t a = g_guarded[K_RWLOCK];
        t_sleep_ns(g_hold_ns / 8);
        if (g_guarded[K_RWLOCK] != a) fail("a writer changed the rwlock's data under a reader");
        expect(pthread_rwlock_unlock(&g_rwlock), 0, "pthread_rwlock_unlock (reader)", t);
        g_done[t]++;
        atomic_fetch_add(&g_progress[t], 1);
        t_sleep_ns(g_hold_ns / 4);
    }
    atomic_store(&g_finished[t], 1);
    return NULL;
}

static void *stdio_holder(void *arg) {
    int t = (int)(intptr_t)arg;
    while (!atomic_load(&g_stop)) {
        flockfile(stdout);
        if (ftrylockfile(stdout) != 0) fail("ftrylockfile(stdout) by its owner failed");
        funlockfile(stdout);
        hold();
        funlockfile(stdout);
        g_done[t]++;
        atomic_fetch_add(&g_progress[t], 1);
        t_sleep_ns(g_hold_ns);
    }
    atomic_store(&g_finished[t], 1);
    return NULL;
}

static int phdr_callback(struct dl_phdr_info *info, size_t size, void *data) {
    (void)info, (void)size;
    if ((*(int *)data)++ == 0) hold(); // with _dl_load_write_lock held
    return 0;
}

static void *dl_user(void *arg) {
    int t = (int)(intptr_t)arg;
    while (!atomic_load(&g_stop)) {
        int seen = 0;
        dl_iterate_phdr(phdr_callback, &seen);
        if (seen < 2) fail("dl_iterate_phdr saw %d objects", seen);
        void *h = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
        if (!h) fail("dlopen libm.so.6: %s", dlerror());
        double (*cos_fn)(double) = (double (*)(double))dlsym(h, "cos");
        if (!cos_fn || cos_fn(0.0) != 1.0) fail("dlsym cos");
        Dl_info info;
        if (!dladdr((void *)cos_fn, &info) || !info.dli_fname || !strstr(info.dli_fname, "libm"))
            fail("dladdr(cos) names %s", info.dli_fname ? info.dli_fname : "(null)");
        if (dlclose(h) != 0) fail("dlclose: %s", dlerror());
        g_done[t]++;
        atomic_fetch_add(&g_progress[t], 1);
    }
    atomic_store(&g_finished[t], 1);
    return NULL;
}

static void *watchdog(void *arg) {
    (void)arg;
    uint64_t last[T_COUNT] = {0}, still[T_COUNT] = {0};
    // Until every worker is joined: a worker stuck in a lock after the stop is caught too.
    while (!atomic_load(&g_joined)) {
        t_sleep_ns(100 * 1000 * 1000);
        for (int t = 0; t < T_COUNT; t++) {
            uint64_t p = atomic_load(&g_progress[t]);
            still[t] = p == last[t] && !atomic_load(&g_finished[t]) ? still[t] + 1 : 0;
            last[t] = p;
            if (still[t] >= 100)
                fail("thread %d (%s) made no progress for 100 watchdog ticks: deadlocked", t,
                     t < T_STDIO     ? kind_names[t / HOLDERS]
                     : t == T_STDIO  ? "stdio"
                     : t == T_READER ? "rwlock reader"
                                     : "dynamic linker");
        }
    }
    return NULL;
}

static void init_mutex(pthread_mutex_t *m, int type, int robust, int protocol) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, type);
    if (robust) pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (protocol) pthread_mutexattr_setprotocol(&a, protocol);
    int r = pthread_mutex_init(m, &a);
    if (r) fail("pthread_mutex_init: %s", strerror(r));
    pthread_mutexattr_destroy(&a);
}

static void *anew_holder(void *arg) {
    (void)arg;
    while (!atomic_load(&g_stop)) {
        init_mutex(g_anew, PTHREAD_MUTEX_ERRORCHECK, 0, 0);
        expect(pthread_mutex_lock(g_anew), 0, "pthread_mutex_lock (made anew)", -2);
        t_sleep_ns(100 * 1000); // (short: both states met between a pre-copy and its image)
        expect(pthread_mutex_unlock(g_anew), 0, "pthread_mutex_unlock (made anew)", -2);
        pthread_mutex_destroy(g_anew);
        memset(g_anew, 0, 4096);
        g_anew_count++;
        t_sleep_ns(100 * 1000);
    }
    return NULL;
}

int main(int argc, char **argv) {
    t_init("held_locks");
    static const char *const known[] = {"--rounds", "--hold-us", NULL};
    const char *usage = "[--rounds N] [--hold-us MICROSECONDS]";
    t_check_args(argc, argv, known, usage);
    uint64_t rounds = t_opt_u64(argc, argv, "--rounds", 150);
    g_hold_ns = t_opt_u64(argc, argv, "--hold-us", 2000) * 1000;
    if (rounds < 1 || g_hold_ns < 1000) t_usage(usage);
    t_line("held_locks rounds=%" PRIu64, rounds);

    init_mutex(&g_mutex[K_RECURSIVE], PTHREAD_MUTEX_RECURSIVE, 0, 0);
    init_mutex(&g_mutex[K_ERRORCHECK], PTHREAD_MUTEX_ERRORCHECK, 0, 0);
    init_mutex(&g_mutex[K_ROBUST], PTHREAD_MUTEX_ERRORCHECK, 1, 0);
    init_mutex(&g_mutex[K_PI], PTHREAD_MUTEX_ERRORCHECK, 0, PTHREAD_PRIO_INHERIT);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (pthread_rwlock_init(&g_rwlock, &ra) != 0) fail("pthread_rwlock_init");
    pthread_rwlockattr_destroy(&ra);
    g_quiet = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_quiet == MAP_FAILED) fail("mmap: %s", strerror(errno));
    init_mutex(g_quiet, PTHREAD_MUTEX_ERRORCHECK, 0, 0);
    expect(pthread_mutex_lock(g_quiet), 0, "pthread_mutex_lock (held all along)", -1);
    g_anew = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_anew == MAP_FAILED) fail("mmap: %s", strerror(errno));
    pthread_t anew;
    if (pthread_create(&anew, NULL, anew_holder, NULL) != 0) fail("pthread_create");

    pthread_t th[T_COUNT + 1];
    for (int t = 0; t < T_COUNT; t++) {
        void *(*fn)(void *) = t < T_STDIO     ? holder
                              : t == T_STDIO  ? stdio_holder
                              : t == T_READER ? reader
                                              : dl_user;
        if (pthread_create(&th[t], NULL, fn, (void *)(intptr_t)t) != 0) fail("pthread_create");
    }
    if (pthread_create(&th[T_COUNT], NULL, watchdog, NULL) != 0) fail("pthread_create watchdog");

    // The main thread prints deterministic lines (through the stdout lock one thread keeps
    // taking) while the others hold their locks.
    uint64_t acc = T_FNV_INIT;
    for (uint64_t r = 1; r <= rounds; r++) {
        t_sleep_ns(20 * 1000 * 1000);
        acc = t_fnv1a(acc, &r, sizeof r);
        if (r % 10 == 0) t_line("round %" PRIu64 " acc=%016" PRIx64, r, acc);
    }
    atomic_store(&g_stop, 1);
    for (int t = 0; t < T_COUNT; t++)
        pthread_join(th[t], NULL);
    atomic_store(&g_joined, 1);
    pthread_join(th[T_COUNT], NULL);
    pthread_join(anew, NULL);

    for (int k = 0; k < K_KINDS; k++) {
        uint64_t sum = 0;
        for (int h = 0; h < HOLDERS; h++) {
            if (!g_done[k * HOLDERS + h]) fail("%s holder %d never got its lock", kind_names[k], h);
            sum += g_done[k * HOLDERS + h];
        }
        if (sum != g_guarded[k])
            fail("%s: %" PRIu64 " critical sections, guarded counter %" PRIu64, kind_names[k], sum,
                 g_guarded[k]);
        t_line("%s ok", kind_names[k]);
    }
    for (int t = T_STDIO; t < T_COUNT; t++)
        if (!g_done[t]) fail("thread %d made no progress", t);
    expect(pthread_mutex_unlock(g_quiet), 0, "pthread_mutex_unlock (held all along)", -1);
    if (!g_anew_count) fail("the lock made anew was never released");
    t_line("held all along, made anew ok");
    t_line("stdio, reader, dynamic linker ok");
    return t_pass();
}
