// Call graphs: what a suspended task is doing (its chain of coroutines) and who awaits it.
//
// The chain is read upward. A suspended task's resume_ is the innermost frame it will resume (set
// by suspend_task and ReenterTask; null while a step runs, and after a suspension in an awaiter of
// the user's). Each coroutine-mode frame's resume_ is the frame that awaits it, up to the task's
// own frame. Every frame of the chain is ours unless kForeignChain says a foreign coroutine type
// ran in the task (then only the task's own frame is read). Each frame's line_ is the line of the
// co_await it is suspended at: every awaiter of the library, Coroutine's included, notes it in
// the awaiting frame when the co_await reaches its await_suspend (note_await, detail/promise.hpp),
// so a co_await that does not suspend costs nothing. Every frame of a known chain is suspended in
// one of those awaiters (the innermost in the one that set the task's resume_, each other in a
// Coroutine's), so every line read is current. "Awaited by" comes from the done waiters registered
// on a task or future: each kind of waiter that belongs to an awaiting task says which task.
#include "asyncio/graph.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "asyncio/gather.hpp"
#include "asyncio/shield.hpp"
#include "asyncio/task_group.hpp"
#include "asyncio/detail/type_name.hpp"
#include "asyncio/wait.hpp"
#include "graph_snapshot.hpp"

