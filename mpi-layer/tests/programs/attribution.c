/* SPDX-License-Identifier: Apache-2.0 */
/* ghost only: creation records exist for the objects the program holds and go away with them; after
 * MPI_Init, after creating communicators and windows, and at the end, every memory region of the
 * process is attributed to the upper or the lower half; every fd the test did not open itself
 * belongs to the lower half (or to ghost's agent); the lower half's threads are found. Natively it
 * prints the same PASS line without checking (the runner checks this program only under ghostrun).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <link.h>
#include <unistd.h>

#include "mpit.h"

typedef int (*check_fn)(int, size_t *, size_t *);
typedef int (*fd_fn)(int);
typedef size_t (*thr_fn)(int *, size_t);

/* A descriptor that is gone (or another file) 100 ms later was a library thread's passing read
 * (the layer's client thread reads /proc/self/statm and schedstat each second for its STATS): not
 * a descriptor of either half that the image would have to carry. */
static int transient(int fd) {
    struct stat a, b;
    if (fstat(fd, &a) != 0) return 1;
    usleep(100000);
    return fstat(fd, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino;
}

static void check_all(const char *when, int mine) {
    check_fn chk = (check_fn)dlsym(RTLD_DEFAULT, "ghost_mpi_attribution_check");
    fd_fn is_lower = (fd_fn)dlsym(RTLD_DEFAULT, "ghost_mpi_fd_is_lower");
    thr_fn threads = (thr_fn)dlsym(RTLD_DEFAULT, "ghost_mpi_lower_threads");
    fd_fn agent_fd = (fd_fn)dlsym(RTLD_DEFAULT, "ghost_agent_owns_fd"); /* ghost's agent */
    int (*coord_fd)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "ghost_mpi_coord_fd");
    if (!chk) return;
    int coord = coord_fd ? coord_fd() : -1; /* the upper half's own link to the job coordinator */
    size_t nreg = 0, nbytes = 0;
    int rc = chk(2, &nreg, &nbytes);
    /* A region still unattributed 100 ms later is one: another thread may be making its malloc
     * arena (glibc reserves 128 MiB PROT_NONE, then trims it to an aligned 64 MiB). */
    if (rc != 0) {
        usleep(100000);
        rc = chk(2, &nreg, &nbytes);
    }
    CHECK(rc == 0);
    if (rc != 0)
        printf("rank %d: %s: %zu regions, %zu bytes unattributed\n", mpit_rank, when, nreg, nbytes);
    DIR *d = opendir("/proc/self/fd");
    int bad = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd <= 2 || fd == dirfd(d) || (agent_fd && agent_fd(fd))) continue;
        if (fd == coord) {
            if (is_lower(fd)) bad++;
            continue;
        }
        if (fd == mine) {
            if (is_lower(fd)) bad++; /* the application's own file must not be the lower half's */
        } else if (!is_lower(fd) && !transient(fd)) {
            char path[64], target[256] = "";
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            ssize_t k = readlink(path, target, sizeof target - 1);
            if (k > 0) target[k] = 0;
            fprintf(stderr, "rank %d: %s: fd %d (%s) unattributed\n", mpit_rank, when, fd, target);
            bad++;
        }
    }
    closedir(d);
    CHECK(bad == 0);
    int tids[256];
    size_t nt = threads(tids, 256);
    CHECK(nt >= 1); /* at least the parked TLS donor of the lower half */
    for (size_t i = 0; i < nt && i < 256; i++)
        CHECK(tids[i] != getpid());
}

/* The upper half must not have loaded the real MPI library (only the stub with its soname). */
static int real_mpi_in_upper(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    if (strstr(info->dlpi_name, "/usr/lib/x86_64-linux-gnu/libmpi.so") ||
        strstr(info->dlpi_name, "/usr/lib/x86_64-linux-gnu/libmpich.so"))
        (*(int *)data)++;
    return 0;
}

typedef size_t (*count_fn)(void);
typedef void (*dump_fn)(int);

int main(int argc, char **argv) {
    mpit_init(&argc, &argv, "attribution");
    count_fn records = (count_fn)dlsym(RTLD_DEFAULT, "ghost_mpi_records_count");
    dump_fn dump = (dump_fn)dlsym(RTLD_DEFAULT, "ghost_mpi_records_dump");
    size_t base_records = records ? records() : 0;
    if (records) {
        int real = 0;
        dl_iterate_phdr(real_mpi_in_upper, &real);
        CHECK(real == 0);
    }
    int mine = open("/proc/self/status", O_RDONLY);
    check_all("after MPI_Init", mine);
    MPI_Comm dup, split;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    MPI_Comm_split(MPI_COMM_WORLD, mpit_rank % 2, 0, &split);
    int *base;
    MPI_Win w;
    MPI_Win_allocate(1 << 20, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &base, &w);
    char *big = malloc(8 << 20); /* upper memory the upper libc maps after start-up */
    memset(big, 1, 8 << 20);
    int x = mpit_rank, y = 0;
    MPI_Allreduce(&x, &y, 1, MPI_INT, MPI_SUM, split);
    check_all("after communicators and windows", mine);
    if (records) {
        CHECK(records() == base_records + 3); /* dup, split, window */
        if (records() != base_records + 3) dump(1);
    }
    MPI_Win_free(&w);
    MPI_Comm_free(&split);
    MPI_Comm_free(&dup);
    free(big);
    check_all("after frees", mine);
    /* the records stay as tombstones (collective creations over MPI_COMM_WORLD, the window's
     * too: a restart must replay them on every member) until a checkpoint finds them dead on
     * every rank */
    if (records) CHECK(records() == base_records + 3);
    close(mine);
    return mpit_finish();
}
