// Debug mode's "Object created at": where a resource (a Socket, a StreamWriter, a Server, a
// Process, a loop) was made, kept so that one destroyed without close() can be reported with it,
// as Python's ResourceWarning "unclosed ..." with its allocation traceback.
//
// Outside debug mode a CreationSite is one null pointer: made with one relaxed load of a global,
// destroyed with one test. In debug mode it owns a record of the caller's stack
// (src/creation_trace.cpp), which moves with the object.
#pragma once

#include <atomic>
#include <exception>
#include <string>
#include <utility>

namespace asyncio::detail {

extern std::atomic<int> g_debug_loops;  // loops in debug mode, on any thread

struct SiteRecord;
/// The caller's stack, if the loop running on this thread is in debug mode (or `always`).
[[gnu::cold]] SiteRecord* record_site(bool always) noexcept;
void free_site(SiteRecord* r) noexcept;
/// "\nObject created at (most recent call last):\n  ..." ("" for none).
std::string site_trace(const SiteRecord* r);
/// Debug mode's "unclosed <what>" (with where it was made) through the exception handler of the
/// loop running on this thread, or of this thread's loop, else to stderr. (event_loop.cpp)
[[gnu::cold]] void report_unclosed(const std::string& what, const SiteRecord* site) noexcept;

class CreationSite {
public:
    CreationSite() noexcept {
        if (g_debug_loops.load(std::memory_order_relaxed) != 0) [[unlikely]]
            rec_ = record_site(false);
    }
    explicit CreationSite(bool always) noexcept {
        if (always) rec_ = record_site(true);
    }
    CreationSite(CreationSite&& o) noexcept : rec_(std::exchange(o.rec_, nullptr)) {}
    CreationSite& operator=(CreationSite&& o) noexcept {
        std::swap(rec_, o.rec_);
        return *this;
    }
    CreationSite(const CreationSite&) = delete;
    CreationSite& operator=(const CreationSite&) = delete;
    ~CreationSite() {
        if (rec_ != nullptr) [[unlikely]]
            free_site(rec_);
    }

    /// Made in debug mode: a destruction without close() is to be reported.
    bool recorded() const noexcept { return rec_ != nullptr; }
    /// Reports "unclosed <what>" with the site, once (the record is dropped). Not while an
    /// exception unwinds the stack: that is how error paths (the library's own, a failed bind in
    /// start_server) release what they made, as Python's close it in their `except` clauses.
    void report_unclosed(const std::string& what) noexcept {
        if (std::uncaught_exceptions() == 0) detail::report_unclosed(what, rec_);
        free_site(std::exchange(rec_, nullptr));
    }

private:
    SiteRecord* rec_ = nullptr;
};

}  // namespace asyncio::detail
