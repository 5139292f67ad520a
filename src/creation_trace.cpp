// Debug mode's "Coroutine created at" (Python's coroutine origin tracking, which asyncio's debug
// mode switches on): the stack of the code that made a coroutine, recorded in its promise's
// constructor while a loop in debug mode runs on this thread, dropped with the frame, and printed
// by the reports that name a coroutine or task ("never awaited", "destroyed but it is pending").
//
// The records live in a side table, not in the frame, so that no frame grows outside debug mode.
// Frames of one loop stay on its thread, but loops of several threads may be in debug mode at
// once: the table takes a mutex (debug mode only).
#include <cxxabi.h>
#include <dlfcn.h>
#include <execinfo.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

#include "asyncio/detail/creation_site.hpp"
#include "asyncio/detail/promise.hpp"
#include "asyncio/event_loop.hpp"

namespace asyncio::detail {

std::atomic<int> g_debug_loops{0};

namespace {

std::atomic<std::size_t> g_creation_records{0};  // records in the table (creation_trace's fast out)

constexpr int kDepth = 10;  // frames kept (after the library's own): asyncio's DEBUG_STACK_DEPTH
constexpr int kSkip = 3;    // record_creation, set_origin, the promise's constructor

struct Record {
    std::array<void*, kDepth> frames{};
    int count = 0;
};

struct Table {
    std::mutex mutex;
    std::unordered_map<const PromiseBase*, Record> records;
};

Table& table() {
    static Table* t = new Table;  // never destroyed: frames may be freed during static destruction
    return *t;
}

std::string describe(void* address) {
    Dl_info info{};
    char line[64];
    if (dladdr(address, &info) == 0 || info.dli_fname == nullptr) {
        std::snprintf(line, sizeof line, "%p", address);
        return line;
    }
    std::string out = info.dli_fname;
    // The offset into the file: `addr2line -f -C -e FILE OFFSET` gives the function and line
    // (symbols of an executable are not in its dynamic table unless it is linked -rdynamic).
    std::snprintf(line, sizeof line, "(+0x%zx)",
                  static_cast<std::size_t>(static_cast<char*>(address) - static_cast<char*>(info.dli_fbase)));
    out += line;
    if (info.dli_sname != nullptr) {
        int status = 0;
        char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
        out += ' ';
        out += status == 0 && demangled != nullptr ? demangled : info.dli_sname;
        std::free(demangled);
    }
    return out;
}

}  // namespace

struct SiteRecord {
    Record stack;
};

SiteRecord* record_site(bool always) noexcept {
    if (!always && (t_running_loop == nullptr || !t_running_loop->get_debug())) return nullptr;
    void* raw[kDepth + 2];
    const int n = ::backtrace(raw, kDepth + 2);  // less record_site and the CreationSite constructor
    auto* r = new (std::nothrow) SiteRecord;
    if (r == nullptr) return nullptr;
    for (int i = 2; i < n; ++i) r->stack.frames[static_cast<std::size_t>(r->stack.count++)] = raw[i];
    return r;
}

void free_site(SiteRecord* r) noexcept { delete r; }

std::string site_trace(const SiteRecord* r) {
    if (r == nullptr) return {};
    std::string out = "\nObject created at (most recent call last):";
    for (int i = r->stack.count - 1; i >= 0; --i) {
        out += "\n  ";
        out += describe(r->stack.frames[static_cast<std::size_t>(i)]);
    }
    return out;
}

void record_creation(PromiseBase* p) noexcept {
    // Only for the loop in debug mode that runs on this thread (another thread's debug loop only
    // opened the gate).
    if (t_running_loop == nullptr || !t_running_loop->get_debug()) return;
    void* raw[kDepth + kSkip];
    const int n = ::backtrace(raw, kDepth + kSkip);
    Record r;
    for (int i = kSkip; i < n; ++i) r.frames[static_cast<std::size_t>(r.count++)] = raw[i];
    try {
        Table& t = table();
        std::lock_guard lock(t.mutex);
        if (t.records.insert_or_assign(p, r).second) g_creation_records.fetch_add(1, std::memory_order_relaxed);
        p->flags_ |= kCreationRecorded;
    } catch (...) {
        // Out of memory: this coroutine goes without its record.
    }
}

void forget_creation(const PromiseBase* p) noexcept {
    Table& t = table();
    std::lock_guard lock(t.mutex);
    if (t.records.erase(p) != 0) g_creation_records.fetch_sub(1, std::memory_order_relaxed);
}

std::string creation_trace(const PromiseBase* p) {
    if (g_creation_records.load(std::memory_order_relaxed) == 0) return {};
    Record r;
    {
        Table& t = table();
        std::lock_guard lock(t.mutex);
        auto it = t.records.find(p);
        if (it == t.records.end()) return {};
        r = it->second;
    }
    // As Python prints a traceback: the outermost call first.
    std::string out = "\nCoroutine created at (most recent call last):";
    for (int i = r.count - 1; i >= 0; --i) {
        out += "\n  ";
        out += describe(r.frames[static_cast<std::size_t>(i)]);
    }
    return out;
}

}  // namespace asyncio::detail
