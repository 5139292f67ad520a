// Traces (asyncio/trace.hpp): a loop's tasks, callbacks, timers and I/O operations as Chrome
// trace-event JSON. Events are formatted into a buffer and written in chunks; every write puts
// the closing "]}" back at the end, so the file is valid JSON after each one (an abort loses only
// what was still buffered).
#include "trace.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <typeinfo>
#include <vector>

#include "asyncio/detail/promise.hpp"
#include "asyncio/detail/task_core.hpp"
#include "asyncio/detail/type_name.hpp"
#include "asyncio/event_loop.hpp"
#include "backend/backend.hpp"
#include "backend/op_type.hpp"
#include "graph_snapshot.hpp"

namespace asyncio::detail {


namespace {

constexpr std::size_t kChunk = 256 * 1024;  // bytes buffered before a write
constexpr std::string_view kHeader = "{\"traceEvents\":[\n";
constexpr std::string_view kTrailer = "\n],\"displayTimeUnit\":\"ms\"}\n";

// One time base for every loop of the process, so that their files line up.
std::int64_t now_ns() noexcept {
    static const auto epoch = std::chrono::steady_clock::now();
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - epoch)
        .count();
}

// The live tracers (flushed at exit) and how many loops traced to each path (FILE, FILE.2, ...).
struct Registry {
    std::mutex mutex;
    std::vector<Tracer*> live;
    std::vector<std::pair<std::string, int>> uses;
    bool at_exit_registered = false;
};
Registry& registry() {
    static Registry* r = new Registry;  // never destroyed: used from atexit
    return *r;
}

void flush_all_at_exit() noexcept {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    for (Tracer* t : r.live)
        if (t->owned_by_running_or_idle_loop()) t->flush();
}

bool write_at(int fd, std::string_view data, std::uint64_t offset) noexcept {
    while (!data.empty()) {
        const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
        offset += static_cast<std::uint64_t>(n);
    }
    return true;
}

const char* io_kind_name(IoKind k) noexcept { return op_type(k).name; }

std::int64_t timer_number(TimerId id) noexcept {
    return static_cast<std::int64_t>((std::uint64_t(id.slot) << 32 | id.gen) & 0x7fffffffffffffff);
}

void append_escaped(std::string& out, std::string_view s) {
    for (const char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    static constexpr char hex[] = "0123456789abcdef";
                    out += "\\u00";
                    out += hex[(c >> 4) & 0xf];
                    out += hex[c & 0xf];
                } else {
                    out += c;
                }
        }
    }
}

void append_int(std::string& out, std::int64_t v) {
    char b[24];
    const auto r = std::to_chars(b, b + sizeof b, v);
    out.append(b, r.ptr);
}

}  // namespace

// ---- the file ----

Tracer::Tracer(EventLoop& loop, const std::string& requested_path) : loop_(loop) {
    Registry& r = registry();
    int use = 1;
    {
        std::lock_guard lock(r.mutex);
        bool found = false;
        for (auto& [p, n] : r.uses)
            if (p == requested_path) {
                use = ++n;
                found = true;
            }
        if (!found) r.uses.emplace_back(requested_path, 1);
    }
    path_ = use == 1 ? requested_path : requested_path + "." + std::to_string(use);
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "trace file " + path_);
    pid_ = static_cast<long long>(::getpid());
    if (!write_at(fd_, kHeader, 0)) {
        const int e = errno;
        ::close(fd_);
        throw std::system_error(e, std::generic_category(), "trace file " + path_);
    }
    end_offset_ = kHeader.size();
    // The process is the loop; its first track holds the loop's own callbacks and timers.
    open('M', "process_name", 0, 0);
    begin_args();
    arg("name", "asyncio loop " + std::to_string(use) + " (" + loop.backend_name() + ")");
    end_args();
    close_event();
    name_track(1, "event loop", 0);
    flush();
    {
        std::lock_guard lock(r.mutex);
        r.live.push_back(this);
        if (!r.at_exit_registered) {
            r.at_exit_registered = true;
            std::atexit(&flush_all_at_exit);
        }
    }
}

