// SPDX-License-Identifier: Apache-2.0
// Files open in a temp directory (--dir) at moving offsets, one small step at a time:
//  * in.dat read with read() in 100-byte records, in.txt read with fgets() (stdio buffer in memory,
//    descriptor offset in the kernel): the content read must be that at the expected offset;
//  * out.dat written sequentially with write(), alternately through two descriptors that share one
//    open file description (dup), so they share one offset; content depends on the file offset
//    only, so a redone step (after a restart) or a duplicate rewrites identical bytes (--dup 0:
//    through the first descriptor only);
//  * rw.dat (O_RDWR) starting at offset 4096, written with backward lseek(SEEK_CUR) and read back;
//  * app.dat (O_APPEND, fixed-size records) and app.txt (fopen "a", fflush every 7 steps). Appends
//    are not idempotent: a restart from a checkpoint redoes the appends made after it, and a
//    duplicate appends too. The check accepts repeated records but requires every record to be
//    intact and every step's record to come after the previous step's first record.
//  * a directory descriptor and /dev/null stay usable.
// Offsets and flags (O_APPEND, FD_CLOEXEC, access mode) are checked at every step; everything is
// re-read and verified at the end.
#include "common.h"

#include <fcntl.h>
#include <sys/stat.h>

#define IN_REC 100
#define TXT_LINE 31 // "line %08u %016x\n"
#define APP_REC 30  // "A %010u %016x\n"
#define RW_START 4096

static unsigned char byte_at(uint64_t off, uint64_t salt) {
    return (unsigned char)(t_mix64(off / 8 + salt) >> (off % 8 * 8));
}

static uint64_t out_len(uint64_t s) {
    return 1 + t_mix64(s ^ 0x77) % 200;
}

static off_t cur(int fd, const char *what) {
    off_t o = lseek(fd, 0, SEEK_CUR);
    if (o < 0) t_fail("lseek %s: %s", what, strerror(errno));
    return o;
}

static char *slurp(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) t_fail("open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) t_fail("fstat %s", path);
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) t_fail("malloc");
    *len = t_read_full(fd, buf, (size_t)st.st_size, path);
    if (*len != (size_t)st.st_size) t_fail("short read of %s", path);
    buf[*len] = 0;
    close(fd);
    return buf;
}

// Accepts repeated records (redone appends) but requires: every record intact, every step present,
// and the first record of step k after the first record of step k-1.
static void check_appended(const char *what, uint64_t steps, const uint64_t *order, uint64_t n) {
    unsigned char *seen = calloc(steps, 1);
    if (!seen) t_fail("calloc");
    for (uint64_t i = 0; i < n; i++) {
        uint64_t k = order[i];
        if (k >= steps)
            t_fail("%s: record %" PRIu64 " has step %" PRIu64 " out of range", what, i, k);
        if (k > 0 && !seen[k - 1])
            t_fail("%s: record %" PRIu64 " (step %" PRIu64
                   ") comes before any record of step %" PRIu64,
                   what, i, k, k - 1);
        seen[k] = 1;
    }
    for (uint64_t k = 0; k < steps; k++)
        if (!seen[k]) t_fail("%s: no record of step %" PRIu64, what, k);
    free(seen);
}

