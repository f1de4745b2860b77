/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's public C interface for components that live in the same process (the MPI layer,
 * later others): ordered hooks around a park, a restore and a resume, as DMTCP's plugins have.
 *
 * A component registers once (from its constructor; the agent need not be initialised yet):
 *
 *     static const struct ghost_component me = {GHOST_AGENT_API_VERSION, "mpi", ...};
 *     int (*reg)(const struct ghost_component *) = dlsym(RTLD_DEFAULT, "ghost_agent_register");
 *     if (reg) reg(&me);     // no agent in this process: nothing to do
 *
 * Order of the hooks on one park (registration order down, reverse order up):
 *   quiesce          manager thread, before any thread is stopped: any libc call is allowed.
 *                    Non-zero refuses the park; `why` (one line) goes back to the requester and
 *                    the components already quiesced get before_resume, in reverse order.
 *   exclude_threads  manager thread, before any thread is stopped: threads that are not the
 *                    application's (never stopped, never saved), e.g. the lower half's.
 *   thread_state     in each signalled thread's park handler: is it the application's, at a
 *                    safe point?
 *   exclude          manager thread, every other thread stopped: only system calls and stack
 *                    buffers (a stopped thread may hold a libc lock). Memory ranges and file
 *                    descriptors that the image leaves out.
 *   before_resume    manager thread, reverse order, the other threads still stopped (system
 *                    calls only): after the image was taken and the process goes on, or after a
 *                    park failed (not in a process that was killed, not in a restored one).
 * In a restored process:
 *   thread_after_restore  every restored thread, in its own context, before it runs on (the
 *                    manager too): only system calls and this thread's own TLS.
 *   after_restore    manager thread, reverse order, after every thread runs again: any libc call
 *                    is allowed. Non-zero: the process cannot go on; the agent prints `why` and
 *                    exits with status 1.
 * Any hook may be NULL. */
#ifndef GHOST_AGENT_H
#define GHOST_AGENT_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GHOST_AGENT_API_VERSION 1u
#define GHOST_AGENT_MAX_COMPONENTS 8

/* Where the exclude hook puts what the image leaves out. Each call returns 0, or -1 when the
 * agent's table is full (the park then fails: an image with part of a lower half is wrong). */
struct ghost_exclude_sink {
    void *ctx;
    int (*region)(void *ctx, uintptr_t start, uintptr_t end); /* [start, end), page aligned */
    int (*fd)(void *ctx, int fd);
};

/* What a restored process learns about its new surroundings. */
struct ghost_restore_info {
    char *const *envp;        /* the environment the new process was started with, or NULL */
    const int32_t *inherited; /* descriptors the new process inherited and kept (launcher fds) */
    uint32_t inherited_count;
    uint32_t restore_count; /* 1 after the first restore of this image lineage, ... */
    uint32_t flags;         /* GHOST_RESTORED_RANK: started by a launcher's restart entry */
};
#define GHOST_RESTORED_RANK 1u

struct ghost_component {
    uint32_t api_version; /* GHOST_AGENT_API_VERSION */
    const char *name;     /* for messages */
    void *arg;            /* handed to every hook */
    int (*quiesce)(void *arg, char *why, size_t why_len);
    size_t (*exclude_threads)(void *arg, int *tids, size_t max); /* count (may exceed max) */
    int (*exclude)(void *arg, const struct ghost_exclude_sink *sink);
    void (*before_resume)(void *arg);
    void (*thread_after_restore)(void *arg);
    int (*after_restore)(void *arg, const struct ghost_restore_info *info, char *why,
                         size_t why_len);
    /* In the park signal's handler of every signalled thread, first thing, whatever its FS: only
     * lock-free reads, no TLS. GHOST_THREAD_APP: an application thread at a safe point (parked,
     * saved). GHOST_THREAD_OWN: the component's own thread that exclude_threads missed (left
     * running, not saved, and blocking every signal from then on). GHOST_THREAD_BUSY: an
     * application thread inside the component (an MPI call): the park fails, naming the thread; a
     * quiesce must have let it out first. */
    int (*thread_state)(void *arg);
};
#define GHOST_THREAD_APP 0
#define GHOST_THREAD_OWN 1
#define GHOST_THREAD_BUSY 2

