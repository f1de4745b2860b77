// SPDX-License-Identifier: Apache-2.0
#include "ghost-core/image_reader.h"
#include "ghost-core/image_verify.h"
#include "ghost-core/record_hash.h"

#include <sys/utsname.h>

#include <cstring>
#include <memory>

namespace ghost::core {

namespace {

// Frames records off a source and feeds each one through the image's verifier (image_verify.h),
// the same one the restorer uses.
class record_reader {
  public:
    explicit record_reader(res::source &in) : in_(in) {}

    result<void> exact(void *dst, size_t len) {
        char *p = (char *)dst;
        while (len) {
            auto n = in_.read(p, len);
            if (!n) return n.err();
            if (*n == 0) return error{bytes_ ? "the image is truncated" : "the image is empty"};
            p += *n;
            len -= *n;
            bytes_ += *n;
        }
        return {};
    }

    // The next `len` bytes (at most 1 MiB) into the hasher: where the source holds them when it
    // lends them, else through buf_.
    result<void> hash_next(image::record_hasher &st, size_t len) {
        while (len) {
            auto v = in_.lend(len);
            if (!v) return v.err();
            if (v->len == 0) break; // lends nothing (or the end: exact() below says so)
            st.update(v->data, v->len);
            len -= v->len;
            bytes_ += v->len;
        }
        if (!len) return {};
        if (!buf_) buf_.reset(new char[1 << 20]);
        GHOST_TRY(exact(buf_.get(), len));
        st.update(buf_.get(), len);
        return {};
    }

    // Reads and verifies a record; metadata payloads are kept in `payload`, page data only hashed.
    result<image::record_header> next(std::string &payload) {
        image::record_header h;
        GHOST_TRY(exact(&h, sizeof h));
        if (!v_.next(h)) return error{v_.why()};
        image::record_hasher st(h.type);
        payload.clear();
        if (h.type == image::rec_pages || h.type == image::rec_object_data ||
            h.type == image::rec_tree_data) {
            // The address first: its place is checked before the data would be used.
            uint64_t addr;
            if (h.length < sizeof addr) return error{"a data record shorter than its address"};
            GHOST_TRY(exact(&addr, sizeof addr));
            st.update(&addr, sizeof addr);
            bool ok = h.type == image::rec_pages ? v_.pages(addr) : v_.object_data(addr);
            if (!ok) return error{v_.why()};
            payload.assign((const char *)&addr, sizeof addr);
            for (uint64_t left = h.length - sizeof addr; left;) {
                size_t n = left < (1 << 20) ? left : (1 << 20);
                GHOST_TRY(hash_next(st, n));
                left -= n;
            }
            if (!v_.digest(st.digest())) return error{v_.why()};
        } else {
            payload.resize(h.length);
            GHOST_TRY(exact(payload.data(), h.length));
            st.update(payload.data(), h.length);
            if (!v_.digest(st.digest()) || !v_.metadata(payload.data(), payload.size()))
                return error{v_.why()};
        }
        return h;
    }

    uint64_t bytes() const { return bytes_; }
    const image::stream_verifier &verifier() const { return v_; }