int main(int argc, char **argv) {
    t_init("file_offsets");
    static const char *const known[] = {"--dir", "--steps", "--dup", NULL};
    const char *usage = "--dir DIR [--steps N] [--dup 0|1]";
    t_check_args(argc, argv, known, usage);
    const char *dir = t_opt_str(argc, argv, "--dir", NULL);
    uint64_t steps = t_opt_u64(argc, argv, "--steps", 600000);
    int use_dup = (int)t_opt_u64(argc, argv, "--dup", 1);
    if (!dir || steps < 10) t_usage(usage);
    t_line("file_offsets steps=%" PRIu64 " dup=%d", steps, use_dup);

    char p_in[4096], p_txt[4096], p_out[4096], p_rw[4096], p_app[4096], p_apptxt[4096];
    t_path(p_in, sizeof p_in, dir, "in.dat");
    t_path(p_txt, sizeof p_txt, dir, "in.txt");
    t_path(p_out, sizeof p_out, dir, "out.dat");
    t_path(p_rw, sizeof p_rw, dir, "rw.dat");
    t_path(p_app, sizeof p_app, dir, "app.dat");
    t_path(p_apptxt, sizeof p_apptxt, dir, "app.txt");

    // Input files.
    {
        int fd = open(p_in, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) t_fail("create %s: %s", p_in, strerror(errno));
        unsigned char buf[IN_REC * 64];
        for (uint64_t s = 0; s < steps; s += 64) {
            uint64_t n = steps - s < 64 ? steps - s : 64;
            for (uint64_t i = 0; i < n * IN_REC; i++)
                buf[i] = byte_at(s * IN_REC + i, 1);
            t_write_all(fd, buf, n * IN_REC, "in.dat");
        }
        close(fd);
        FILE *f = fopen(p_txt, "w");
        if (!f) t_fail("create %s: %s", p_txt, strerror(errno));
        for (uint64_t s = 0; s < steps; s++)
            fprintf(f, "line %08" PRIu64 " %016" PRIx64 "\n", s, t_mix64(s));
        if (fclose(f) != 0) t_fail("write %s", p_txt);
    }

    int fd_in = open(p_in, O_RDONLY);
    FILE *fin = fopen(p_txt, "r");
    int fd_out = open(p_out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int fd_rw = open(p_rw, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int fd_app = open(p_app, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (fd_in < 0 || !fin || fd_out < 0 || fd_rw < 0 || fd_app < 0)
        t_fail("open: %s", strerror(errno));
    int fd_dup = dup(fd_out); // same open file description: one shared offset
    if (fd_dup < 0) t_fail("dup: %s", strerror(errno));
    {
        int fd = open(p_apptxt, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) t_fail("create %s: %s", p_apptxt, strerror(errno));
        close(fd);
    }
    FILE *fapp = fopen(p_apptxt, "a");
    int fd_dir = open(dir, O_RDONLY | O_DIRECTORY);
    int fd_null = open("/dev/null", O_WRONLY);
    if (!fapp || fd_dir < 0 || fd_null < 0) t_fail("open: %s", strerror(errno));
    if (lseek(fd_rw, RW_START, SEEK_SET) != RW_START) t_fail("lseek rw.dat");

    uint64_t out_off = 0, rw_off = RW_START, rw_end = RW_START;
    unsigned char buf[256], got[256];
    char line[128], want[128];
    for (uint64_t s = 0; s < steps; s++) {
        // Reads at the current offsets.
        if (cur(fd_in, "in.dat") != (off_t)(s * IN_REC))
            t_fail("in.dat offset %lld != %" PRIu64, (long long)cur(fd_in, "in.dat"), s * IN_REC);
        if (t_read_full(fd_in, got, IN_REC, "in.dat") != IN_REC) t_fail("in.dat: early EOF");
        for (int i = 0; i < IN_REC; i++)
            if (got[i] != byte_at(s * IN_REC + (uint64_t)i, 1))
                t_fail("in.dat: wrong byte at offset %" PRIu64, s * IN_REC + (uint64_t)i);
        long tpos = ftell(fin);
        if (tpos != (long)(s * TXT_LINE))
            t_fail("in.txt: ftell %ld != %" PRIu64, tpos, s * TXT_LINE);
        if (!fgets(line, sizeof line, fin)) t_fail("in.txt: early EOF at line %" PRIu64, s);
        snprintf(want, sizeof want, "line %08" PRIu64 " %016" PRIx64 "\n", s, t_mix64(s));
        if (strcmp(line, want) != 0) t_fail("in.txt line %" PRIu64 ": got '%.40s'", s, line);

        // Sequential writes through two descriptors sharing one offset.
        int fdw = use_dup && s % 2 ? fd_dup : fd_out;
        if (cur(fdw, "out.dat") != (off_t)out_off)
            t_fail("out.dat offset %lld != %" PRIu64 " on %s descriptor",
                   (long long)cur(fdw, "out.dat"), out_off,
                   fdw == fd_dup ? "dup'ed (shares the original's offset)" : "original");
        uint64_t n = out_len(s);
        for (uint64_t i = 0; i < n; i++)
            buf[i] = byte_at(out_off + i, 2);
        t_write_all(fdw, buf, n, "out.dat");
        out_off += n;

        // Read/write descriptor with backward seeks.
        if (cur(fd_rw, "rw.dat") != (off_t)rw_off)
            t_fail("rw.dat offset %lld != %" PRIu64, (long long)cur(fd_rw, "rw.dat"), rw_off);
        for (int i = 0; i < 16; i++)
            buf[i] = byte_at(rw_off + (uint64_t)i, 3);
        t_write_all(fd_rw, buf, 16, "rw.dat");
        rw_off += 16;
        if (rw_off > rw_end) rw_end = rw_off;
        if (s % 3 == 2) {
            if (lseek(fd_rw, -24, SEEK_CUR) != (off_t)(rw_off - 24)) t_fail("lseek rw.dat back");
            rw_off -= 24;
        }
        if (s % 5 == 4) {
            if (lseek(fd_rw, -16, SEEK_CUR) != (off_t)(rw_off - 16)) t_fail("lseek rw.dat back");
            if (t_read_full(fd_rw, got, 16, "rw.dat") != 16) t_fail("rw.dat: short read");
            for (int i = 0; i < 16; i++)
                if (got[i] != byte_at(rw_off - 16 + (uint64_t)i, 3))
                    t_fail("rw.dat: read back wrong byte at %" PRIu64, rw_off - 16 + (uint64_t)i);
        }

        // Appends.
        char rec[64];
        if (snprintf(rec, sizeof rec, "A %010" PRIu64 " %016" PRIx64 "\n", s, t_mix64(s ^ 0xa5)) !=
            APP_REC)
            t_fail("append record length");
        t_write_all(fd_app, rec, APP_REC, "app.dat");
        if (cur(fd_app, "app.dat") % APP_REC != 0)
            t_fail("app.dat: size not a multiple of records");
        fprintf(fapp, "step %" PRIu64 " %016" PRIx64 "\n", s, t_mix64(s ^ 0x5a));
        if (s % 7 == 6 && fflush(fapp) != 0) t_fail("fflush app.txt: %s", strerror(errno));

        if (s % 64 == 0) {
            if (!(fcntl(fd_app, F_GETFL) & O_APPEND)) t_fail("app.dat lost O_APPEND");
            if ((fcntl(fd_rw, F_GETFL) & O_ACCMODE) != O_RDWR) t_fail("rw.dat not O_RDWR");
            if ((fcntl(fd_in, F_GETFL) & O_ACCMODE) != O_RDONLY) t_fail("in.dat not O_RDONLY");
            if (!(fcntl(fd_out, F_GETFD) & FD_CLOEXEC)) t_fail("out.dat lost FD_CLOEXEC");
            if (fcntl(fd_dup, F_GETFD) & FD_CLOEXEC) t_fail("dup'ed descriptor gained FD_CLOEXEC");
            if (fcntl(fd_in, F_GETFD) & FD_CLOEXEC) t_fail("in.dat gained FD_CLOEXEC");
            struct stat st;
            if (fstat(fd_dir, &st) != 0 || !S_ISDIR(st.st_mode))
                t_fail("directory descriptor broken");
            int probe = openat(fd_dir, "in.dat", O_RDONLY);
            if (probe < 0) t_fail("openat(dirfd, in.dat): %s", strerror(errno));
            close(probe);
            t_write_all(fd_null, buf, 16, "/dev/null");
        }
        if ((s + 1) % (steps / 10) == 0)
            t_line("step %" PRIu64 " in=%" PRIu64 " out=%" PRIu64 " rw=%" PRIu64, s + 1,
                   (s + 1) * IN_REC, out_off, rw_off);
    }

    // End of input.
    if (t_read_full(fd_in, got, 1, "in.dat") != 0) t_fail("in.dat: data after the last record");
    if (fgets(line, sizeof line, fin)) t_fail("in.txt: data after the last line");
    if (fclose(fapp) != 0) t_fail("fclose app.txt: %s", strerror(errno));
    fclose(fin);
    close(fd_in);
    close(fd_out);
    close(fd_dup);
    close(fd_rw);
    close(fd_app);
    close(fd_dir);
    close(fd_null);

    size_t len;
    char *data = slurp(p_out, &len);
    if (len != out_off) t_fail("out.dat: size %zu != %" PRIu64, len, out_off);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)data[i] != byte_at(i, 2)) t_fail("out.dat: wrong byte at offset %zu", i);
    free(data);

    data = slurp(p_rw, &len);
    if (len != rw_end) t_fail("rw.dat: size %zu != %" PRIu64, len, rw_end);
    for (size_t i = 0; i < len; i++) {
        unsigned char w = i < RW_START ? 0 : byte_at(i, 3);
        if ((unsigned char)data[i] != w) t_fail("rw.dat: wrong byte at offset %zu", i);
    }
    free(data);

    data = slurp(p_app, &len);
    if (len % APP_REC) t_fail("app.dat: size %zu not a multiple of %d", len, APP_REC);
    uint64_t nrec = len / APP_REC;
    uint64_t *order = malloc((nrec + 1) * sizeof *order);
    if (!order) t_fail("malloc");
    for (uint64_t i = 0; i < nrec; i++) {
        unsigned long long k, h;
        char r[APP_REC + 1]; // sscanf() on the big buffer would strlen() it every time
        memcpy(r, data + i * APP_REC, APP_REC);
        r[APP_REC] = 0;
        if (sscanf(r, "A %10llu %16llx", &k, &h) != 2 || r[APP_REC - 1] != '\n' || r[1] != ' ' ||
            r[12] != ' ' || h != t_mix64(k ^ 0xa5))
            t_fail("app.dat: record %" PRIu64 " corrupted: '%.29s'", i, r);
        order[i] = k;
    }
    check_appended("app.dat", steps, order, nrec);
    free(order);
    free(data);

    data = slurp(p_apptxt, &len);
    uint64_t nlines = 0;
    for (size_t i = 0; i < len; i++)
        nlines += data[i] == '\n';
    if (len && data[len - 1] != '\n') t_fail("app.txt: last line incomplete");
    order = malloc((nlines + 1) * sizeof *order);
    if (!order) t_fail("malloc");
    char *p = data;
    for (uint64_t i = 0; i < nlines; i++) {
        char *nl = strchr(p, '\n');
        unsigned long long k, h;
        int used = 0;
        char one[64];
        if (nl - p >= (long)sizeof one) t_fail("app.txt: line %" PRIu64 " too long", i);
        memcpy(one, p, (size_t)(nl - p));
        one[nl - p] = 0;
        if (sscanf(one, "step %llu %16llx%n", &k, &h, &used) != 2 || used != nl - p ||
            h != t_mix64(k ^ 0x5a))
            t_fail("app.txt: line %" PRIu64 " corrupted: '%.40s'", i, p);
        order[i] = k;
        p = nl + 1;
    }
    check_appended("app.txt", steps, order, nlines);
    free(order);
    free(data);

    t_line("files ok out=%" PRIu64 " rw=%" PRIu64 " appended=%" PRIu64, out_off, rw_end, steps);
    return t_pass();
}
