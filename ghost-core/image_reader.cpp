// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/image_reader.h"
#include "ghost-core/record_hash.h"

#include <sys/utsname.h>

#include <cstring>
#include <memory>

namespace ghost::core {

namespace {

class record_reader {
  public:
    explicit record_reader(res::source &in) : in_(in) {}

    result<void> exact(void *dst, size_t len) {
        char *p = (char *)dst;
        while (len) {
            auto n = in_.read(p, len);
            if (!n) return n.err();
            if (*n == 0) return error{"the image is truncated"};
            p += *n;
            len -= *n;
            bytes_ += *n;
        }
        return {};
    }

    // Reads a record; metadata payloads are kept in `payload`, page data only hashed.
    result<image::record_header> next(std::string &payload) {
        image::record_header h;
        GHOST_TRY(exact(&h, sizeof h));
        if (h.magic != image::record_magic) return error{"the image is corrupt (bad record magic)"};
        if (h.version != image::record_version)
            return error{"the image was written by another ghost version (record version)"};
        if (h.type != image::rec_pages && h.length > image::max_metadata_record)
            return error{"the image is corrupt (bad record length)"};
        if (h.type == image::rec_pages && h.length > image::max_pages_record + 8)
            return error{"the image is corrupt (bad record length)"};
        image::record_hasher st(h.type);
        payload.clear();
        if (h.type == image::rec_pages) {
            if (!buf_) buf_.reset(new char[1 << 20]);
            uint64_t left = h.length;
            bool first = true;
            while (left) {
                size_t n = left < (1 << 20) ? left : (1 << 20);
                GHOST_TRY(exact(buf_.get(), n));
                st.update(buf_.get(), n);
                if (first && n >= 8) payload.assign(buf_.get(), 8); // the address
                first = false;
                left -= n;
            }
        } else {
            payload.resize(h.length);
            GHOST_TRY(exact(payload.data(), h.length));
            st.update(payload.data(), h.length);
        }
        if (st.digest() != h.hash)
            return error{"the image is corrupt (checksum mismatch in a record)"};
        if (h.type != image::rec_trailer) {
            hash_sum_ += h.hash;
            count_++;
            payload_bytes_ += h.length;
        }
        return h;
    }

    uint64_t count() const { return count_; }
    uint64_t payload_bytes() const { return payload_bytes_; }
    uint64_t hash_sum() const { return hash_sum_; }
    uint64_t bytes() const { return bytes_; }

  private:
    res::source &in_;
    uint64_t hash_sum_ = 0;
    uint64_t count_ = 0, payload_bytes_ = 0, bytes_ = 0;
    std::unique_ptr<char[]> buf_;
};

template <class T> result<void> fixed(const std::string &payload, T &out, const char *what) {
    if (payload.size() < sizeof(T))
        return error{std::string("the image is corrupt (short ") + what + ")"};
    std::memcpy(&out, payload.data(), sizeof(T));
    return {};
}

} // namespace

result<void> check_compatible(const image::header_record &h) {
    if (std::memcmp(h.magic, image::file_magic, sizeof h.magic) != 0)
        return error{"not a ghost image"};
    if (h.format_version != image::format_version)
        return error{"the image has format version " + std::to_string(h.format_version) +
                     ", this ghost reads version " + std::to_string(image::format_version)};
    if (h.arch != image::arch_x86_64 || h.page_size != 4096)
        return error{"the image is for another architecture"};
    utsname u;
    uname(&u);
    std::string release(h.kernel_release, strnlen(h.kernel_release, sizeof h.kernel_release));
    if (release != u.release)
        return error{"the image was taken under kernel " + release + ", this is " + u.release};
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((((uint64_t)hi << 32) | lo) != h.xcr0)
        return error{"the image was taken on a CPU with other vector registers (XCR0)"};
    return {};
}

result<image_summary> read_image(res::source &in, bool header_only) {
    record_reader rr(in);
    image_summary s;
    std::string payload;
    auto h = rr.next(payload);
    if (!h) {
        if (h.err().message == "the image is truncated" && rr.bytes() == 0)
            return error{"the image is empty"};
        if (h.err().message.find("bad record magic") != std::string::npos)
            return error{"not a ghost image"};
        return h.err();
    }
    if (h->type != image::rec_header) return error{"not a ghost image"};
    GHOST_TRY(fixed(payload, s.header, "header"));
    if (std::memcmp(s.header.magic, image::file_magic, sizeof s.header.magic) != 0)
        return error{"not a ghost image"};
    s.exe = payload.substr(sizeof s.header, s.header.exe_path_len);
    if (header_only) return s;
    for (;;) {
        auto r = rr.next(payload);
        if (!r) return r.err();
        switch (r->type) {
        case image::rec_process:
            GHOST_TRY(fixed(payload, s.process, "process record"));
            s.cwd = payload.substr(sizeof s.process, s.process.cwd_len);
            break;
        case image::rec_region: {
            region_summary reg;
            GHOST_TRY(fixed(payload, reg.record, "region record"));
            reg.path = payload.substr(sizeof reg.record, reg.record.path_len);
            s.regions.push_back(std::move(reg));
            break;
        }
        case image::rec_pages:
            if (s.regions.empty()) return error{"the image is corrupt (pages before any region)"};
            s.regions.back().stored_bytes += r->length - 8;
            s.memory_bytes += r->length - 8;
            break;
        case image::rec_file: {
            file_summary f;
            GHOST_TRY(fixed(payload, f.record, "file record"));
            f.path = payload.substr(sizeof f.record, f.record.path_len);
            s.files.push_back(std::move(f));
            break;
        }
        case image::rec_thread: {
            image::thread_record t;
            GHOST_TRY(fixed(payload, t, "thread record"));
            s.threads.push_back(t);
            break;
        }
        case image::rec_trailer: {
            image::trailer_record t;
            GHOST_TRY(fixed(payload, t, "trailer"));
            if (t.record_count != rr.count() || t.payload_bytes != rr.payload_bytes() ||
                t.hash_sum != rr.hash_sum())
                return error{"the image is corrupt (records missing or added)"};
            s.records = rr.count() + 1;
            s.image_bytes = rr.bytes();
            char extra;
            auto more = in.read(&extra, 1);
            if (more && *more != 0) return error{"the image is corrupt (data after the trailer)"};
            return s;
        }
        default:
            return error{"the image is corrupt (unknown record type " + std::to_string(r->type) +
                         ")"};
        }
    }
}

} // namespace ghost::core
