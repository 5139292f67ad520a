// A loop's tracer (asyncio/trace.hpp): Chrome trace-event JSON, buffered and written in chunks.
// Loop thread only (the registry that names the files and flushes at exit takes a mutex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "asyncio/detail/io_op.hpp"
#include "asyncio/detail/trace_hooks.hpp"

namespace asyncio::detail {

/// io_submit / io_try / io_cancel below the tracer (io_op.cpp): seeded chaos, then the backend.
bool io_submit_untraced(EventLoop& loop, IoOp& op, bool coop);
bool io_try_untraced(EventLoop& loop, IoOp& op);
bool io_cancel_untraced(EventLoop& loop, IoOp& op) noexcept;

class Tracer {
public:
    /// Opens (truncates) the file; std::system_error if it cannot. The file is valid JSON from here.
    Tracer(EventLoop& loop, const std::string& requested_path);
    Tracer(const Tracer&) = delete;
    Tracer& operator=(const Tracer&) = delete;
    ~Tracer();

    const std::string& path() const noexcept { return path_; }
    /// Writes what is buffered (the file stays valid JSON after every write).
    void flush() noexcept;

    // ---- tasks ----
    void task_created(PromiseBase* p) noexcept;
    void step(PromiseBase* t);
    void task_done(PromiseBase* p) noexcept;
    void suspend(PromiseBase* t, const char* site) noexcept;
    // ---- the loop's callbacks and timers ----
    std::int64_t callback_begin() noexcept;
    void callback_end(std::int64_t begin) noexcept;
    void timer_scheduled(TimerId id, std::int64_t delay_ns) noexcept;
    void timer_fired(TimerId id) noexcept;
    void timer_cancelled(TimerId id) noexcept;
    // ---- I/O operations ----
    bool io_submit(IoOp& op, bool coop);
    bool io_try(IoOp& op);
    bool io_cancel(IoOp& op) noexcept;
    /// Runs from the ready queue in place of op.complete while op is traced.
    static void io_complete(void* op);

    /// True while the loop's thread is inside this process's exit (flushes from the registry).
    bool owned_by_running_or_idle_loop() const noexcept;

private:
    void timer_event(const char* name, std::uint64_t tid, TimerId id, const std::int64_t* delay_ns) noexcept;
    struct TaskRec {
        std::uint64_t tid = 0;
        std::uint64_t steps = 0;
        std::int64_t suspended_at = -1;  // ns; -1 while not suspended
        std::string site;                // what it awaits while suspended
        std::string at;                  // where: "fn() at file:line" of the co_await, or ""
        const char* coro = nullptr;      // its coroutine's function (__builtin_FUNCTION)
        bool named = false;              // a thread_name with its own name was written
    };
    struct IoRec {
        void (*complete)(void*) = nullptr;  // the op's own completion
        std::uint64_t seq = 0;
        std::uint64_t tid = 0;
    };
    struct StepContext {
        PromiseBase* task = nullptr;
        std::uint64_t tid = 1;  // the track events go to: the step's task, else the loop's
        bool finished = false;
        const char* site = nullptr;
    };

    TaskRec& rec_of(PromiseBase* t);
    void io_begin(IoOp& op, IoRec& rec);
    void io_end(const IoOp& op, const IoRec& rec, const char* how);
    void name_track(std::uint64_t tid, std::string_view name, std::uint64_t sort);
    void name_task(PromiseBase* t, TaskRec& rec);

    // Event writing: open(...) starts {"ph":..,"name":..,"pid":..,"tid":..,"ts":.., then
    // arg(...)s, then close().
    void open(char ph, std::string_view name, std::uint64_t tid, std::int64_t ts_ns, const char* cat = nullptr);
    void field_num(std::string_view key, std::int64_t v);
    void field_ts(std::string_view key, std::int64_t ns);
    void begin_args();
    void arg(std::string_view key, std::string_view value);
    void arg(std::string_view key, std::int64_t value);
    void end_args();
    void close_event();
    void maybe_flush() noexcept;

    EventLoop& loop_;
    std::string path_;
    int fd_ = -1;
    long long pid_ = 0;
    std::uint64_t end_offset_ = 0;  // where the trailer starts in the file
    std::string buf_;               // events not yet written (each preceded by ",\n")
    bool first_arg_ = true;
    std::uint64_t next_tid_ = 2;  // tid 1 is the loop's track
    std::uint64_t next_io_ = 1;
    StepContext ctx_;
    std::unordered_map<const PromiseBase*, TaskRec> tasks_;
    std::unordered_map<const IoOp*, IoRec> ops_;
};

}  // namespace asyncio::detail
