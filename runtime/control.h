// SPDX-License-Identifier: Apache-2.0
// Where the control sockets live, and the line protocol spoken on them. Used both inside managed
// processes (the agent, which must not throw or allocate much) and by the `ghost` commands.
//
// Protocol (one request per connection, lines end with '\n'):
//   client: PARK                 agent: PARKED <state address hex> <threads>   or   ERROR <reason>
//   client: RESUME               agent: RESUMED        (a client that disconnects also resumes the
//   process) client: PING                 agent: PONG <pid>
#pragma once

#include <stddef.h>

namespace ghost::control {

// The private runtime directory: $GHOST_RUNTIME_DIR, else $XDG_RUNTIME_DIR/ghost, else
// /tmp/ghost-<uid>. Created with mode 0700; refused if another user owns it or others can enter it.
// Returns false with a reason in `why` on failure.
bool runtime_dir(char *out, size_t out_size, const char **why);

// <runtime dir>/<pid>.sock, named by the pid the host knows the process by (host_pid).
bool socket_path(int pid, char *out, size_t out_size, const char **why);

// A fast duplicate's copy may run in a pid namespace of its own, under the original's pid
// (ghost-core/agent/fast_duplicate.h), with the host's /proc mounted at <runtime dir>/hostproc.
// host_pid: the pid the host knows process `pid` (of this namespace) by: `pid` itself outside such
// a namespace, -1 when it cannot be told. host_proc_path: that mount point, created if need be.
int host_pid(int pid);
bool host_proc_path(char *out, size_t out_size);

// True when process `pid` is gone: none exists, or only its zombie (whose descriptors are closed:
// it can never listen or write again).
bool process_gone(int pid);

// What is behind the control socket of `pid`:
//    1  the agent of that very process listens (the listener's credentials name `pid`);
//    0  a stale socket file: nobody listens and `pid` is gone (removed when `remove_stale`);
//   -1  anything else: no socket file, or a process of that pid that does not listen (yet).
int probe_socket(int pid, bool remove_stale);

// Removes the stale sockets of the runtime directory (processes killed or exec'd away, restored
// under another pid); returns how many.
int remove_stale_sockets();

// Receives one byte sent with up to `max` (at most 8) descriptors (SCM_RIGHTS), made
// close-on-exec: how many came (their numbers in `fds`), or -1 when no byte came. System calls
// only (a forked child may use it).
int receive_fds(int sock, int *fds, int max);

// Reads one '\n'-terminated line (without the '\n') within timeout_ms (-1: no limit).
// Returns its length, or -1 on error, EOF or timeout.
long read_line(int fd, char *out, size_t out_size, int timeout_ms);

// Writes all of buf; false on error.
bool write_all(int fd, const char *buf, size_t len);

} // namespace ghost::control