Tracer::~Tracer() {
    {
        Registry& r = registry();
        std::lock_guard lock(r.mutex);
        std::erase(r.live, this);
    }
    if (t_task.tracer == this) t_task.tracer = nullptr;
    flush();
    ::close(fd_);
    // Operations still traced belong to a closed loop: give them their own completions back.
    for (auto& [op, rec] : ops_) const_cast<IoOp*>(op)->complete = rec.complete;
}

bool Tracer::owned_by_running_or_idle_loop() const noexcept {
    return !loop_.is_running() || t_task.tracer == this;
}

void Tracer::flush() noexcept {
    if (buf_.empty() || fd_ < 0) return;
    try {
        buf_ += kTrailer;
        if (write_at(fd_, buf_, end_offset_)) {
            end_offset_ += buf_.size() - kTrailer.size();
        } else {
            // Disk full or the like: drop this chunk, and put the file back as it was (a partial
            // write would leave bytes after the trailer).
            if (::ftruncate(fd_, static_cast<off_t>(end_offset_)) == 0) write_at(fd_, kTrailer, end_offset_);
        }
    } catch (...) {
        // No memory for the trailer: these events are lost, the file stays as it was.
    }
    buf_.clear();
}

void Tracer::maybe_flush() noexcept {
    if (buf_.size() >= kChunk) flush();
}

// ---- event formatting ----

void Tracer::open(char ph, std::string_view name, std::uint64_t tid, std::int64_t ts_ns, const char* cat) {
    if (end_offset_ > kHeader.size() || !buf_.empty()) buf_ += ",\n";
    buf_ += "{\"ph\":\"";
    buf_ += ph;
    buf_ += "\",\"name\":\"";
    append_escaped(buf_, name);
    buf_ += '"';
    if (cat != nullptr) {
        buf_ += ",\"cat\":\"";
        buf_ += cat;
        buf_ += '"';
    }
    field_num("pid", pid_);
    field_num("tid", static_cast<std::int64_t>(tid));
    field_ts("ts", ts_ns);
}

void Tracer::field_num(std::string_view key, std::int64_t v) {
    buf_ += ",\"";
    buf_ += key;
    buf_ += "\":";
    append_int(buf_, v);
}

void Tracer::field_ts(std::string_view key, std::int64_t ns) {
    // Microseconds with three decimals (the format's unit).
    buf_ += ",\"";
    buf_ += key;
    buf_ += "\":";
    append_int(buf_, ns / 1000);
    const auto frac = static_cast<int>(ns % 1000);
    buf_ += '.';
    buf_ += static_cast<char>('0' + frac / 100);
    buf_ += static_cast<char>('0' + frac / 10 % 10);
    buf_ += static_cast<char>('0' + frac % 10);
}

void Tracer::begin_args() {
    buf_ += ",\"args\":{";
    first_arg_ = true;
}

void Tracer::arg(std::string_view key, std::string_view value) {
    buf_ += first_arg_ ? "\"" : ",\"";
    first_arg_ = false;
    buf_ += key;
    buf_ += "\":\"";
    append_escaped(buf_, value);
    buf_ += '"';
}

void Tracer::arg(std::string_view key, std::int64_t value) {
    buf_ += first_arg_ ? "\"" : ",\"";
    first_arg_ = false;
    buf_ += key;
    buf_ += "\":";
    append_int(buf_, value);
}

void Tracer::end_args() {
    buf_ += '}';
}

void Tracer::close_event() { buf_ += '}'; }

void Tracer::name_track(std::uint64_t tid, std::string_view name, std::uint64_t sort) {
    open('M', "thread_name", tid, 0);
    begin_args();
    arg("name", name);
    end_args();
    close_event();
    open('M', "thread_sort_index", tid, 0);
    begin_args();
    arg("sort_index", static_cast<std::int64_t>(sort));
    end_args();
    close_event();
}

// ---- tasks ----

Tracer::TaskRec& Tracer::rec_of(PromiseBase* t) {
    TaskRec& rec = tasks_[t];
    if (rec.tid == 0) {  // a task made before tracing began
        rec.tid = next_tid_++;
        name_track(rec.tid, "task #" + std::to_string(rec.tid), rec.tid);
    }
    return rec;
}