namespace asyncio::detail {

struct GraphAccess {
    static PromiseBase* group_task(const DoneWaiter* w) noexcept { return TaskGroup::awaiting_task(w); }
};

void mark_foreign_chain() noexcept {
    if (PromiseBase* t = t_task.current_task) t->flags_ |= kForeignChain;
}

namespace {

constexpr int kMaxChain = 100000;  // a bound on a walk, against a corrupted chain

FrameSite site_of(const PromiseBase* p) noexcept {
    const char* function = p->origin_function();
    const char* file = p->origin_file();
    return FrameSite{function != nullptr ? function : "?", file != nullptr ? file : "?", p->line_};
}

// The task's own frame where its chain is not known (it runs, it is suspended in an awaiter of
// the user's, or a foreign coroutine ran in it): at which co_await is not known either (line 0).
// Its line_ is that of its last suspension in an awaiter of the library, which it may have left
// since (a co_await of the user's awaiter notes nothing): shown, it could be stale.
FrameSite unknown_site_of(const PromiseBase* t) noexcept {
    FrameSite s = site_of(t);
    s.line = 0;
    return s;
}

bool ends_with(std::string_view s, std::string_view suffix) noexcept {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The coroutines the library wraps around an awaitable (create_task(f, args...), combinators): not
// the user's, so not shown.
bool is_wrapper(const PromiseBase* p) noexcept {
    const char* file = p->origin_file();
    if (file == nullptr || !ends_with(file, "asyncio/task.hpp")) return false;
    const char* function = p->origin_function();
    return function != nullptr &&
           (std::strcmp(function, "invoke_in_frame") == 0 || std::strcmp(function, "await_in_frame") == 0);
}

// Appends the chain of t, innermost first, from the frame `innermost` (known: the chain can be
// read); else t's own frame only.
void walk_chain(const PromiseBase* t, std::coroutine_handle<> innermost, bool known,
                std::vector<FrameSite>& out) {
    if (!known || !innermost || t->has(kForeignChain)) {
        out.push_back(unknown_site_of(t));
        return;
    }
    const std::size_t first = out.size();
    const PromiseBase* p = promise_of(innermost);
    for (int n = 0; n < kMaxChain; ++n) {
        if (!is_wrapper(p)) out.push_back(site_of(p));
        if (p == t || !p->resume_) break;
        p = promise_of(p->resume_);
    }
    if (out.size() == first) out.push_back(site_of(t));  // only wrappers: show the task's own
}

// The stack of a task or future that is not running now (empty for a future or a done task).
void stack_of(const PromiseBase* p, std::vector<FrameSite>& out) {
    if (p->has(kFuture) || p->has(kDone)) return;
    if (p == t_task.current_task) {
        walk_chain(p, {}, false, out);
        return;
    }
    walk_chain(p, p->resume_, true, out);
}

PromiseBase* awaiting_task(const DoneWaiter* w) noexcept {
    if (PromiseBase* t = TaskWait::awaiting_task(w)) return t;
    if (PromiseBase* t = GatherCore::awaiting_task(w)) return t;
    if (PromiseBase* t = ShieldWait::awaiting_task(w)) return t;
    if (PromiseBase* t = WatcherCore::awaiting_task(w)) return t;
    return GraphAccess::group_task(w);
}

// The tasks awaiting p directly, oldest first (waiters are pushed at the head), each once.
std::vector<PromiseBase*> awaiters_of(const PromiseBase* p) {
    std::vector<PromiseBase*> out;
    for (const DoneWaiter* w = p->waiters_; w != nullptr; w = w->next) {
        PromiseBase* t = awaiting_task(w);
        if (t != nullptr && std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
    }
    std::reverse(out.begin(), out.end());
    return out;
}

void apply_limit(std::vector<FrameSite>& st, std::optional<int> limit) {
    if (!limit) return;
    const int n = *limit;
    if (n == 0) {
        st.clear();
    } else if (n > 0) {
        if (st.size() > static_cast<std::size_t>(n)) st.resize(static_cast<std::size_t>(n));
    } else if (st.size() > static_cast<std::size_t>(-n)) {
        st.erase(st.begin(), st.end() - (-n));
    }
}

std::vector<FrameCallGraphEntry> entries(const std::vector<FrameSite>& st) {
    std::vector<FrameCallGraphEntry> out;
    out.reserve(st.size());
    for (const FrameSite& s : st) out.push_back(FrameCallGraphEntry{s.function, s.file, s.line});
    return out;
}

Future<> handle_of(PromiseBase* p) noexcept {
    ++p->refs_;
    return Future<>(p);
}

// Builds p's node; path holds the nodes above it (an awaiting cycle stops there).
FutureCallGraph build(PromiseBase* p, std::vector<FrameSite> stack, std::optional<int> limit,
                      std::vector<const PromiseBase*>& path) {
    FutureCallGraph g;
    g.future = handle_of(p);
    g.is_task = !p->has(kFuture);
    apply_limit(stack, limit);
    g.call_stack = entries(stack);
    if (std::find(path.begin(), path.end(), p) != path.end()) return g;
    path.push_back(p);
    for (PromiseBase* parent : awaiters_of(p)) {
        std::vector<FrameSite> st;
        stack_of(parent, st);
        g.awaited_by.push_back(build(parent, std::move(st), limit, path));
    }
    path.pop_back();
    return g;
}

void format_level(const FutureCallGraph& g, std::string& out, int level) {
    const std::string indent(static_cast<std::size_t>(level) * 4, ' ');
    char id[32];
    std::snprintf(id, sizeof id, "%#" PRIxPTR, reinterpret_cast<std::uintptr_t>(g.future.base()));
    if (!out.empty()) out += '\n';
    if (g.is_task)
        out += indent + "* Task(name='" + task_name(g.future.base()) + "', id=" + id + ")";
    else
        out += indent + "* Future(id=" + std::string(id) + ")";
    if (!g.call_stack.empty()) {
        out += '\n' + indent + "  + Call stack:";
        for (const FrameCallGraphEntry& e : g.call_stack)
            out += '\n' + indent + "  |   File '" + e.file + "', line " + std::to_string(e.line) +
                   ", in async " + e.function + "()";
    }
    if (!g.awaited_by.empty()) {
        out += '\n' + indent + "  + Awaited by:";
        for (const FutureCallGraph& a : g.awaited_by) format_level(a, out, level + 1);
    }
}

}  // namespace

FutureCallGraph capture_graph(PromiseBase* future, std::optional<int> limit) {
    if (future == nullptr) throw InvalidStateError("capture_call_graph() of an empty Task or Future");
    check_loop_thread(future, "capture_call_graph()");
    std::vector<FrameSite> st;
    stack_of(future, st);
    std::vector<const PromiseBase*> path;
    return build(future, std::move(st), limit, path);
}

std::optional<FutureCallGraph> capture_current_graph(std::coroutine_handle<> innermost, bool ours,
                                                     std::optional<int> limit) {
    PromiseBase* const t = t_task.current_task;
    if (t == nullptr) return std::nullopt;
    std::vector<FrameSite> st;
    walk_chain(t, innermost, ours, st);
    std::vector<const PromiseBase*> path;
    return build(t, std::move(st), limit, path);
}

void print_text(const std::string& text, std::FILE* file) {
    std::FILE* f = file != nullptr ? file : stdout;
    std::fwrite(text.data(), 1, text.size(), f);
    std::fflush(f);
}

std::vector<FrameCallGraphEntry> task_stack(PromiseBase* p, std::optional<int> limit) {
    check_loop_thread(p, "get_stack()");
    std::vector<FrameSite> st;
    stack_of(p, st);
    apply_limit(st, limit);  // the innermost ones, as Python keeps the newest frames
    std::reverse(st.begin(), st.end());  // oldest first, as Python's get_stack()
    return entries(st);
}

namespace {
// Line n (from 1) of file, stripped, or "" (Python's linecache.getline, for print_stack).
std::string source_line(const char* file, unsigned n) {
    std::FILE* f = std::fopen(file, "re");
    if (f == nullptr) return {};
    std::string line;
    unsigned at = 1;
    for (int c; (c = std::fgetc(f)) != EOF;) {
        if (c == '\n') {
            if (at++ == n) break;
            continue;
        }
        if (at == n) line += static_cast<char>(c);
    }
    std::fclose(f);
    const std::size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) return {};
    return line.substr(b, line.find_last_not_of(" \t\r") - b + 1);
}
}  // namespace

void print_task_stack(PromiseBase* p, std::optional<int> limit, std::FILE* file) {
    const std::vector<FrameCallGraphEntry> st = task_stack(p, limit);
    std::string out;
    const bool failed = p->has(kDone) && !p->has(kCancelled) && p->has(kHasException);
    if (!st.empty())
        out = "Stack for " + task_repr(p) + " (most recent call last):\n";
    else if (failed)
        out = "Traceback for " + task_repr(p) + " (most recent call last):\n";
    else
        out = "No stack for " + task_repr(p) + "\n";
    for (const FrameCallGraphEntry& e : st) {
        out += std::string("  File \"") + e.file + "\", line " + std::to_string(e.line) + ", in " +
               e.function + "\n";
        const std::string text = source_line(e.file, e.line);
        if (!text.empty()) out += "    " + text + "\n";
    }
    if (failed) {
        // No traceback is kept in C++: the exception itself, as the last line of Python's.
        try {
            std::rethrow_exception(p->exception_);
        } catch (const std::exception& e) {
            out += type_name(typeid(e)) + ": " + e.what() + "\n";
        } catch (...) {
            out += "unknown exception\n";
        }
    }
    print_text(out, file);
}

FrameSite innermost_site(const PromiseBase* t) noexcept {
    // stack_of's first entry, without building the stack: the tracer asks at every suspension.
    if (t->has(kFuture) || t->has(kDone)) return FrameSite{};
    if (t == t_task.current_task || !t->resume_ || t->has(kForeignChain)) return unknown_site_of(t);
    const PromiseBase* p = promise_of(t->resume_);
    for (int n = 0; n < kMaxChain; ++n) {
        if (!is_wrapper(p)) return site_of(p);
        if (p == t || !p->resume_) break;
        p = promise_of(p->resume_);
    }
    return site_of(t);
}

LoopSnapshot snapshot_tasks(EventLoop& loop) {
    LoopSnapshot out;
    std::size_t n = 0;
    for (const PromiseBase* p = loop.task_list(); p != nullptr; p = p->next_) ++n;
    out.tasks.reserve(n);
    out.frames.reserve(2 * n);
    out.awaiters.reserve(n);
    for (PromiseBase* p = loop.task_list(); p != nullptr; p = p->next_) {
        if (p->has(kDone) || p->has(kAbandoned)) continue;
        // Who awaits it directly, oldest first (waiters are pushed at the head), each once.
        const std::size_t first_awaiter = out.awaiters.size();
        for (const DoneWaiter* w = p->waiters_; w != nullptr; w = w->next) {
            PromiseBase* t = awaiting_task(w);
            if (t == nullptr) continue;
            const auto id = reinterpret_cast<std::uintptr_t>(t);
            if (std::find(out.awaiters.begin() + static_cast<std::ptrdiff_t>(first_awaiter), out.awaiters.end(), id) ==
                out.awaiters.end())
                out.awaiters.push_back(id);
        }
        std::reverse(out.awaiters.begin() + static_cast<std::ptrdiff_t>(first_awaiter), out.awaiters.end());
        if (p->has(kFuture) && out.awaiters.size() == first_awaiter) continue;  // a future nobody awaits
        TaskSnapshot& s = out.tasks.emplace_back();
        s.id = reinterpret_cast<std::uintptr_t>(p);
        s.is_task = !p->has(kFuture);
        s.first_awaiter = static_cast<std::uint32_t>(first_awaiter);
        s.awaiter_count = static_cast<std::uint32_t>(out.awaiters.size() - first_awaiter);
        s.first_frame = static_cast<std::uint32_t>(out.frames.size());
        if (s.is_task) {
            s.name = task_name(p);
            stack_of(p, out.frames);
        }
        s.frame_count = static_cast<std::uint32_t>(out.frames.size() - s.first_frame);
    }
    return out;
}

}  // namespace asyncio::detail

namespace asyncio {

std::string format_call_graph(const FutureCallGraph& graph) {
    std::string out;
    detail::format_level(graph, out, 0);
    return out;
}

}  // namespace asyncio
