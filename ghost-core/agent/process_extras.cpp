// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/agent/process_extras.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ghost-core/agent/agent_state.h"
#include "runtime/raw_syscall.h"

namespace ghost::agent {

namespace sys = ghost::sys;

namespace {

constexpr int pr_timer_create_restore_ids = 77; // prctl, Linux 6.17
constexpr int membarrier_get_registrations = 1 << 9;
constexpr int membarrier_register_cmds[] = {1 << 2, 1 << 4, 1 << 6, 1 << 8};
constexpr int sigev_thread_id = 4;

void warn(const char *what, int id, long err) {
    char line[160];
    int n = snprintf(line, sizeof line, "ghost-agent[%d]: cannot restore %s %d: %s\n",
                     (int)sys::call(SYS_getpid), what, id, strerror((int)-err));
    if (n > 0) sys::call(SYS_write, 2, line, (size_t)n);
}

long read_file(const char *path, char *buf, size_t size) {
    int fd = (int)sys::call(SYS_open, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fd;
    long total = 0;
    for (long n; total < (long)size - 1 &&
                 (n = sys::call(SYS_read, fd, buf + total, size - 1 - (size_t)total)) > 0;)
        total += n;
    sys::call(SYS_close, fd);
    buf[total] = 0;
    return total;
}

void read_itimer(int which, uint64_t out[4]) {
    struct itimerval it = {};
    sys::call(SYS_getitimer, which, &it);
    out[0] = (uint64_t)it.it_interval.tv_sec, out[1] = (uint64_t)it.it_interval.tv_usec;
    out[2] = (uint64_t)it.it_value.tv_sec, out[3] = (uint64_t)it.it_value.tv_usec;
}

void write_itimer(int which, const uint64_t in[4]) {
    struct itimerval it = {};
    it.it_interval.tv_sec = (time_t)in[0], it.it_interval.tv_usec = (suseconds_t)in[1];
    it.it_value.tv_sec = (time_t)in[2], it.it_value.tv_usec = (suseconds_t)in[3];
    // A periodic timer read at the instant it expired shows a zero value: it is still armed.
    if ((in[0] || in[1]) && !in[2] && !in[3]) it.it_value.tv_usec = 1;
    if (it.it_value.tv_sec || it.it_value.tv_usec) sys::call(SYS_setitimer, which, &it, nullptr);
}

int slot_of_tid(const state &st, int tid) {
    for (uint32_t i = 0; i < st.thread_count; i++)
        if (st.threads[i].tid == tid && st.threads[i].state == slot_parked) return (int)i;
    return -1;
}

// /proc/self/timers: per timer "ID: n", "signal: signo/value", "notify: kind/pid.N|tid.N",
// "ClockID: n".
const char *capture_posix_timers(state &st) {
    process_extras &x = st.extras;
    x.posix_timer_count = 0;
    char buf[16384];
    long len = read_file("/proc/self/timers", buf, sizeof buf);
    if (len < 0) return nullptr; // no POSIX timers support: no timers
    if (len >= (long)sizeof buf - 1) return "it has too many POSIX timers to carry";
    posix_timer *t = nullptr;
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        if (end) *end = 0;
        if (strncmp(line, "ID: ", 4) == 0) {
            if (x.posix_timer_count == (uint32_t)max_posix_timers)
                return "it has too many POSIX timers to carry";
            t = &x.timers[x.posix_timer_count++];
            memset(t, 0, sizeof *t);
            t->id = atoi(line + 4);
            t->thread_slot = -1;
        } else if (t && strncmp(line, "signal: ", 8) == 0) {
            char *slash = nullptr;
            t->signo = (int32_t)strtol(line + 8, &slash, 10);
            if (slash && *slash == '/') t->value = strtoull(slash + 1, nullptr, 16);
        } else if (t && strncmp(line, "notify: ", 8) == 0) {
            const char *kind = line + 8;
            const char *who = strchr(kind, '/');
            if (!who) return "its POSIX timers cannot be read";
            bool tid = strncmp(who + 1, "tid.", 4) == 0;
            t->notify = strncmp(kind, "none", 4) == 0 ? SIGEV_NONE : SIGEV_SIGNAL;
            if (tid) {
                t->notify |= sigev_thread_id;
                t->thread_slot = slot_of_tid(st, atoi(who + 5));
                if (t->thread_slot < 0) return "a POSIX timer signals a thread that is not parked";
            }
        } else if (t && strncmp(line, "ClockID: ", 9) == 0) {
            t->clock = atoi(line + 9);
        }
        if (!end) break;
        line = end + 1;
    }
    for (uint32_t i = 0; i < x.posix_timer_count; i++) {
        posix_timer &p = x.timers[i];
        struct itimerspec spec = {};
        if (sys::failed(sys::call(SYS_timer_gettime, p.id, &spec)))
            return "its POSIX timers cannot be read";
        p.interval[0] = spec.it_interval.tv_sec, p.interval[1] = spec.it_interval.tv_nsec;
        p.remaining[0] = spec.it_value.tv_sec, p.remaining[1] = spec.it_value.tv_nsec;
    }
    return nullptr;
}

// Creates the timer under its old id: the kernel takes the id asked for once told so
// (PR_TIMER_CREATE_RESTORE_IDS); older kernels hand out ids in order in a fresh process, so the
// ids below the wanted one are taken by timers deleted again afterwards.
void restore_posix_timer(const state &st, const posix_timer &p, bool ids_by_request) {
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_value.sival_ptr = (void *)p.value;
    ev.sigev_signo = p.signo;
    ev.sigev_notify = p.notify;
    if (p.thread_slot >= 0) ev._sigev_un._tid = st.threads[p.thread_slot].tid;
    int spare[max_posix_timers], spares = 0;
    int id = -1;
    for (;;) {
        id = ids_by_request ? p.id : 0;
        long r = sys::call(SYS_timer_create, p.clock, &ev, &id);
        if (sys::failed(r)) {
            warn("POSIX timer", p.id, r);
            break;
        }
        if (id == p.id) break;
        if (id > p.id || spares == max_posix_timers) {
            sys::call(SYS_timer_delete, id);
            warn("POSIX timer (its id is taken)", p.id, -EBUSY);
            id = -1;
            break;
        }
        spare[spares++] = id;
    }
    for (int i = 0; i < spares; i++)
        sys::call(SYS_timer_delete, spare[i]);
    if (id != p.id || (!p.remaining[0] && !p.remaining[1])) return;
    struct itimerspec spec = {};
    spec.it_interval.tv_sec = p.interval[0], spec.it_interval.tv_nsec = p.interval[1];
    spec.it_value.tv_sec = p.remaining[0], spec.it_value.tv_nsec = p.remaining[1];
    long r = sys::call(SYS_timer_settime, id, 0, &spec, nullptr);
    if (sys::failed(r)) warn("POSIX timer time", p.id, r);
}

} // namespace

// The mlock()ed ranges, from /proc/self/smaps (VmFlags "lo"), read only when /proc/self/status
// shows locked memory: smaps walks every page table entry.
const char *capture_locked_ranges(process_extras &x) {
    x.locked_count = 0;
    char status[4096];
    if (read_file("/proc/self/status", status, sizeof status) <= 0) return nullptr;
    const char *vmlck = strstr(status, "\nVmLck:");
    if (!vmlck || atol(vmlck + 8) == 0) return nullptr;
    int fd = (int)sys::call(SYS_open, "/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return "its locked memory cannot be listed";
    static char buf[32768]; // the park runs one capture at a time
    size_t have = 0;
    uint64_t start = 0, end = 0;
    const char *why = nullptr;
    for (;;) {
        long n = sys::call(SYS_read, fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0) break;
        have += (size_t)n;
        buf[have] = 0;
        char *line = buf;
        for (char *nl; (nl = strchr(line, '\n')); line = nl + 1) {
            *nl = 0;
            if ((*line >= '0' && *line <= '9') || (*line >= 'a' && *line <= 'f')) {
                char *dash;
                start = strtoull(line, &dash, 16);
                end = strtoull(dash + 1, nullptr, 16);
            } else if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " lo")) {
                if (x.locked_count == (uint32_t)max_locked_ranges)
                    why = "it has too many locked memory ranges to carry";
                else
                    x.locked[x.locked_count][0] = start, x.locked[x.locked_count++][1] = end;
            }
        }
        have = (size_t)(buf + have - line);
        memmove(buf, line, have);
    }
    sys::call(SYS_close, fd);
    return why;
}