void Tracer::name_task(PromiseBase* t, TaskRec& rec) {
    if (rec.named) return;
    std::string name = task_name_if_set(t);
    if (name.empty()) return;
    rec.named = true;
    if (rec.coro != nullptr) {
        name += " (";
        name += rec.coro;
        name += ')';
    }
    name_track(rec.tid, name, rec.tid);
}

void Tracer::task_created(PromiseBase* p) noexcept {
    try {
        const std::int64_t ts = now_ns();
        TaskRec& rec = tasks_[p];
        rec = TaskRec{};
        rec.tid = next_tid_++;
        rec.coro = p->origin_function();
        std::string name = rec.coro != nullptr ? rec.coro : "task";
        name += " #" + std::to_string(rec.tid);
        name_track(rec.tid, name, rec.tid);
        open('i', "create", rec.tid, ts, "task");
        buf_ += ",\"s\":\"t\"";
        begin_args();
        arg("task", static_cast<std::int64_t>(rec.tid));
        if (rec.coro != nullptr) arg("coro", rec.coro);
        arg("parent", static_cast<std::int64_t>(ctx_.tid));
        end_args();
        close_event();
        // An arrow from where it was made to its first step.
        open('s', "spawn", ctx_.tid, ts, "task");
        field_num("id", static_cast<std::int64_t>(rec.tid));
        close_event();
        maybe_flush();
    } catch (...) {
        // No memory: the event is lost, the program goes on.
    }
}

void Tracer::step(PromiseBase* t) {
    std::uint64_t tid = 0;
    std::int64_t begin = 0;
    try {
        TaskRec& rec = rec_of(t);
        tid = rec.tid;
        begin = now_ns();
        if (rec.steps == 0) {
            name_task(t, rec);
            open('f', "spawn", tid, begin, "task");
            field_num("id", static_cast<std::int64_t>(tid));
            buf_ += ",\"bp\":\"e\"";
            close_event();
        } else if (rec.suspended_at >= 0) {
            // What it waited for, as a slice between its two steps.
            open('X', "await " + (rec.site.empty() ? std::string("?") : rec.site), tid, rec.suspended_at, "await");
            field_ts("dur", begin - rec.suspended_at);
            if (!rec.at.empty()) {
                begin_args();
                arg("at", rec.at.c_str());
                end_args();
            }
            close_event();
        }
        rec.suspended_at = -1;
        ++rec.steps;
    } catch (...) {
        // No memory: the step runs untraced.
    }
    const StepContext outer = ctx_;
    ctx_ = StepContext{t, tid != 0 ? tid : 1, false, nullptr};
    PromiseBase* const prev = t_task.current_task;
    t_task.current_task = t;
    std::exchange(t->resume_, nullptr).resume();  // as step_task; the task may be freed once this returns
    t_task.current_task = prev;
    const StepContext inner = ctx_;
    ctx_ = outer;
    if (tid == 0) return;
    try {
        const std::int64_t end = now_ns();
        open('X', "step", tid, begin, "task");
        field_ts("dur", end - begin);
        close_event();
        if (!inner.finished) {
            TaskRec& rec = rec_of(t);
            rec.suspended_at = end;
            rec.site = inner.site != nullptr ? inner.site : "";
            // The co_await it suspended at (its innermost frame's line_, noted by the awaiter).
            const FrameSite at = innermost_site(t);
            rec.at.clear();
            if (at.line != 0) {
                rec.at.append(at.function).append("() at ").append(at.file).append(":");
                rec.at.append(std::to_string(at.line));
            }
            open('i', "suspend", tid, end, "task");
            buf_ += ",\"s\":\"t\"";
            begin_args();
            arg("await", inner.site != nullptr ? inner.site : "?");
            if (!rec.at.empty()) arg("at", rec.at.c_str());
            if (rec.coro != nullptr) arg("coro", rec.coro);
            end_args();
            close_event();
        }
        maybe_flush();
    } catch (...) {
    }
}

