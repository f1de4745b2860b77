// SPDX-License-Identifier: Apache-2.0
// A program whose start is slow before the agent runs (its library slow_ctor): `ghost launch
// --pid-file` must write the pid file only once the agent answers, or a driver that checkpoints as
// soon as the file exists finds "no control socket". Waits for DIR/go, then passes.
// Driven by agent_cases.py (--only slow_start).
#include "common.h"

extern int slow_ctor_done;

int main(int argc, char **argv) {
    t_init("slow_start");
    static const char *const known[] = {"--dir", NULL};
    t_check_args(argc, argv, known, "--dir DIR");
    const char *dir = t_opt_str(argc, argv, "--dir", NULL);
    if (!dir) t_usage("--dir DIR");
    if (!slow_ctor_done) t_fail("the library's constructor did not run");
    char path[4096];
    t_path(path, sizeof path, dir, "go");
    for (int i = 0; access(path, F_OK) != 0; i++) {
        if (i > 60000) t_fail("no %s within 600 s", path);
        t_sleep_ns(10 * 1000 * 1000);
    }
    return t_pass();
}
