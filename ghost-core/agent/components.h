// SPDX-License-Identifier: Apache-2.0
// The agent's side of the component hooks (ghost_agent.h): the registry and the runners that
// handle_park and the restore path call, in the order that header documents.
#pragma once

#include <stddef.h>

namespace ghost::agent {

// Before the park: quiesce every component in registration order. False with a one-line reason
// in `why`; the components already quiesced were resumed (reverse order).
// How many components are registered (a fast duplicate is refused while any is: see
// fast_duplicate.h).
int components_registered();
bool components_quiesce(char *why, size_t why_len);
// Before the park: fills the state block's excluded_threads. False (with `why`) on overflow.
bool components_exclude_threads(const char **why);
// Every thread stopped: fills excluded_regions / excluded_fds. System calls only.
bool components_exclude(const char **why);
bool thread_is_excluded(int tid);
// In the park handler: GHOST_THREAD_APP unless a component claims the calling thread.
int components_thread_state();
// The process goes on after an export (threads still stopped): reverse order.
void components_before_resume();
// In a restored process: in each thread before it runs on; then on the manager once every thread
// runs (reverse order). The latter exits the process when a component cannot go on.
void components_thread_after_restore();
void components_after_restore();

} // namespace ghost::agent