/* 0 on success; -1 when the table is full or the version is unknown. The struct must stay valid
 * for the life of the process. */
int ghost_agent_register(const struct ghost_component *c);

/* Asks the agent to have this process checkpointed into `image_path` (an absolute file path) by a
 * `ghost checkpoint` process it starts, which parks this process through the control socket like
 * any other client: the call returns at once (0: started, -1: no agent, no `ghost` binary known, or
 * one already running). GHOST_CHECKPOINT_KILL: the process is killed once the image is durable.
 * GHOST_CHECKPOINT_IN_DIR: the image's directory exists and is not made again when missing (a
 * job's generation directory, which its coordinator removes when the checkpoint fails); without
 * it, missing directories are made. The checkpointer's report goes to <image_path>.log. */
#define GHOST_CHECKPOINT_KILL 1
#define GHOST_CHECKPOINT_IN_DIR 2
int ghost_agent_request_checkpoint(const char *image_path, int flags);

/* As ghost_agent_request_checkpoint, with `ghost checkpoint --incremental`: the image stores only
 * the pages written since `parent` (an absolute path; NULL or "": a whole image, from which write
 * tracking starts). */
int ghost_agent_request_incremental(const char *image_path, const char *parent, int flags);

/* As ghost_agent_request_checkpoint, but the image streams to `to` (a remote target such as
 * ucx://ADDR:PORT, where a `ghost receive --restore` or `ghost restart-rank --receive` listens):
 * `ghost checkpoint --to TO [--secret-file SECRET_FILE] PID`. Its report goes to <log_base>.log
 * (log_base: an absolute path). ghost_agent_checkpoint_wait waits for it; 0 there means the
 * receiver's verdict said the image is complete. */
int ghost_agent_request_send(const char *to, const char *secret_file, const char *log_base,
                             int flags);

/* A live migration's pre-copy (ghost_agent_request_send with GHOST_CHECKPOINT_PRECOPY): `ghost
 * checkpoint --precopy-index <log_base>.precopy-index`, the memory sent while the process runs
 * (parked only while its write tracking is armed); with GHOST_CHECKPOINT_AFTER_PRECOPY, the image
 * sent after it stores only the pages written since (`--after-precopy` that index file); with
 * both, a further pre-copy round of only those pages, whose index replaces the last round's. The
 * caller removes the index file once the image is sent. */
#define GHOST_CHECKPOINT_PRECOPY 4
#define GHOST_CHECKPOINT_AFTER_PRECOPY 8

/* GHOST_CHECKPOINT_STANDBY (with a stream target): the checkpointer connects to the receiver and
 * reads what it needs (the pre-copy's index) while the process runs on, then waits before parking
 * it until ghost_agent_standby_release(1) (the process quiescent by then: its go) or (0) (given
 * up: the checkpointer ends without touching the process). Either way ghost_agent_checkpoint_wait
 * then waits for it. What it saves the final image of a live migration, which the job waits for:
 * the checkpointer's start, its connection and the index's load. */
#define GHOST_CHECKPOINT_STANDBY 16
int ghost_agent_standby_release(int go);
/* Waits up to timeout_ms for the standby to be connected and ready: 1; 0 not yet; -1 it ended (or
 * there is none). */
int ghost_agent_standby_ready(int timeout_ms);

/* Waits up to timeout_ms (< 0: no limit) for the checkpointer of the last
 * ghost_agent_request_checkpoint to end. 0: it exited 0 (the image is durable); -1: it failed, was
 * killed, or is still running at the deadline (it goes on; a later wait may still see it end), and
 * `why` holds one line (the checkpointer's own error from <image_path>.log when it printed one);
 * 1: the caller runs in a restored copy of the process (the checkpointer is not its child: the
 * image it wrote is the one this process came from). The calling thread is parked and saved like
 * any other while the checkpointer works: call it from a thread that holds no MPI call open. */
int ghost_agent_checkpoint_wait(int timeout_ms, char *why, size_t len);

/* 1 if `fd` is one of the agent's own descriptors (control socket, trigger pipe): neither the
 * application's nor a component's; never saved. */
int ghost_agent_owns_fd(int fd);

#ifdef __cplusplus
}
#endif
#endif
