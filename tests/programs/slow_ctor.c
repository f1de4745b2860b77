// SPDX-License-Identifier: Apache-2.0
// A library of slow_start whose constructor takes 400 ms (as a big C++ library's static
// initialisers or a library that probes hardware can): the dynamic loader runs it before the
// preloaded agent's (a program's own libraries are initialised first), so the agent makes its
// control socket that much later after the program starts.
#include <errno.h>
#include <time.h>

int slow_ctor_done;

__attribute__((constructor)) static void slow_ctor(void) {
    struct timespec left = {0, 400 * 1000 * 1000};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
    slow_ctor_done = 1;
}
