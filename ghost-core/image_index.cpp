// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/image_index.h"

#include "ghost-core/record_hash.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace ghost::core {

namespace {

class fd_guard {
  public:
    explicit fd_guard(int fd) : fd_(fd) {}
    ~fd_guard() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const { return fd_; }

  private:
    int fd_;
};

bool pread_all(int fd, void *dst, size_t len, uint64_t off) {
    char *p = (char *)dst;
    while (len) {
        ssize_t n = ::pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        p += n, off += (uint64_t)n, len -= (size_t)n;
    }
    return true;
}

// Reads at offsets that mostly move forward a little (record headers, small payloads): a window
// of the file is read at once, and reads inside it cost no system call. An incremental image has
// a record for every run of referenced pages: one pread each took most of an export's time.
class window_reader {
  public:
    window_reader(int fd, uint64_t size) : fd_(fd), size_(size), buf_(new char[window]) {}
    bool read(void *dst, size_t len, uint64_t off) {
        if (len > window) return pread_all(fd_, dst, len, off);
        if (off < start_ || off + len > start_ + filled_) {
            start_ = off;
            filled_ = (size_t)std::min<uint64_t>(window, size_ - std::min(size_, off));
            if (filled_ < len || !pread_all(fd_, buf_.get(), filled_, off)) return false;
        }
        std::memcpy(dst, buf_.get() + (off - start_), len);
        return true;
    }

  private:
    static constexpr size_t window = 1 << 20;
    int fd_;
    uint64_t size_, start_ = 0;
    size_t filled_ = 0;
    std::unique_ptr<char[]> buf_;
};

// Adds a span, merged with the last one when it continues it in the same source record.
void add_span(std::vector<page_span> &spans, const page_span &s) {
    if (!spans.empty()) {
        page_span &b = spans.back();
        if (b.source == s.source && b.record_offset == s.record_offset &&
            b.addr + b.len == s.addr) {
            b.len += s.len;
            return;
        }
    }
    spans.push_back(s);
}

} // namespace

result<image_index> index_image(const std::string &path) {
    fd_guard fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) return sys_error("cannot open " + path);
    struct stat sb;
    if (::fstat(fd.get(), &sb) != 0 || !S_ISREG(sb.st_mode))
        return error{path + " is not a regular file"};
    image_index idx;
    idx.size = (uint64_t)sb.st_size;
    window_reader in(fd.get(), idx.size);
    auto read_at = [&](int, void *dst, size_t len, uint64_t off) { return in.read(dst, len, off); };
    auto corrupt = [&](const char *what) { return error{path + ": " + what}; };
    uint64_t off = 0, records = 0, payload = 0, sum = 0;
    for (;;) {
        image::record_header h;
        if (off + sizeof h > idx.size || !read_at(fd.get(), &h, sizeof h, off))
            return corrupt("the image is truncated");
        if (h.magic != image::record_magic || h.length > idx.size - off - sizeof h)
            return corrupt("the image is corrupt (bad record)");
        uint64_t data = off + sizeof h;
        if (records == 0) {
            image::header_record head;
            if (h.type != image::rec_header || h.length < sizeof head ||
                !read_at(fd.get(), &head, sizeof head, data) ||
                std::memcmp(head.magic, image::file_magic, sizeof head.magic) != 0)
                return corrupt("not a ghost image");
        }
        if (h.type == image::rec_trailer) {
            image::trailer_record t;
            if (h.length != sizeof t || !read_at(fd.get(), &t, sizeof t, data) ||
                t.record_count != records || t.payload_bytes != payload || t.hash_sum != sum ||
                data + sizeof t != idx.size)
                return corrupt("the image is corrupt (records missing or added)");
            idx.hash_sum = t.hash_sum;
            return idx;
        }
        records++, payload += h.length, sum += h.hash;
        if (h.type == image::rec_tracking) {
            image::tracking_record t;
            if (h.length < sizeof t || !read_at(fd.get(), &t, sizeof t, data) ||
                t.source_count > image::max_sources ||
                h.length != sizeof t + t.source_count * sizeof(image::image_source))
                return corrupt("the image is corrupt (bad tracking record)");
            idx.scan_id = t.scan_id;
            idx.sources.resize(t.source_count);
            if (t.source_count &&
                !read_at(fd.get(), idx.sources.data(), t.source_count * sizeof(image::image_source),
                         data + sizeof t))
                return corrupt("the image is truncated");
        } else if (h.type == image::rec_pages) {
            uint64_t addr;
            if (h.length < 8 || !read_at(fd.get(), &addr, sizeof addr, data))
                return corrupt("the image is corrupt (bad pages record)");
            uint64_t len = h.length - 8;
            if (len > image::max_ref_record)
                return error{path + " holds pages records too large to reference"};
            uint32_t self = (uint32_t)idx.sources.size();
            add_span(idx.spans, {addr, len, self, off, addr, len, h.hash});
        } else if (h.type == image::rec_page_ref) {
            image::page_ref_record r;
            if (h.length != sizeof r || !read_at(fd.get(), &r, sizeof r, data) ||
                r.source >= idx.sources.size())
                return corrupt("the image is corrupt (bad page reference)");
            add_span(idx.spans, {r.addr, r.len, r.source, r.record_offset, r.record_addr,
                                 r.record_len, r.record_hash});
        }
        off = data + h.length;
    }
}

