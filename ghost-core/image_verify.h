// SPDX-License-Identifier: Apache-2.0
// The rules an image must follow, in one place. `ghost inspect` (image_reader.cpp) and the
// restorer (restore/restorer.cpp) feed every record through one stream_verifier as the stream goes
// by, so that an image one of them accepts, the other accepts too, up to what only the restore can
// find out (free addresses, files, privileges). A stream has exactly one valid order (see
// image_format.h): two records swapped, a record repeated or dropped are all refused, most of them
// at the record itself, the rest at the trailer.
//
// Freestanding (the restorer includes it): no libc, no allocation, no exceptions.
// Use, for each record: next(header); then for pages, pages(address) before the data is read
// into place; for the others metadata(payload) once digest() has accepted the payload's hash.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ghost-core/agent/agent_state.h"
#include "ghost-core/image_format.h"

namespace ghost::image {

inline constexpr uint64_t image_page_size = 4096;
inline constexpr uint32_t max_path = 4096; // paths in records, with their terminating zero
inline constexpr int max_image_fd = 65536;
inline constexpr uint32_t max_image_objects = 64; // pipes, pty pairs (the restorer's tables)
inline constexpr uint32_t max_image_threads = (uint32_t)ghost::agent::max_threads;
inline constexpr const char *checksum_mismatch =
    "the image is corrupt (checksum mismatch in a record)";

// A one-line reason, built without allocation; silently cut at its capacity.
class message {
  public:
    message &add(const char *s) {
        while (*s && len_ + 1 < sizeof buf_)
            buf_[len_++] = *s++;
        buf_[len_] = 0;
        return *this;
    }
    message &add(const char *s, size_t n) {
        for (size_t i = 0; i < n && s[i] && len_ + 1 < sizeof buf_; i++)
            buf_[len_++] = s[i];
        buf_[len_] = 0;
        return *this;
    }
    message &num(uint64_t v) {
        char tmp[24];
        int n = 0;
        do
            tmp[n++] = (char)('0' + v % 10);
        while (v /= 10);
        while (n && len_ + 1 < sizeof buf_)
            buf_[len_++] = tmp[--n];
        buf_[len_] = 0;
        return *this;
    }
    message &hex(uint64_t v) {
        add("0x");
        bool started = false;
        for (int shift = 60; shift >= 0; shift -= 4) {
            int d = (int)(v >> shift) & 15;
            if (!d && !started && shift) continue;
            started = true;
            char c[2] = {"0123456789abcdef"[d], 0};
            add(c);
        }
        return *this;
    }
    message &clear() {
        len_ = 0;
        buf_[0] = 0;
        return *this;
    }
    const char *str() const { return buf_; }

