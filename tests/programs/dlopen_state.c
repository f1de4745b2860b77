// SPDX-License-Identifier: Apache-2.0
// A shared library opened with dlopen() by path (--lib) keeps state across the run: its .bss data,
// a call counter, a value set by its constructor and a dynamic-TLS counter per thread. Every step
// calls it through function pointers from dlsym() and compares with a reference computation in
// the executable. Now and then the dynamic linker is exercised again: dlsym() must return the same
// addresses, dladdr() must name the library, and a second library (--lib2) is dlopen()ed, called
// and dlclose()d. A worker thread bumps its own TLS counter in the library meanwhile.
#include "common.h"
#include "plugin_algo.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>

typedef uint64_t (*u64_fn)(void);
typedef uint64_t (*step_fn)(uint64_t);
typedef void (*init_fn)(uint64_t);
typedef const char *(*name_fn)(void);

static u64_fn p_magic, p_checksum, p_calls, p_tls_calls, p_tls_bump;
static step_fn p_step;
static init_fn p_init;
static name_fn p_name;
static atomic_int g_stop;
static uint64_t g_worker_bumps;

static void *sym(void *h, const char *name) {
    dlerror();
    void *p = dlsym(h, name);
    const char *e = dlerror();
    if (e || !p) t_fail("dlsym(%s): %s", name, e ? e : "NULL");
    return p;
}

static void *worker(void *arg) {
    (void)arg;
    uint64_t n = 0;
    while (!atomic_load(&g_stop)) {
        uint64_t v = p_tls_bump();
        if (v != ++n) t_fail("worker: library TLS counter %" PRIu64 " != %" PRIu64, v, n);
        if (n % 64 == 0) t_sleep_ns(100000);
    }
    g_worker_bumps = n;
    return NULL;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int main(int argc, char **argv) {
    t_init("dlopen_state");
    static const char *const known[] = {"--lib", "--lib2", "--steps", NULL};
    const char *usage = "--lib PLUGIN.so --lib2 EPHEMERAL.so [--steps N]";
    t_check_args(argc, argv, known, usage);
    const char *lib = t_opt_str(argc, argv, "--lib", NULL);
    const char *lib2 = t_opt_str(argc, argv, "--lib2", NULL);
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 5000000);
    if (!lib || !lib2 || steps < 10) t_usage(usage);
    t_line("dlopen_state steps=%" PRIu64 " lib=%s lib2=%s", steps, base_name(lib), base_name(lib2));

    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) t_fail("dlopen: %s", dlerror());
    p_magic = (u64_fn)sym(h, "plugin_magic");
    p_checksum = (u64_fn)sym(h, "plugin_checksum");
    p_calls = (u64_fn)sym(h, "plugin_calls");
    p_tls_calls = (u64_fn)sym(h, "plugin_tls_calls");
    p_tls_bump = (u64_fn)sym(h, "plugin_tls_bump");
    p_step = (step_fn)sym(h, "plugin_step");
    p_init = (init_fn)sym(h, "plugin_init");
    p_name = (name_fn)sym(h, "plugin_name");
    if (p_magic() != 0xc0ffee) t_fail("plugin constructor did not run");
    if (strcmp(p_name(), "ghost-test-plugin") != 0) t_fail("plugin_name");

    uint64_t ref[PLUGIN_WORDS];
    plugin_algo_init(ref, 12345);
    p_init(12345);

    pthread_t th;
    if (pthread_create(&th, NULL, worker, NULL) != 0) t_fail("pthread_create");

    uint64_t acc = 0, loads = 0;
    for (uint64_t s = 0; s < steps; s++) {
        uint64_t x = t_mix64(s);
        uint64_t got = p_step(x);
        uint64_t want = plugin_algo_step(ref, x);
        if (got != want)
            t_fail("step %" PRIu64 ": plugin returned %016" PRIx64 ", expected %016" PRIx64, s, got,
                   want);
        acc ^= got;
        if (s % 64 == 0) {
            if (p_checksum() != plugin_algo_checksum(ref))
                t_fail("plugin state differs from reference");
            if (p_calls() != s + 1)
                t_fail("plugin call counter %" PRIu64 " != %" PRIu64, p_calls(), s + 1);
            if (p_tls_calls() != s + 1)
                t_fail("plugin TLS counter %" PRIu64 " != %" PRIu64 " (main thread)", p_tls_calls(),
                       s + 1);
            if (p_magic() != 0xc0ffee) t_fail("plugin constructor value lost");
        }
        if (s % 1024 == 0) {
            if ((step_fn)sym(h, "plugin_step") != p_step)
                t_fail("dlsym returns a different plugin_step");
            Dl_info info;
            if (!dladdr((void *)p_step, &info) || !info.dli_fname ||
                strcmp(base_name(info.dli_fname), base_name(lib)) != 0)
                t_fail("dladdr(plugin_step) names '%s'",
                       info.dli_fname ? info.dli_fname : "(null)");
            void *h2 = dlopen(lib2, RTLD_NOW | RTLD_LOCAL);
            if (!h2) t_fail("dlopen %s: %s", lib2, dlerror());
            step_fn ev = (step_fn)sym(h2, "ephemeral_value");
            if (ev(s) != s * 3 + 87) t_fail("ephemeral_value(%" PRIu64 ") = %" PRIu64, s, ev(s));
            if (dlclose(h2) != 0) t_fail("dlclose: %s", dlerror());
            loads++;
        }
        if ((s + 1) % (steps / 10) == 0)
            t_line("step %" PRIu64 " acc=%016" PRIx64 " state=%016" PRIx64 " loads=%" PRIu64, s + 1,
                   acc, p_checksum(), loads);
    }
    atomic_store(&g_stop, 1);
    pthread_join(th, NULL);
    if (g_worker_bumps == 0) t_fail("worker thread made no progress");
    if (p_tls_bump() != 1) t_fail("main thread's TLS bump counter is shared with the worker");
    if (p_calls() != steps) t_fail("final call count");
    t_line("plugin ok calls=%" PRIu64 " state=%016" PRIx64, p_calls(), p_checksum());
    if (dlclose(h) != 0) t_fail("dlclose: %s", dlerror());
    return t_pass();
}