void Tracer::suspend(PromiseBase* t, const char* site) noexcept {
    if (ctx_.task == t) ctx_.site = site;
}

void Tracer::task_done(PromiseBase* p) noexcept {
    try {
        const std::int64_t ts = now_ns();
        TaskRec& rec = rec_of(p);
        name_task(p, rec);
        std::string outcome = "result";
        std::string what;
        if (p->has(kHasException)) {
            try {
                std::rethrow_exception(p->exception_);
            } catch (const CancelledError& e) {
                outcome = "cancelled";
                what = e.what();
            } catch (const std::exception& e) {
                outcome = "exception";
                what = type_name(typeid(e)) + ": " + e.what();
            } catch (const BaseException& e) {
                outcome = "exception";
                what = type_name(typeid(e)) + ": " + e.what();
            } catch (...) {
                outcome = "exception";
                what = "(not a std::exception)";
            }
        }
        open('i', "done", rec.tid, ts, "task");
        buf_ += ",\"s\":\"t\"";
        begin_args();
        arg("outcome", outcome);
        if (!what.empty()) arg("exception", what);
        arg("steps", static_cast<std::int64_t>(rec.steps));
        end_args();
        close_event();
        tasks_.erase(p);
        maybe_flush();
    } catch (...) {
    }
    if (ctx_.task == p) ctx_.finished = true;
}

// ---- callbacks and timers ----

std::int64_t Tracer::callback_begin() noexcept { return now_ns(); }

void Tracer::callback_end(std::int64_t begin) noexcept {
    try {
        const std::int64_t end = now_ns();
        open('X', "callback", 1, begin, "loop");
        field_ts("dur", end - begin);
        close_event();
        maybe_flush();
    } catch (...) {
    }
}

/// One timer instant: scheduled (with its delay, on the scheduling task's track), fired (on the
/// loop's track) or cancelled (those two without a delay).
void Tracer::timer_event(const char* name, std::uint64_t tid, TimerId id, const std::int64_t* delay_ns) noexcept {
    try {
        open('i', name, tid, now_ns(), "timer");
        buf_ += ",\"s\":\"t\"";
        begin_args();
        arg("timer", timer_number(id));
        if (delay_ns != nullptr) arg("delay_us", *delay_ns / 1000);
        end_args();
        close_event();
        maybe_flush();
    } catch (...) {
    }
}

void Tracer::timer_scheduled(TimerId id, std::int64_t delay_ns) noexcept {
    timer_event("timer scheduled", ctx_.tid, id, &delay_ns);
}

void Tracer::timer_fired(TimerId id) noexcept { timer_event("timer fired", 1, id, nullptr); }

void Tracer::timer_cancelled(TimerId id) noexcept { timer_event("timer cancelled", ctx_.tid, id, nullptr); }

// ---- I/O operations ----
// A traced operation's completion goes through io_complete, which records it and then calls the
// op's own; the backends see only op.complete, read when they queue the completion.

void Tracer::io_begin(IoOp& op, IoRec& rec) {
    rec.seq = next_io_++;
    rec.tid = ctx_.tid;
    const std::int64_t ts = now_ns();
    const char* kind = io_kind_name(op.kind);
    open('i', std::string(kind) + " submit", rec.tid, ts, "io");
    buf_ += ",\"s\":\"t\"";
    begin_args();
    arg("fd", op.fd);
    arg("len", static_cast<std::int64_t>(op.len));
    arg("op", static_cast<std::int64_t>(rec.seq));
    end_args();
    close_event();
    open('b', std::string(kind) + " fd " + std::to_string(op.fd), rec.tid, ts, "io");
    field_num("id", static_cast<std::int64_t>(rec.seq));
    close_event();
}

void Tracer::io_end(const IoOp& op, const IoRec& rec, const char* how) {
    const std::int64_t ts = now_ns();
    const char* kind = io_kind_name(op.kind);
    open('i', std::string(kind) + " " + how, rec.tid, ts, "io");
    buf_ += ",\"s\":\"t\"";
    begin_args();
    arg("fd", op.fd);
    arg("op", static_cast<std::int64_t>(rec.seq));
    if (op.result >= 0) {
        arg(op_type(op).result_name, op.result);
    } else {
        arg("errno", -op.result);
    }
    end_args();
    close_event();
    open('e', std::string(kind) + " fd " + std::to_string(op.fd), rec.tid, ts, "io");
    field_num("id", static_cast<std::int64_t>(rec.seq));
    close_event();
    maybe_flush();
}

