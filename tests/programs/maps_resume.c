// SPDX-License-Identifier: Apache-2.0
// A /proc/self/smaps listing read halfway across a restart (as pthread_getattr_np, allocators and
// profilers read /proc/self/maps, a buffer at a time): the program reads up to the end of the
// range line of a mapping of its own (advised MADV_DONTDUMP), then (DIR/ready, waits for DIR/go;
// the driver checkpoints and restarts it meanwhile) reads on: the next line must be that mapping's
// "Size:" line, its VmFlags must say "dd", and the next entry must be the next mapping up.
// Driven by agent_cases.py (--only maps_resume).
#include "common.h"

#include <fcntl.h>
#include <sys/mman.h>

static int g_fd;

// One line, read a byte at a time (nothing read ahead of it).
static int read_line(char *out, size_t size) {
    size_t n = 0;
    for (;;) {
        char c;
        ssize_t r = read(g_fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) t_fail("read /proc/self/smaps: %s", strerror(errno));
        if (r == 0) break;
        if (n + 1 < size) out[n++] = c;
        if (c == '\n') break;
    }
    out[n] = 0;
    return n > 0;
}

int main(int argc, char **argv) {
    t_init("maps_resume");
    static const char *const known[] = {"--dir", NULL};
    t_check_args(argc, argv, known, "--dir DIR");
    const char *dir = t_opt_str(argc, argv, "--dir", NULL);
    if (!dir) t_usage("--dir DIR");
    size_t len = 16 * 4096;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || madvise(m, len, MADV_DONTDUMP) != 0) t_fail("mmap/madvise");
    memset(m, 7, len);
    char want[32], line[512];
    snprintf(want, sizeof want, "%lx-", (unsigned long)m);
    g_fd = open("/proc/self/smaps", O_RDONLY);
    if (g_fd < 0) t_fail("open /proc/self/smaps: %s", strerror(errno));
    int found = 0;
    while (!found && read_line(line, sizeof line))
        found = strncmp(line, want, strlen(want)) == 0;
    if (!found) t_fail("no entry for the mapping at %p", (void *)m);
    t_line("read up to the mapping's range line");

    char path[4096];
    t_path(path, sizeof path, dir, "ready");
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    if (fd < 0) t_fail("create %s", path);
    close(fd);
    t_path(path, sizeof path, dir, "go");
    for (int i = 0; access(path, F_OK) != 0; i++) {
        if (i > 60000) t_fail("no %s within 600 s", path);
        t_sleep_ns(10 * 1000 * 1000);
    }

    if (!read_line(line, sizeof line) || strncmp(line, "Size:", 5) != 0)
        t_fail("the listing resumed with '%.60s', not the mapping's Size line", line);
    int flags_ok = 0;
    while (read_line(line, sizeof line)) {
        if (strncmp(line, "VmFlags:", 8) == 0) {
            flags_ok = strstr(line, " dd") != NULL;
            if (!flags_ok) t_fail("the mapping's VmFlags lost dd: %s", line);
            break;
        }
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2) t_fail("another entry before VmFlags: %s", line);
    }
    if (!flags_ok) t_fail("no VmFlags line for the mapping");
    unsigned long s = 0, e = 0;
    if (!read_line(line, sizeof line) || sscanf(line, "%lx-%lx ", &s, &e) != 2 ||
        s < (unsigned long)m + len)
        t_fail("the entry after the mapping is '%.60s'", line);
    t_line("the listing went on with the same mapping's lines, then the next mapping");
    return t_pass();
}