const char *capture_process_extras(state &st) {
    process_extras &x = st.extras;
    x.dumpable = (int32_t)sys::call(SYS_prctl, PR_GET_DUMPABLE, 0, 0, 0, 0);
    int subreaper = 0;
    sys::call(SYS_prctl, PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0);
    x.child_subreaper = subreaper;
    if (const char *why = capture_locked_ranges(x)) return why;
    read_itimer(ITIMER_VIRTUAL, x.itimer_virtual);
    read_itimer(ITIMER_PROF, x.itimer_prof);
    for (int r = 0; r < rlimit_count; r++) {
        uint64_t lim[2] = {~0ULL, ~0ULL};
        sys::call(SYS_prlimit64, 0, r, nullptr, lim);
        x.rlimits[r][0] = lim[0], x.rlimits[r][1] = lim[1];
    }
    char buf[32];
    x.oom_score_adj = read_file("/proc/self/oom_score_adj", buf, sizeof buf) > 0 ? atoi(buf) : 0;
    long m = sys::call(SYS_membarrier, membarrier_get_registrations, 0, 0);
    x.membarrier_registrations = sys::failed(m) ? 0 : (uint32_t)m;
    return capture_posix_timers(st);
}

void restore_process_extras(const state &st) {
    const process_extras &x = st.extras;
    if (x.dumpable == 0) sys::call(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (x.child_subreaper) sys::call(SYS_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    for (uint32_t i = 0; i < x.locked_count && i < (uint32_t)max_locked_ranges; i++) {
        long r = sys::call(SYS_mlock, x.locked[i][0], x.locked[i][1] - x.locked[i][0]);
        if (sys::failed(r)) warn("the memory lock of the range at", (int)i, r);
    }
    write_itimer(ITIMER_VIRTUAL, x.itimer_virtual);
    write_itimer(ITIMER_PROF, x.itimer_prof);
    for (int r = 0; r < rlimit_count; r++) {
        uint64_t now[2];
        if (sys::failed(sys::call(SYS_prlimit64, 0, r, nullptr, now))) continue;
        if (now[0] == x.rlimits[r][0] && now[1] == x.rlimits[r][1]) continue;
        long e = sys::call(SYS_prlimit64, 0, r, x.rlimits[r], nullptr);
        if (sys::failed(e)) { // a hard limit above ours needs privilege: keep ours, cap the soft
            uint64_t capped[2] = {x.rlimits[r][0] < now[1] ? x.rlimits[r][0] : now[1], now[1]};
            if (x.rlimits[r][1] < now[1]) capped[1] = x.rlimits[r][1];
            sys::call(SYS_prlimit64, 0, r, capped, nullptr);
        }
    }
    char buf[32];
    if (read_file("/proc/self/oom_score_adj", buf, sizeof buf) > 0 &&
        atoi(buf) != x.oom_score_adj) {
        int n = snprintf(buf, sizeof buf, "%d\n", x.oom_score_adj);
        int fd = (int)sys::call(SYS_open, "/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            long w = sys::call(SYS_write, fd, buf, (size_t)n);
            if (sys::failed(w)) warn("oom_score_adj", x.oom_score_adj, w);
            sys::call(SYS_close, fd);
        }
    }
    for (int cmd : membarrier_register_cmds)
        if (x.membarrier_registrations & (uint32_t)cmd) sys::call(SYS_membarrier, cmd, 0, 0);
    bool ids_by_request =
        !sys::failed(sys::call(SYS_prctl, pr_timer_create_restore_ids, 1, 0, 0, 0));
    for (uint32_t i = 0; i < x.posix_timer_count && i < (uint32_t)max_posix_timers; i++)
        restore_posix_timer(st, x.timers[i], ids_by_request);
    if (ids_by_request) sys::call(SYS_prctl, pr_timer_create_restore_ids, 0, 0, 0, 0);
}

void capture_thread_extras(thread_extras &t) {
    memset(t.sched_attr, 0, sizeof t.sched_attr);
    if (sys::failed(sys::call(SYS_sched_getattr, 0, t.sched_attr, sizeof t.sched_attr, 0)))
        memset(t.sched_attr, 0, sizeof t.sched_attr);
    long n = sys::call(SYS_sched_getaffinity, 0, sizeof t.affinity, t.affinity);
    t.affinity_bytes = sys::failed(n) ? 0 : (uint32_t)n;
    t.keepcaps = (int32_t)sys::call(SYS_prctl, PR_GET_KEEPCAPS, 0, 0, 0, 0);
    t.timer_slack = (uint64_t)sys::call(SYS_prctl, PR_GET_TIMERSLACK, 0, 0, 0, 0);
    t.personality = (uint32_t)sys::call(SYS_personality, 0xffffffffUL);
}

void restore_thread_extras(const thread_extras &t) {
    // (the restorer's credential change cleared keep-capabilities)
    if (t.keepcaps == 1) sys::call(SYS_prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0);
    if (t.timer_slack &&
        (uint64_t)sys::call(SYS_prctl, PR_GET_TIMERSLACK, 0, 0, 0, 0) != t.timer_slack)
        sys::call(SYS_prctl, PR_SET_TIMERSLACK, t.timer_slack, 0, 0, 0);
    if ((uint32_t)sys::call(SYS_personality, 0xffffffffUL) != t.personality)
        sys::call(SYS_personality, (unsigned long)t.personality);
    uint32_t size;
    memcpy(&size, t.sched_attr, sizeof size);
    if (size) {
        long r = sys::call(SYS_sched_setattr, 0, t.sched_attr, 0);
        if (sys::failed(r)) warn("scheduling policy of thread", (int)sys::call(SYS_gettid), r);
    }
    // The saved CPU affinity within what this process was given where it is restored (a
    // restarted rank's binding by its new mpirun, a migrated one's by the balancer on its new
    // host: the restored threads inherit it from the restorer): an affinity the program chose
    // stays while it fits the new binding; when they do not meet, the new binding wins.
    if (!t.affinity_bytes) return;
    uint64_t now[16] = {}, want[16] = {};
    long n = sys::call(SYS_sched_getaffinity, 0, sizeof now, now);
    if (sys::failed(n)) return;
    bool any = false;
    for (uint32_t i = 0; i < 16 && i * 8 < t.affinity_bytes; i++) {
        want[i] = t.affinity[i] & now[i];
        any |= want[i] != 0;
    }
    if (any) sys::call(SYS_sched_setaffinity, 0, sizeof want, want);
}

} // namespace ghost::agent
