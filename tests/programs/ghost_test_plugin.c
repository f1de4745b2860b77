// SPDX-License-Identifier: Apache-2.0
// A shared library loaded with dlopen() by dlopen_state. It keeps state of its own: a data array
// in .bss, a call counter, a value set by its constructor, and a thread-local (dynamic TLS)
// counter per thread.
#include "plugin_algo.h"

static uint64_t g_state[PLUGIN_WORDS];
static uint64_t g_calls;
static uint64_t g_ctor_magic;
static __thread uint64_t t_calls;
static __thread uint64_t t_bumps;

__attribute__((constructor)) static void plugin_ctor(void) {
    g_ctor_magic = 0xc0ffee;
}

uint64_t plugin_magic(void) {
    return g_ctor_magic;
}
const char *plugin_name(void) {
    return "ghost-test-plugin";
}

void plugin_init(uint64_t seed) {
    plugin_algo_init(g_state, seed);
    g_calls = 0;
}

uint64_t plugin_step(uint64_t x) {
    g_calls++;
    t_calls++;
    return plugin_algo_step(g_state, x);
}

uint64_t plugin_checksum(void) {
    return plugin_algo_checksum(g_state);
}
uint64_t plugin_calls(void) {
    return g_calls;
}
uint64_t plugin_tls_calls(void) {
    return t_calls;
}
uint64_t plugin_tls_bump(void) {
    return ++t_bumps;
}