bool Tracer::io_submit(IoOp& op, bool coop) {
    IoRec rec;
    rec.complete = op.complete;
    bool traced = true;
    try {
        io_begin(op, rec);
        ops_[&op] = rec;
    } catch (...) {
        traced = false;
    }
    if (traced) op.complete = &Tracer::io_complete;
    struct Undo {  // completed at once, or the submission threw: the op keeps its own completion
        Tracer* tr;
        IoOp& op;
        const IoRec& rec;
        bool active = true;
        ~Undo() {
            if (!active) return;
            op.complete = rec.complete;
            tr->ops_.erase(&op);
        }
    } undo{this, op, rec, traced};
    // Pending, or put off by the budget (or by chaos): the completion goes through io_complete.
    if (!io_submit_untraced(loop_, op, coop)) {
        undo.active = false;
        return false;
    }
    try {
        if (traced) io_end(op, rec, "done");
    } catch (...) {
    }
    return true;
}

bool Tracer::io_try(IoOp& op) {
    if (!io_try_untraced(loop_, op)) return false;
    try {
        IoRec rec;
        io_begin(op, rec);
        io_end(op, rec, "done");
    } catch (...) {
    }
    return true;
}

bool Tracer::io_cancel(IoOp& op) noexcept {
    const bool withdrawn = io_cancel_untraced(loop_, op);  // (chaos gives back its completion first)
    if (withdrawn) {
        const auto it = ops_.find(&op);
        if (it != ops_.end()) {
            op.complete = it->second.complete;
            try {
                io_end(op, it->second, "cancelled");
            } catch (...) {
            }
            ops_.erase(it);
        }
    }
    return withdrawn;
}

void Tracer::io_complete(void* p) {
    auto* op = static_cast<IoOp*>(p);
    Tracer* tr = t_task.tracer;
    const auto it = tr != nullptr ? tr->ops_.find(op) : decltype(tr->ops_.find(op)){};
    if (tr == nullptr || it == tr->ops_.end()) {
        // Queued before the trace that installed this was replaced; that tracer gave the op its
        // own completion back.
        op->complete(op);
        return;
    }
    const IoRec rec = it->second;
    tr->ops_.erase(it);
    op->complete = rec.complete;
    try {
        tr->io_end(*op, rec, "done");
    } catch (...) {
    }
    rec.complete(op);
}

// ---- the hooks ----

void trace_step(PromiseBase* t) { t_task.tracer->step(t); }

void trace_ready_entry(void (*fn)(void*), void* ctx) {
    if (fn == &step_task || fn == &start_task) [[likely]] {
        auto* t = static_cast<PromiseBase*>(ctx);
        if (fn == &start_task && t->has(kMustCancel)) {
            cancel_unstarted(t);  // as start_task: it never runs
            return;
        }
        step_task_now(t);
        return;
    }
    fn(ctx);
}

void trace_task_created(EventLoop& loop, PromiseBase* p) noexcept { loop.tracer()->task_created(p); }

void trace_task_done(PromiseBase* p) noexcept {
    if (p->loop_ != nullptr && p->loop_->tracer() != nullptr) p->loop_->tracer()->task_done(p);
}

void trace_suspend(PromiseBase* t, const char* site) noexcept {
    if (Tracer* tr = t_task.tracer) tr->suspend(t, site);
}

void trace_timer_scheduled(EventLoop& loop, TimerId id, TimePoint when) noexcept {
    loop.tracer()->timer_scheduled(id, (when - loop.time()).count());
}

void trace_timer_fired(EventLoop& loop, TimerId id) noexcept { loop.tracer()->timer_fired(id); }

void trace_timer_cancelled(EventLoop& loop, TimerId id) noexcept { loop.tracer()->timer_cancelled(id); }

}  // namespace asyncio::detail