namespace {

constexpr char index_magic[8] = {'G', 'H', 'O', 'S', 'T', 'I', 'D', 'X'};
struct index_file_head {
    char magic[8];
    uint64_t size, hash_sum, scan_id;
    uint64_t source_count, span_count;
};

uint64_t index_digest(const index_file_head &h, const image_index &idx) {
    image::record_hasher hash(0);
    hash.update(&h, sizeof h);
    hash.update(idx.sources.data(), idx.sources.size() * sizeof idx.sources[0]);
    hash.update(idx.spans.data(), idx.spans.size() * sizeof idx.spans[0]);
    return hash.digest();
}

} // namespace

result<void> save_index(const image_index &idx, const std::string &path) {
    index_file_head h{};
    std::memcpy(h.magic, index_magic, sizeof h.magic);
    h.size = idx.size, h.hash_sum = idx.hash_sum, h.scan_id = idx.scan_id;
    h.source_count = idx.sources.size(), h.span_count = idx.spans.size();
    uint64_t digest = index_digest(h, idx);
    fd_guard fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (fd.get() < 0) return sys_error("cannot create " + path);
    auto put = [&](const void *p, size_t n) {
        for (const char *c = (const char *)p; n;) {
            ssize_t w = ::write(fd.get(), c, n);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) return false;
            c += w, n -= (size_t)w;
        }
        return true;
    };
    if (!put(&h, sizeof h) ||
        !put(idx.sources.data(), idx.sources.size() * sizeof idx.sources[0]) ||
        !put(idx.spans.data(), idx.spans.size() * sizeof idx.spans[0]) ||
        !put(&digest, sizeof digest)) {
        auto e = sys_error("cannot write " + path);
        ::unlink(path.c_str());
        return e;
    }
    return {};
}

result<image_index> load_index(const std::string &path) {
    fd_guard fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) return sys_error("cannot open " + path);
    struct stat sb;
    if (::fstat(fd.get(), &sb) != 0 || !S_ISREG(sb.st_mode))
        return error{path + " is not a regular file"};
    auto bad = [&] { return error{path + " is not a whole image index"}; };
    index_file_head h;
    if ((uint64_t)sb.st_size < sizeof h + 8 || !pread_all(fd.get(), &h, sizeof h, 0) ||
        std::memcmp(h.magic, index_magic, sizeof h.magic) != 0 ||
        h.source_count > image::max_sources ||
        h.span_count > ((uint64_t)sb.st_size - sizeof h) / sizeof(page_span) ||
        (uint64_t)sb.st_size != sizeof h + h.source_count * sizeof(image::image_source) +
                                    h.span_count * sizeof(page_span) + 8)
        return bad();
    image_index idx;
    idx.size = h.size, idx.hash_sum = h.hash_sum, idx.scan_id = h.scan_id;
    idx.sources.resize(h.source_count);
    idx.spans.resize(h.span_count);
    uint64_t off = sizeof h, digest = 0;
    size_t src_bytes = idx.sources.size() * sizeof idx.sources[0];
    size_t span_bytes = idx.spans.size() * sizeof idx.spans[0];
    if ((src_bytes && !pread_all(fd.get(), idx.sources.data(), src_bytes, off)) ||
        (span_bytes && !pread_all(fd.get(), idx.spans.data(), span_bytes, off + src_bytes)) ||
        !pread_all(fd.get(), &digest, sizeof digest, off + src_bytes + span_bytes) ||
        digest != index_digest(h, idx))
        return bad();
    return idx;
}

} // namespace ghost::core