  private:
    char buf_[320] = {};
    size_t len_ = 0;
};

// What the restoring machine offers, compared with the header.
struct host_facts {
    const char *kernel_release; // uname's release
    uint64_t xcr0;              // XGETBV(0)
};

inline uint64_t read_xcr0() {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

inline bool same_text(const char *a, const char *b, size_t max) {
    for (size_t i = 0; i < max; i++) {
        if (a[i] != b[i]) return false;
        if (!a[i]) return true;
    }
    return true;
}

// The header's own fields: is this a ghost image this ghost reads?
inline bool check_header_fields(const header_record &h, message &why) {
    for (size_t i = 0; i < sizeof h.magic; i++)
        if (h.magic[i] != file_magic[i]) return why.clear().add("not a ghost image"), false;
    // Version 5 only added record types (process trees): a version 4 image is a version 5 one.
    if (h.format_version != format_version && h.format_version != 4)
        return why.clear()
                   .add("the image has format version ")
                   .num(h.format_version)
                   .add(", this ghost reads versions 4 and ")
                   .num(format_version),
               false;
    if (h.arch != arch_x86_64 || h.page_size != image_page_size)
        return why.clear().add("the image is for another architecture"), false;
    if (h.flags & ~(header_job_rank | header_pages_only))
        return why.clear().add("the image has header flags this ghost does not know"), false;
    return true;
}

// Can an image with this header be restored on this machine? (Both `ghost inspect` and `ghost
// restart` ask before anything else; the restorer asks again.)
inline bool check_compatible(const header_record &h, const host_facts &host, message &why) {
    if (!check_header_fields(h, why)) return false;
    if (h.flags & header_pages_only)
        return why.clear().add("the image is a pre-copy (pages only): it is restored only as the "
                               "source of the image taken after it"),
               false;
    if (!same_text(h.kernel_release, host.kernel_release, sizeof h.kernel_release))
        return why.clear()
                   .add("the image was taken under kernel ")
                   .add(h.kernel_release, sizeof h.kernel_release)
                   .add(", this is ")
                   .add(host.kernel_release),
               false;
    if (h.xcr0 != host.xcr0)
        return why.clear().add("the image was taken on a CPU with other vector registers (XCR0)"),
               false;
    return true;
}

inline const char *record_name(uint16_t type) {
    switch (type) {
    case rec_header:
        return "header";
    case rec_credentials:
        return "credentials";
    case rec_process:
        return "process";
    case rec_region:
        return "region";
    case rec_pages:
        return "pages";
    case rec_file:
        return "file";
    case rec_thread:
        return "thread";
    case rec_trailer:
        return "trailer";
    case rec_object:
        return "object";
    case rec_object_data:
        return "object data";
    case rec_tracking:
        return "tracking";
    case rec_page_ref:
        return "page reference";
    case rec_file_lock:
        return "file lock";
    case rec_tree_member:
        return "tree member";
    case rec_tree_shared:
        return "tree shared file";
    case rec_tree_data:
        return "tree shared memory data";
    default:
        return "unknown";
    }
}

class stream_verifier {
  public:
    // A record's header, before its payload. Refuses what cannot come here.
    bool next(const record_header &h) {
        if (stage_ == stage::done) return corrupt("data after the trailer");
        if (h.magic != record_magic)
            return stage_ == stage::header ? fail("not a ghost image")
                                           : corrupt("bad record magic");
        if (h.version != record_version)
            return fail("the image was written by another ghost version (record version)");
        cur_ = h;
        index_++;
        if (!in_order(h.type)) {
            if (stage_ == stage::header) return fail("not a ghost image");
            if (h.type < rec_header || h.type > rec_tree_data)
                return why_.clear()
                           .add("the image is corrupt (unknown record type ")
                           .num(h.type)
                           .add(")"),
                       false;
            return why_.clear()
                       .add("the image is corrupt (record ")
                       .num(index_)
                       .add(", a ")
                       .add(record_name(h.type))
                       .add(" record, is out of order)"),
                   false;
        }
        if (!length_ok(h)) return corrupt("bad record length");
        // The tree's records come right after the process record, before anything else.
        if (h.type != rec_tree_member && h.type != rec_tree_shared && h.type != rec_tree_data &&
            h.type != rec_process && stage_ >= stage::objects)
            tree_closed_ = true;
        if (h.type != rec_trailer) {
            records_++;
            payload_bytes_ += h.length;
            hash_sum_ += h.hash;
        }
        return true;
    }

    // The hash of the current record's payload as the reader computed it.
    bool digest(uint64_t d) { return d == cur_.hash ? true : fail(checksum_mismatch); }

    // The whole payload of the current record (not pages), after digest() accepted it.
    bool metadata(const void *payload, uint64_t len) {
        if (len != cur_.length || cur_.type == rec_pages || cur_.type == rec_object_data ||
            cur_.type == rec_tree_data)
            return corrupt("bad record length");
        const char *p = (const char *)payload;
        switch (cur_.type) {
        case rec_header:
            return header(p, len);
        case rec_tracking:
            return tracking(p, len);
        case rec_page_ref:
            return page_ref(p);
        case rec_credentials:
            return credentials(p, len);
        case rec_process:
            return process(p, len);
        case rec_object:
            return object(p, len);
        case rec_region:
            return region(p, len);
        case rec_file:
            return file(p, len);
        case rec_file_lock:
            return file_lock(p);
        case rec_tree_member:
            return read_tree_member(p);
        case rec_tree_shared:
            return read_tree_shared(p, len);
        case rec_thread:
            return thread(p);
        case rec_trailer:
            return trailer(p);
        }
        return corrupt("unknown record type");
    }

    // The address a pages record starts with, before its data is read: the data goes to
    // [address, address + length - 8), which must lie in the region record before it, after the
    // pages already stored for that region.
    bool pages(uint64_t addr) {
        uint64_t len = cur_.length - 8;
        if (addr % image_page_size || addr < pages_next_ || addr >= region_end_ ||
            len > region_end_ - addr)
            return corrupt(addr < pages_next_ && addr >= region_start_
                               ? "pages out of order"
                               : "pages outside their region");
        pages_next_ = addr + len;
        memory_bytes_ += len;
        return true;
    }

    // The offset an object_data (or tree_data) record starts with, before its data is written:
    // the data goes to [offset, offset + length - 8) of the object (or tree shared memory) record
    // before it, after the data already stored.
    bool object_data(uint64_t offset) {
        uint64_t len = cur_.length - 8;
        if (offset < object_next_ || offset > object_size_ || len > object_size_ - offset)
            return corrupt("object data outside its object");
        object_next_ = offset + len;
        return true;
    }

    bool complete() const { return stage_ == stage::done; }
    const char *why() const { return why_.str(); }
    const record_header &current() const { return cur_; }
    const header_record &header() const { return header_; }
    const credentials_record &creds() const { return creds_; }
    uint64_t records() const { return records_; }
    uint64_t memory_bytes() const { return memory_bytes_; }
    // Incremental images: the tracking record's scan id (0: none), its sources, and the bytes
    // the page references take from them.
    uint64_t scan_id() const { return scan_id_; }
    uint32_t source_count() const { return sources_; }
    uint64_t referenced_bytes() const { return referenced_bytes_; }
    // Process trees: the descendants the image lists, and how many have a stream of their own.
    uint32_t tree_member_count() const { return tree_members_; }
    uint32_t tree_live_count() const { return tree_live_; }

  private:
    enum class stage { header, credentials, process, objects, memory, files, locks, threads, done };

    bool pages_only() const { return (header_.flags & header_pages_only) != 0; }
    bool fail(const char *m) { return why_.clear().add(m), false; }
    bool corrupt(const char *m) {
        return why_.clear().add("the image is corrupt (").add(m).add(")"), false;
    }

    // The stream's grammar: moves to the stage a record type opens.
    bool in_order(uint16_t type) {
        switch (type) {
        case rec_header:
            return advance(stage::header, stage::credentials, stage::header);
        case rec_credentials:
            return advance(stage::credentials, stage::process, stage::credentials);
        case rec_process:
            return advance(stage::process, stage::objects, stage::process);
        case rec_object:
            return advance(stage::objects, stage::objects, stage::objects);
        case rec_object_data:
            return stage_ == stage::objects && objects_made_ > 0;
        case rec_region: // (a pre-copy: right after its tracking record)
            if (pages_only() && stage_ == stage::credentials && index_ > 2) stage_ = stage::objects;
            return advance(stage::objects, stage::memory, stage::memory);
        case rec_pages:
            return stage_ == stage::memory && region_stores_pages_;
        case rec_tracking: // once, right after the header
            return stage_ == stage::credentials && index_ == 2;
        case rec_page_ref:
            return stage_ == stage::memory && region_stores_pages_ && sources_ > 0;
        case rec_file:
            return advance(stage::objects, stage::files, stage::files);
        case rec_file_lock: // on descriptors of the file records before them
            return advance(stage::files, stage::locks, stage::locks);
        case rec_tree_member: // members before shared descriptions
            return stage_ == stage::objects && !tree_closed_ && !tree_shared_;
        case rec_tree_shared:
            return stage_ == stage::objects && !tree_closed_;
        case rec_tree_data: // after its shared memory record
            return stage_ == stage::objects && !tree_closed_ && tree_memory_;
        case rec_thread:
            return advance(stage::objects, stage::threads, stage::threads);
        case rec_trailer:
            if (pages_only()) return scan_id_ && (stage_ == stage::memory || index_ == 3);
            return stage_ >= stage::objects && stage_ <= stage::threads;
        }
        return false;
    }
    // The record may come in stages [from, upto]; it moves the stream to `to`.
    bool advance(stage from, stage to, stage upto) {
        if (stage_ < from || stage_ > upto) return false;
        if (stage_ != to) region_stores_pages_ = false;
        stage_ = to;
        return true;
    }

    bool length_ok(const record_header &h) const {
        uint64_t fixed = 0;
        switch (h.type) {
        case rec_header:
            fixed = sizeof(header_record);
            break;
        case rec_credentials:
            fixed = sizeof(credentials_record);
            break;
        case rec_process:
            fixed = sizeof(process_record);
            break;
        case rec_region:
            fixed = sizeof(region_record);
            break;
        case rec_object:
            fixed = sizeof(object_record);
            break;
        case rec_object_data:
            return h.length > 8 && h.length <= 8 + max_pages_record;
        case rec_file:
            fixed = sizeof(file_record);
            break;
        case rec_thread:
            return h.length == sizeof(thread_record);
        case rec_file_lock:
            return h.length == sizeof(file_lock_record);
        case rec_tree_member:
            return h.length == sizeof(tree_member_record);
        case rec_tree_shared:
            fixed = sizeof(tree_shared_record);
            break;
        case rec_tree_data:
            return h.length > 8 && h.length <= 8 + max_pages_record;
        case rec_tracking:
            fixed = sizeof(tracking_record);
            break;
        case rec_page_ref:
            return h.length == sizeof(page_ref_record);
        case rec_trailer:
            return h.length == sizeof(trailer_record);
        case rec_pages:
            return h.length >= 8 + image_page_size && h.length <= 8 + max_pages_record &&
                   (h.length - 8) % image_page_size == 0;
        }
        return h.length >= fixed && h.length <= max_metadata_record;
    }

    template <class T> static T load(const char *p) {
        T v;
        __builtin_memcpy(&v, p, sizeof v);
        return v;
    }

    bool header(const char *p, uint64_t len) {
        header_ = load<header_record>(p);
        if (!check_header_fields(header_, why_)) return false;
        if (header_.exe_path_len >= max_path || header_.exe_path_len > len - sizeof header_)
            return corrupt("bad header record");
        return true;
    }

    bool credentials(const char *p, uint64_t len) {
        creds_ = load<credentials_record>(p);
        const credentials_record &c = creds_;
        if (c.group_count > max_groups || (uint64_t)c.group_count * 4 != len - sizeof c)
            return corrupt("bad credentials record");
        // -1 means "unchanged" to setresuid/setresgid: never a value to restore.
        for (int i = 0; i < 4; i++)
            if (c.uid[i] == ~0u || c.gid[i] == ~0u) return corrupt("bad credentials record");
        for (uint32_t i = 0; i < c.group_count; i++)
            if (load<uint32_t>(p + sizeof c + 4 * i) == ~0u)
                return corrupt("bad credentials record");
        if ((c.cap_effective & ~c.cap_permitted) ||
            (c.cap_ambient & ~(c.cap_permitted & c.cap_inheritable)) || c.no_new_privs > 1)
            return corrupt("bad credentials record");
        return true;
    }

    bool process(const char *p, uint64_t len) {
        process_record r = load<process_record>(p);
        if (r.cwd_len >= max_path || r.cwd_len > len - sizeof r || r.auxv_words > max_auxv_words)
            return corrupt("bad process record");
        const special_mapping *specials[] = {&r.vvar, &r.vvar_vclock, &r.vdso};
        for (const special_mapping *s : specials)
            if (s->start > s->end || (s->start | s->end) % image_page_size)
                return corrupt("bad process record");
        if (!r.agent_state || r.agent_state % 8) return corrupt("bad process record");
        agent_state_ = r.agent_state;
        return true;
    }

    bool tracking(const char *p, uint64_t len) {
        tracking_record t = load<tracking_record>(p);
        if (!t.scan_id || t.source_count > max_sources ||
            len != sizeof t + (uint64_t)t.source_count * sizeof(image_source))
            return corrupt("bad tracking record");
        for (uint32_t i = 0; i < t.source_count; i++) {
            image_source src = load<image_source>(p + sizeof t + i * sizeof(image_source));
            size_t n = 0;
            while (n < max_source_name && src.name[n])
                n++;
            // A name relative to the image's directory; the command that opens it checks more.
            if (n == 0 || n == max_source_name || src.name[0] == '/' || !src.scan_id)
                return corrupt("bad tracking record");
        }
        scan_id_ = t.scan_id;
        sources_ = t.source_count;
        return true;
    }

    // A reference takes part of one source record: [addr, addr + len) must lie inside that
    // record's pages and inside the current region, after the pages stored or referenced so far.
    bool page_ref(const char *p) {
        page_ref_record r = load<page_ref_record>(p);
        uint64_t aligned = r.addr | r.len | r.record_addr | r.record_len;
        if (r.source >= sources_ || !r.len || !r.record_len || aligned % image_page_size ||
            r.record_len > max_ref_record || r.addr < r.record_addr ||
            r.addr - r.record_addr >= r.record_len ||
            r.len > r.record_len - (r.addr - r.record_addr))
            return corrupt("bad page reference");
        if (r.addr < pages_next_ || r.addr >= region_end_ || r.len > region_end_ - r.addr)
            return corrupt(r.addr < pages_next_ && r.addr >= region_start_
                               ? "pages out of order"
                               : "pages outside their region");
        pages_next_ = r.addr + r.len;
        referenced_bytes_ += r.len;
        return true;
    }

    // Objects come with ids 1, 2, 3 ... in order: an id names one if it is at most the last one.
    bool object(const char *p, uint64_t len) {
        object_record o = load<object_record>(p);
        if (o.id != objects_made_ + 1 || o.kind < object_memfd || o.kind > object_deleted_file ||
            o.size > max_object_size || (o.seals & ~object_seals_known) || (o.mode & ~07777u) ||
            o.name_len >= max_path || o.name_len > len - sizeof o ||
            (o.kind == object_deleted_file && (!o.name_len || p[sizeof o] != '/')))
            return corrupt("bad object record");
        if (objects_made_ == max_image_objects) return corrupt("too many memory objects");
        objects_made_++;
        object_next_ = 0, object_size_ = o.size;
        return true;
    }
    bool object_exists(uint64_t id) const { return id >= 1 && id <= objects_made_; }

    bool region(const char *p, uint64_t len) {
        region_record r = load<region_record>(p);
        bool file_kind = r.kind == region_file_private || r.kind == region_file_shared;
        bool object_kind = r.kind == region_object_shared || r.kind == region_object_private;
        // (A descendant's stream names the root's records: its restorer checks the index.)
        bool tree_kind = r.kind == region_tree_shared;
        if (r.start >= r.end || (r.start | r.end) % image_page_size ||
            r.kind < region_anon_private || r.kind > region_tree_shared || (r.prot & ~7u) ||
            r.path_len >= max_path || r.path_len > len - sizeof r || (file_kind && !r.path_len) ||
            (!tree_kind && object_kind != object_exists(r.object_id)) ||
            (tree_kind && r.object_id >= max_tree_shared) || (r.file_offset % image_page_size))
            return corrupt("bad region record");
        if (r.start < region_end_) return corrupt("regions overlap or are out of order");
        region_start_ = pages_next_ = r.start;
        region_end_ = r.end;
        region_stores_pages_ = r.kind != region_file_shared && r.kind != region_object_shared &&
                               r.kind != region_tree_shared;
        // The restorer writes the agent state's first fields and its hand-off fields.
        using ghost::agent::state;
        uint64_t hand_off = agent_state_ + __builtin_offsetof(state, restorer_start);
        agent_found_ |= writable_holds(r, agent_state_, __builtin_offsetof(state, actions)) << 0;
        agent_found_ |= writable_holds(r, hand_off, 2 * sizeof(uint64_t)) << 1;
        return true;
    }

    static uint8_t writable_holds(const region_record &r, uint64_t addr, uint64_t len) {
        return (r.prot & 2) && addr >= r.start && addr < r.end && r.end - addr >= len;
    }

    bool read_tree_member(const char *p) {
        tree_member_record m = load<tree_member_record>(p);
        if (m.pid <= 0 || m.ppid <= 0 || m.pgid <= 0 || m.sid <= 0 || m.pid == m.ppid ||
            (m.state != tree_live && m.state != tree_zombie) || tree_members_ == max_tree_members)
            return corrupt("bad tree member record");
        tree_members_++;
        tree_live_ += m.state == tree_live;
        return true;
    }
    bool read_tree_shared(const char *p, uint64_t len) {
        tree_shared_record t = load<tree_shared_record>(p);
        bool path_kind = t.kind == file_regular || t.kind == file_directory ||
                         t.kind == file_device || t.kind == file_path;
        bool pipe_kind =
            t.kind == file_pipe_read || t.kind == file_pipe_write || t.kind == file_pipe_reopen;
        bool memory = t.kind == tree_shared_memory;
        bool socket_kind = t.kind == file_socket_pair;
        if (socket_kind) {
            file_record f{};
            f.kind = file_socket_pair, f.data_len = t.data_len;
            if (t.path_len || t.data_len != len - sizeof t || !anon_state(f, p + sizeof t))
                return corrupt("bad tree shared file record");
        }
        if (t.index != tree_shared_ || tree_shared_ == max_tree_shared || !tree_members_ ||
            (!path_kind && !pipe_kind && !memory && !socket_kind) || t.path_len >= max_path ||
            (memory &&
             (t.path_len || t.data_len || t.offset <= 0 || (uint64_t)t.offset > max_object_size)) ||
            (uint64_t)t.path_len + t.data_len != len - sizeof t || (path_kind && !t.path_len) ||
            (path_kind && t.data_len) || (pipe_kind && t.path_len))
            return corrupt("bad tree shared file record");
        tree_shared_++;
        tree_memory_ = memory;
        object_next_ = 0, object_size_ = memory ? (uint64_t)t.offset : 0;
        return true;
    }

    bool file(const char *p, uint64_t len) {
        file_record f = load<file_record>(p);
        // One order: pty masters (their slaves are opened from them), then the other
        // descriptions, then descriptors that share one (file_dup), each part by fd.
        int part = f.kind == file_pty_master ? 0 : f.kind == file_dup ? 2 : 1;
        if (part < last_file_part_ || (part == last_file_part_ && f.fd <= last_fd_))
            return corrupt("file records out of order");
        if (f.fd < 0 || f.fd >= max_image_fd || fd_seen(f.fd) || f.kind < file_regular ||
            f.kind > file_socket_endpoint || f.path_len >= max_path ||
            (uint64_t)f.path_len + f.data_len > len - sizeof f)
            return corrupt("bad file record");
        if (f.kind == file_dup && (f.dup_of < 0 || f.dup_of >= f.fd || !fd_seen(f.dup_of)))
            return corrupt("bad file record");
        if (f.kind == file_object && !object_exists(f.pipe_id)) return corrupt("bad file record");
        // (A descendant's stream names the root's records: its restorer checks the index.)
        if (f.kind == file_tree_shared &&
            (f.pipe_id >= max_tree_shared || f.path_len || f.data_len))
            return corrupt("bad file record");
        if (f.kind == file_regular && f.data_len != 0 && f.data_len != sizeof(proc_maps_position))
            return corrupt("bad file record");
        // A pty's master record creates it; its slave records come after it. (Any record of a
        // pipe creates the pipe.)
        if (f.kind == file_pty_master) {
            if (object_seen(f.pipe_id)) return corrupt("bad file record");
            if (objects_ == max_image_objects) return corrupt("too many ptys");
            object_ids_[objects_++] = f.pipe_id;
        }
        if (f.kind == file_pty_slave && !object_seen(f.pipe_id)) return corrupt("bad file record");
        if (f.kind >= file_eventfd && !anon_state(f, p + sizeof f + f.path_len))
            return corrupt("bad file record");
        fds_[f.fd / 8] |= (uint8_t)(1u << (f.fd % 8));
        last_file_part_ = part, last_fd_ = f.fd;
        return true;
    }
    // The state an anonymous-inode descriptor is made with (its record's data; no path).
    bool anon_state(const file_record &f, const char *data) {
        if (f.path_len) return false;
        if (f.kind == file_eventfd) {
            if (f.data_len != sizeof(eventfd_state)) return false;
            eventfd_state e = load<eventfd_state>(data);
            return e.count != ~0ULL && e.semaphore <= 1 && !e.pad;
        }
        if (f.kind == file_timerfd) {
            if (f.data_len != sizeof(timerfd_state)) return false;
            timerfd_state t = load<timerfd_state>(data);
            auto valid = [](const int64_t(&ts)[2]) {
                return ts[0] >= 0 && ts[1] >= 0 && ts[1] < 1000000000;
            };
            bool clock = t.clock == 0 || t.clock == 1 || (t.clock >= 7 && t.clock <= 9);
            return clock && t.settime_flags <= 3 && valid(t.value) && valid(t.interval);
        }
        if (f.kind == file_signalfd) return f.data_len == sizeof(uint64_t);
        if (f.kind == file_socket_pair) {
            if (f.data_len < sizeof(socket_state)) return false;
            socket_state st = load<socket_state>(data);
            uint32_t queued = f.data_len - (uint32_t)sizeof st;
            return (st.type == 1 || st.type == 2 || st.type == 5) && st.end <= 1 &&
                   st.passcred <= 1 && !st.pad && queued <= max_socket_queue &&
                   (st.type == 1 || !queued);
        }
        if (f.kind == file_socket_endpoint) {
            if (f.data_len != sizeof(socket_endpoint)) return false;
            socket_endpoint e = load<socket_endpoint>(data);
            bool family = e.family == 1 || e.family == 2 || e.family == 10;
            bool listening = e.backlog > 0 && (e.type == 1 || e.type == 5);
            bool udp = !e.backlog && e.type == 2 && e.family != 1;
            bool idle = !e.backlog && !e.peer_len && (e.type == 1 || e.type == 2 || e.type == 5);
            uint32_t most = e.family == 1 ? 110 : 128; // sizeof(struct sockaddr_un)
            return family && (listening || udp || idle) && e.local_len >= 2 &&
                   e.local_len <= most && e.peer_len <= 128 && (!e.peer_len || udp) &&
                   e.reuseaddr <= 1 && e.reuseport <= 1 && e.v6only <= 1;
        }
        if (f.kind == file_inotify) {
            int32_t last = 0;
            for (uint32_t at = 0; at < f.data_len;) {
                if (f.data_len - at < sizeof(inotify_watch) ||
                    inotify_watches_ == max_inotify_watches)
                    return false;
                inotify_watch w = load<inotify_watch>(data + at);
                at += (uint32_t)sizeof w;
                if (w.wd <= last || w.wd > max_inotify_wd || w.pad || !w.path_len ||
                    w.path_len > max_path || w.path_len > f.data_len - at || data[at] != '/' ||
                    data[at + w.path_len - 1] != 0)
                    return false;
                at += w.path_len;
                last = w.wd;
                inotify_watches_++;
            }
            return true;
        }
        // file_epoll
        uint32_t count = f.data_len / (uint32_t)sizeof(epoll_watch);
        if (f.data_len % sizeof(epoll_watch) || count > max_epoll_watches - epoll_watches_)
            return false;
        for (uint32_t i = 0; i < count; i++) {
            epoll_watch w = load<epoll_watch>(data + i * sizeof w);
            if (w.fd < 0 || w.fd >= max_image_fd) return false;
        }
        epoll_watches_ += count;
        return true;
    }
    bool file_lock(const char *p) {
        file_lock_record l = load<file_lock_record>(p);
        bool record_lock = l.kind == lock_posix || l.kind == lock_ofd;
        if (l.fd < 0 || l.fd >= max_image_fd || !fd_seen(l.fd) || l.kind < lock_posix ||
            l.kind > lock_ofd || l.write > 1 || l.pad || locks_ == max_file_locks ||
            (record_lock && (l.start < 0 || (l.end != -1 && l.end < l.start))) ||
            (!record_lock && (l.start || l.end != -1)))
            return corrupt("bad file lock record");
        locks_++;
        return true;
    }
    bool fd_seen(int fd) const { return (fds_[fd / 8] >> (fd % 8)) & 1; }
    bool object_seen(uint64_t id) const {
        for (uint32_t i = 0; i < objects_; i++)
            if (object_ids_[i] == id) return true;
        return false;
    }

    bool thread(const char *p) {
        thread_record t = load<thread_record>(p);
        if (t.tid <= 0 || t.tid <= last_tid_ || (t.flags & ~(thread_main | thread_manager)) ||
            threads_ == max_image_threads || ((t.flags & thread_main) && main_seen_))
            return corrupt("bad thread record");
        main_seen_ |= (t.flags & thread_main) != 0;
        last_tid_ = t.tid;
        threads_++;
        return true;
    }

    bool trailer(const char *p) {
        trailer_record t = load<trailer_record>(p);
        if (t.record_count != records_ || t.payload_bytes != payload_bytes_ ||
            t.hash_sum != hash_sum_)
            return corrupt("records missing or added");
        if (pages_only() && sources_) return corrupt("a pre-copy that takes pages from others");
        if (pages_only()) return stage_ = stage::done, true;
        if (!main_seen_) return fail("the image has no main thread");
        if (agent_found_ != 3)
            return corrupt("the ghost agent's state is not in the image's memory");
        stage_ = stage::done;
        return true;
    }

    stage stage_ = stage::header;
    record_header cur_{};
    uint64_t index_ = 0, records_ = 0, payload_bytes_ = 0, hash_sum_ = 0, memory_bytes_ = 0;
    uint64_t scan_id_ = 0, referenced_bytes_ = 0;
    uint32_t locks_ = 0;
    uint32_t epoll_watches_ = 0;
    uint32_t inotify_watches_ = 0;
    uint32_t sources_ = 0;
    uint32_t tree_members_ = 0, tree_live_ = 0, tree_shared_ = 0;
    bool tree_closed_ = false; // a record after the tree's was seen
    bool tree_memory_ = false; // the last tree_shared record is memory: tree_data may follow
    header_record header_{};
    credentials_record creds_{};
    uint64_t agent_state_ = 0;
    uint8_t agent_found_ = 0; // 1: its first fields, 2: its hand-off fields in writable memory
    uint64_t region_start_ = 0, region_end_ = 0, pages_next_ = 0;
    bool region_stores_pages_ = false;
    int last_file_part_ = 0, last_fd_ = -1;
    uint8_t fds_[max_image_fd / 8] = {};
    uint64_t object_ids_[max_image_objects] = {}; // pty pairs created so far
    uint32_t objects_ = 0;
    uint64_t objects_made_ = 0; // memory objects so far (their ids are 1 ... objects_made_)
    uint64_t object_next_ = 0, object_size_ = 0; // the last object: data stored up to, size
    int32_t last_tid_ = 0;
    uint32_t threads_ = 0;
    bool main_seen_ = false;
    message why_;
};

} // namespace ghost::image
