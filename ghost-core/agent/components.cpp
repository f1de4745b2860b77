// SPDX-License-Identifier: Apache-2.0
// Components that share the process with the agent (ghost_agent.h): the registry and the hook
// runners. What they exclude goes into the state block, where the exporter reads it.
#include "ghost-core/agent/components.h"

#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/agent/ghost_agent.h"
#include "runtime/raw_syscall.h"

extern "C" ghost::agent::state ghost_agent_state;

namespace ghost::agent {

namespace {

const ghost_component *g_components[GHOST_AGENT_MAX_COMPONENTS];
int g_count = 0; // written only by ghost_agent_register (constructors, one thread)

int count() {
    return __atomic_load_n(&g_count, __ATOMIC_ACQUIRE);
}

state &st() {
    return ghost_agent_state;
}

int add_region(void *, uintptr_t start, uintptr_t end) {
    state &s = st();
    if (end <= start) return 0;
    if (s.excluded_region_count >= (uint32_t)max_excluded_regions) return -1;
    s.excluded_regions[s.excluded_region_count++] = {start, end};
    return 0;
}

int add_fd(void *, int fd) {
    state &s = st();
    if (fd < 0) return 0;
    if (s.excluded_fd_count >= (uint32_t)max_excluded_fds) return -1;
    s.excluded_fds[s.excluded_fd_count++] = fd;
    return 0;
}

void say_exit(const char *name, const char *why) {
    char line[512];
    int n = snprintf(line, sizeof line, "ghost-agent[%d]: cannot go on after the restore: %s: %s\n",
                     (int)sys::call(SYS_getpid), name ? name : "component",
                     why && *why ? why : "unknown reason");
    if (n > 0) (void)!write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    sys::call(SYS_exit_group, 1);
}

} // namespace

int components_registered() {
    return count();
}

bool components_quiesce(char *why, size_t why_len) {
    int n = count();
    for (int i = 0; i < n; i++) {
        const ghost_component *c = g_components[i];
        if (!c->quiesce) continue;
        char reason[256] = "";
        if (c->quiesce(c->arg, reason, sizeof reason) != 0) {
            snprintf(why, why_len, "%s: %s", c->name ? c->name : "component",
                     reason[0] ? reason : "refused");
            for (int k = i - 1; k >= 0; k--)
                if (g_components[k]->before_resume)
                    g_components[k]->before_resume(g_components[k]->arg);
            return false;
        }
    }
    return true;
}

bool components_exclude_threads(const char **why) {
    state &s = st();
    s.excluded_thread_count = 0;
    s.excluded_region_count = 0;
    s.excluded_fd_count = 0;
    int n = count();
    for (int i = 0; i < n; i++) {
        const ghost_component *c = g_components[i];
        if (!c->exclude_threads) continue;
        size_t room = (size_t)max_excluded_threads - s.excluded_thread_count;
        size_t got = c->exclude_threads(c->arg, s.excluded_threads + s.excluded_thread_count, room);
        if (got > room) {
            *why = "too many threads to leave out of the image";
            return false;
        }
        s.excluded_thread_count += (uint32_t)got;
    }
    return true;
}

bool thread_is_excluded(int tid) {
    const state &s = st();
    for (uint32_t i = 0; i < s.excluded_thread_count; i++)
        if (s.excluded_threads[i] == tid) return true;
    return false;
}

int components_thread_state() {
    int n = count();
    for (int i = 0; i < n; i++) {
        const ghost_component *c = g_components[i];
        int r = c->thread_state ? c->thread_state(c->arg) : GHOST_THREAD_APP;
        if (r != GHOST_THREAD_APP) return r;
    }
    return GHOST_THREAD_APP;
}

bool components_exclude(const char **why) {
    ghost_exclude_sink sink = {nullptr, add_region, add_fd};
    int n = count();
    for (int i = 0; i < n; i++) {
        const ghost_component *c = g_components[i];
        if (c->exclude && c->exclude(c->arg, &sink) != 0) {
            *why = "a component's memory or descriptors do not fit the agent's exclusion table";
            return false;
        }
    }
    return true;
}

void components_before_resume() {
    for (int i = count() - 1; i >= 0; i--)
        if (g_components[i]->before_resume) g_components[i]->before_resume(g_components[i]->arg);
}

void components_thread_after_restore() {
    int n = count();
    for (int i = 0; i < n; i++)
        if (g_components[i]->thread_after_restore)
            g_components[i]->thread_after_restore(g_components[i]->arg);
}

void components_after_restore() {
    state &s = st();
    ghost_restore_info info = {};
    info.envp = (char *const *)s.env;
    info.inherited = s.inherited_fds;
    info.inherited_count = s.inherited_fd_count < (uint32_t)max_inherited_fds
                               ? s.inherited_fd_count
                               : (uint32_t)max_inherited_fds;
    info.restore_count = s.restore_count;
    info.flags = s.restore_flags;
    for (int i = count() - 1; i >= 0; i--) {
        const ghost_component *c = g_components[i];
        if (!c->after_restore) continue;
        char why[256] = "";
        if (c->after_restore(c->arg, &info, why, sizeof why) != 0) say_exit(c->name, why);
    }
}

} // namespace ghost::agent

extern "C" __attribute__((visibility("default"))) int
ghost_agent_register(const ghost_component *c) {
    using namespace ghost::agent;
    if (!c || c->api_version != GHOST_AGENT_API_VERSION) return -1;
    int n = count();
    for (int i = 0; i < n; i++)
        if (g_components[i] == c) return 0;
    if (n >= GHOST_AGENT_MAX_COMPONENTS) return -1;
    g_components[n] = c;
    __atomic_store_n(&g_count, n + 1, __ATOMIC_RELEASE);
    return 0;
}
