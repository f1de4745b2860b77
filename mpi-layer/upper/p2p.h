// SPDX-License-Identifier: Apache-2.0
// Point-to-point calls whose lower call is hand-written (gen_wrappers.py CUSTOM): they count
// messages, turn blocking calls into a nonblocking call plus a test loop with safe points, and
// deliver drained messages first. Each gets the real function, the lower arguments the generated
// wrapper translated, then the upper values of its handle parameters; the generated wrapper still
// adopts, settles and frees the handles afterwards.
#pragma once
#include <mpi.h>

#include <string>

#include "quiesce.h"

namespace ghost::mpi {

using cvp = const void *;
using DT = MPI_Datatype;
using CM = MPI_Comm;
using RQ = MPI_Request;
using MS = MPI_Message;
using ST = MPI_Status;

// Without FSGSBASE: measures what an FS switch costs here, which sets how long polls in a row are
// paced (p2p.cpp, "polls without FSGSBASE"). Once, at start-up, after g_have_fsgsbase is known.
void poll_pace_measure();

#define GHOST_Q_SEND(name)                                                                         \
    int q_##name(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, DT, CM uc);
GHOST_Q_SEND(Send)
GHOST_Q_SEND(Ssend)
GHOST_Q_SEND(Rsend)
GHOST_Q_SEND(Bsend)
#define GHOST_Q_ISEND(name)                                                                        \
    int q_##name(void *fn, cvp buf, int n, DT dt, int dest, int tag, CM c, RQ *r, DT, CM uc, RQ *);
GHOST_Q_ISEND(Isend)
GHOST_Q_ISEND(Issend)
GHOST_Q_ISEND(Irsend)
GHOST_Q_ISEND(Ibsend)
GHOST_Q_ISEND(Send_init)
GHOST_Q_ISEND(Ssend_init)
GHOST_Q_ISEND(Rsend_init)
GHOST_Q_ISEND(Bsend_init)
int q_Recv_init(void *fn, void *buf, int n, DT dt, int src, int tag, CM c, RQ *r, DT, CM uc, RQ *);
int q_Recv(void *fn, void *buf, int n, DT dt, int src, int tag, CM c, ST *st, DT, CM uc);
int q_Irecv(void *fn, void *buf, int n, DT dt, int src, int tag, CM c, RQ *r, DT, CM uc, RQ *);
int q_Sendrecv(void *fn, cvp sbuf, int sn, DT sdt, int dest, int stag, void *rbuf, int rn, DT rdt,
               int src, int rtag, CM c, ST *st, DT, DT, CM uc);
int q_Sendrecv_replace(void *fn, void *buf, int n, DT dt, int dest, int stag, int src, int rtag,
                       CM c, ST *st, DT, CM uc);
int q_Probe(void *fn, int src, int tag, CM c, ST *st, CM uc);
int q_Iprobe(void *fn, int src, int tag, CM c, int *flag, ST *st, CM uc);
int q_Mprobe(void *fn, int src, int tag, CM c, MS *m, ST *st, CM uc, MS *um);
int q_Improbe(void *fn, int src, int tag, CM c, int *flag, MS *m, ST *st, CM uc, MS *um);
int q_Mrecv(void *fn, void *buf, int n, DT dt, MS *m, ST *st, DT, MS *um);
int q_Imrecv(void *fn, void *buf, int n, DT dt, MS *m, RQ *r, DT, MS *um, RQ *ur);
int q_Wait(void *fn, RQ *r, ST *st, RQ *ur);
int q_Test(void *fn, RQ *r, int *flag, ST *st, RQ *ur);
int q_Waitall(void *fn, int n, RQ *r, ST *st, RQ *ur);
int q_Testall(void *fn, int n, RQ *r, int *flag, ST *st, RQ *ur);
int q_Waitany(void *fn, int n, RQ *r, int *idx, ST *st, RQ *ur);
int q_Testany(void *fn, int n, RQ *r, int *idx, int *flag, ST *st, RQ *ur);
int q_Waitsome(void *fn, int n, RQ *r, int *outc, int *idx, ST *st, RQ *ur);
int q_Testsome(void *fn, int n, RQ *r, int *outc, int *idx, ST *st, RQ *ur);
int q_Start(void *fn, RQ *r, RQ *ur);
int q_Startall(void *fn, int n, RQ *r, RQ *ur);
int q_Request_get_status(void *fn, RQ r, int *flag, ST *st, RQ ur);
int q_Cancel(void *fn, RQ *r, RQ *ur);
int q_Request_free(void *fn, RQ *r, RQ *ur);

// The drain (coord_client.cpp calls it with every application thread parked): receives every
// in-flight message into upper memory until `expected` messages have arrived in total since
// MPI_Init, counting pending receives that complete meanwhile. Returns 0, or -1 at the deadline
// with what it still waited for in `why`.
int drain_until(uint64_t expected, long timeout_ms, uint64_t *msgs, uint64_t *bytes,
                std::string *why);
// One round of lower progress (while the other ranks drain).
void drain_progress();

} // namespace ghost::mpi