  private:
    res::source &in_;
    image::stream_verifier v_;
    uint64_t bytes_ = 0;
    std::unique_ptr<char[]> buf_;
};

image::host_facts this_host() {
    static utsname u;
    uname(&u);
    return {u.release, image::read_xcr0()};
}

} // namespace

result<void> check_compatible(const image::header_record &h) {
    image::message why;
    if (!image::check_compatible(h, this_host(), why)) return error{why.str()};
    return {};
}

result<image_summary> read_image(res::source &in, bool header_only, bool followed) {
    auto rr = std::make_unique<record_reader>(in);
    image_summary s;
    std::string payload; // the verifier has checked each record's sizes before it gets here
    for (;;) {
        auto r = rr->next(payload);
        if (!r) return r.err();
        // header_only: the header, and the tracking record if one follows it.
        if (header_only && r->type != image::rec_header && r->type != image::rec_tracking) return s;
        switch (r->type) {
        case image::rec_header:
            std::memcpy(&s.header, payload.data(), sizeof s.header);
            s.exe = payload.substr(sizeof s.header, s.header.exe_path_len);
            break;
        case image::rec_tracking: {
            image::tracking_record t;
            std::memcpy(&t, payload.data(), sizeof t);
            s.scan_id = t.scan_id;
            s.sources.resize(t.source_count);
            if (t.source_count)
                std::memcpy(s.sources.data(), payload.data() + sizeof t,
                            t.source_count * sizeof(image::image_source));
            if (header_only) return s;
            break;
        }
        case image::rec_page_ref: {
            image::page_ref_record ref;
            std::memcpy(&ref, payload.data(), sizeof ref);
            s.regions.back().referenced_bytes += ref.len;
            s.referenced_bytes += ref.len;
            break;
        }
        case image::rec_credentials:
            std::memcpy(&s.creds, payload.data(), sizeof s.creds);
            s.groups.resize(s.creds.group_count);
            if (!s.groups.empty())
                std::memcpy(s.groups.data(), payload.data() + sizeof s.creds, s.groups.size() * 4);
            break;
        case image::rec_process:
            std::memcpy(&s.process, payload.data(), sizeof s.process);
            s.cwd = payload.substr(sizeof s.process, s.process.cwd_len);
            break;
        case image::rec_object: {
            object_summary o;
            std::memcpy(&o.record, payload.data(), sizeof o.record);
            o.name = payload.substr(sizeof o.record, o.record.name_len);
            s.objects.push_back(std::move(o));
            break;
        }
        case image::rec_object_data:
            s.objects.back().stored_bytes += r->length - 8;
            break;
        case image::rec_region: {
            region_summary reg;
            std::memcpy(&reg.record, payload.data(), sizeof reg.record);
            reg.path = payload.substr(sizeof reg.record, reg.record.path_len);
            s.regions.push_back(std::move(reg));
            break;
        }
        case image::rec_pages:
            s.regions.back().stored_bytes += r->length - 8;
            break;
        case image::rec_file: {
            file_summary f;
            std::memcpy(&f.record, payload.data(), sizeof f.record);
            f.path = payload.substr(sizeof f.record, f.record.path_len);
            f.data = payload.substr(sizeof f.record + f.record.path_len, f.record.data_len);
            s.files.push_back(std::move(f));
            break;
        }
        case image::rec_file_lock: {
            image::file_lock_record l;
            std::memcpy(&l, payload.data(), sizeof l);
            s.locks.push_back(l);
            break;
        }
        case image::rec_tree_member: {
            image::tree_member_record m;
            std::memcpy(&m, payload.data(), sizeof m);
            s.tree_members.push_back(m);
            break;
        }
        case image::rec_tree_shared:
            s.tree_shared++;
            break;
        case image::rec_thread: {
            image::thread_record t;
            std::memcpy(&t, payload.data(), sizeof t);
            s.threads.push_back(t);
            break;
        }
        case image::rec_trailer: {
            s.records = rr->verifier().records() + 1;
            s.image_bytes = rr->bytes();
            s.memory_bytes = rr->verifier().memory_bytes();
            uint32_t live = rr->verifier().tree_live_count();
            for (uint32_t i = 0; i < live; i++) {
                auto member = read_image(in, false, i + 1 < live); // the next stream...
                if (!member) return member.err();
                s.tree_images.push_back(std::move(*member));
            }
            if (!s.tree_images.empty() || followed) return s; // (the last one checks the end)
            char extra;
            auto more = in.read(&extra, 1);
            if (more && *more != 0) return error{"the image is corrupt (data after the trailer)"};
            return s;
        }
        }
    }
}

} // namespace ghost::core
