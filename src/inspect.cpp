// asyncio-inspect's server: with ASYNCIO_INSPECT=1 in the environment when the process makes its
// first event loop, one thread (started then, never joined: it dies with the process) answers the
// tool on the abstract Unix socket "\0asyncio-inspect-<pid>" with every task of every live loop.
// Each loop builds its own snapshot on its own thread (a call_soon_threadsafe callback: the only
// time the loop is held); the snapshot is formatted here, off the loop.
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "asyncio/event_loop.hpp"
#include "graph_snapshot.hpp"
#include "inspect_protocol.hpp"
#include "loop_hooks.hpp"
#include "signals_internal.hpp"

namespace asyncio::detail {
namespace {

using namespace std::chrono_literals;

/// How long a request waits for the loops' snapshots (all loops at once): a loop blocked in a
/// callback, or not running, is reported as silent rather than hanging the tool.
constexpr auto kLoopAnswerTimeout = 500ms;
/// A client that does not send its request, or does not read the answer, within this is dropped.
constexpr auto kClientTimeout = 2s;

struct LoopEntry {
    const EventLoop* key;
    std::shared_ptr<LoopLink> link;  // posts through it: its loop pointer is nulled by close()
    pid_t tid;                       // the thread that made the loop, then the one that last answered
};

struct Registry {
    std::mutex mutex;
    std::vector<LoopEntry> loops;
};

/// Never destroyed: the server thread may still use it while static destructors run at exit.
Registry& registry() {
    static Registry* r = new Registry;
    return *r;
}

/// One request to one loop. Shared by the server and the callback, which may outlive the request
/// (a loop that answers late) or be destroyed unrun (a loop closed with it queued).
struct LoopRequest {
    std::mutex mutex;
    std::condition_variable answered;
    bool done = false;
    bool abandoned = false;  // the server gave up: a late callback skips the snapshot
    bool failed = false;     // no memory for the snapshot
    pid_t tid = 0;
    std::int64_t stall_ns = 0;
    LoopSnapshot snapshot;
};

void answer(const std::shared_ptr<LoopRequest>& req) noexcept {
    {
        std::lock_guard lock(req->mutex);
        if (req->abandoned) return;
    }
    const auto begin = std::chrono::steady_clock::now();
    LoopSnapshot snapshot;
    bool failed = false;
    try {
        snapshot = snapshot_tasks(get_running_loop());
    } catch (...) {
        failed = true;
    }
    const auto stall = std::chrono::steady_clock::now() - begin;
    std::lock_guard lock(req->mutex);
    req->snapshot = std::move(snapshot);
    req->failed = failed;
    req->tid = ::gettid();
    req->stall_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(stall).count();
    req->done = true;
    req->answered.notify_one();
}

void append_hex(std::string& out, std::uintptr_t id) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(id));
    out += buf;
}

void append_loop(std::string& out, pid_t tid, LoopRequest& req) {
    out += "loop\t" + std::to_string(tid);
    if (!req.done || req.failed) {
        out += "\tsilent\t" + std::to_string(std::chrono::milliseconds(kLoopAnswerTimeout).count()) + '\n';
        return;
    }
    out += "\tok\t" + std::to_string(req.stall_ns) + '\n';
    const LoopSnapshot& snap = req.snapshot;
    for (const TaskSnapshot& t : snap.tasks) {
        out += "task\t";
        append_hex(out, t.id);
        out += t.is_task ? "\ttask\t" : "\tfuture\t";
        inspect_escape(out, t.name);
        out += '\n';
        for (std::uint32_t i = t.first_frame; i < t.first_frame + t.frame_count; ++i) {
            const FrameSite& f = snap.frames[i];
            out += "frame\t";
            inspect_escape(out, f.function != nullptr ? f.function : "");
            out += '\t';
            inspect_escape(out, f.file != nullptr ? f.file : "");
            out += '\t' + std::to_string(f.line) + '\n';
        }
        for (std::uint32_t i = t.first_awaiter; i < t.first_awaiter + t.awaiter_count; ++i) {
            out += "awaited_by\t";
            append_hex(out, snap.awaiters[i]);
            out += '\n';
        }
    }
}

/// Asks every live loop for its snapshot (all at once), waits for them up to kLoopAnswerTimeout
/// together, and formats the body.
std::string collect() {
    std::vector<LoopEntry> loops;
    {
        std::lock_guard lock(registry().mutex);
        loops = registry().loops;
    }
    std::vector<std::shared_ptr<LoopRequest>> reqs(loops.size());
    for (std::size_t i = 0; i < loops.size(); ++i) {
        auto req = std::make_shared<LoopRequest>();
        std::lock_guard lock(loops[i].link->mutex);
        if (loops[i].link->loop == nullptr) continue;  // closed: it has no tasks left
        try {
            loops[i].link->loop->call_soon_threadsafe([req] { answer(req); });
            reqs[i] = std::move(req);
        } catch (...) {
            // Closed meanwhile (or no memory): not listed.
        }
    }
    const auto deadline = std::chrono::steady_clock::now() + kLoopAnswerTimeout;
    std::string out = "pid\t" + std::to_string(::getpid()) + '\n';
    for (std::size_t i = 0; i < loops.size(); ++i) {
        if (!reqs[i]) continue;
        LoopRequest& req = *reqs[i];
        std::unique_lock lock(req.mutex);
        req.answered.wait_until(lock, deadline, [&req] { return req.done; });
        if (!req.done) req.abandoned = true;
        pid_t tid = loops[i].tid;
        if (req.done) {
            tid = req.tid;
            std::lock_guard reg_lock(registry().mutex);
            for (LoopEntry& e : registry().loops)
                if (e.link == loops[i].link) e.tid = tid;
        }
        append_loop(out, tid, req);
        // The snapshot's strings are freed here, off the loop's thread.
        req.snapshot = LoopSnapshot{};
    }
    out += "end\n";
    return out;
}

bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

std::string header(std::string_view status) {
    return std::string(kInspectMagic) + ' ' + std::to_string(kInspectVersion) + ' ' + std::string(status) + '\n';
}

void serve(int fd) {
    const timeval tv{std::chrono::seconds(kClientTimeout).count(), 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string request;
    char buf[128];
    while (request.find('\n') == std::string::npos && request.size() < 256) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        request.append(buf, static_cast<std::size_t>(n));
    }
    // Read first: a reply closed over an unread request would reach the client as ECONNRESET.
    // Only the process's own user (or root) may see its tasks.
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != ::geteuid() && cred.uid != 0)) {
        send_all(fd, header("ERR permission denied"));
        return;
    }
    const std::string expected = std::string(kInspectMagic) + ' ';
    if (request.compare(0, expected.size(), expected) != 0) {
        send_all(fd, header("ERR not an asyncio-inspect request"));
        return;
    }
    const int version = std::atoi(request.c_str() + expected.size());
    if (version != kInspectVersion) {
        send_all(fd, header("ERR the tool speaks protocol version " + std::to_string(version)));
        return;
    }
    std::string reply;
    try {
        reply = header("OK") + collect();
    } catch (...) {
        send_all(fd, header("ERR out of memory"));
        return;
    }
    send_all(fd, reply);
}

[[noreturn]] void serve_forever(int listener) {
    ::pthread_setname_np(::pthread_self(), "asyncio-inspect");  // as top and gdb show it (15 chars)
    for (;;) {
        const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
            // EMFILE and the like: the program is short of something; try again later.
            if (errno != EINTR && errno != ECONNABORTED) std::this_thread::sleep_for(100ms);
            continue;
        }
        serve(fd);
        ::close(fd);
    }
}

void start_server() noexcept {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        std::fprintf(stderr, "asyncio: ASYNCIO_INSPECT: socket: %s\n", std::strerror(errno));
        return;
    }
    sockaddr_un addr{};
    const socklen_t addr_len = inspect_address(::getpid(), addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0 || ::listen(fd, 8) != 0) {
        std::fprintf(stderr, "asyncio: ASYNCIO_INSPECT: cannot listen on @%s: %s\n", addr.sun_path + 1,
                     std::strerror(errno));
        ::close(fd);
        return;
    }
    try {
        // Started with the asynchronous signals blocked, so that it never takes a signal meant for
        // the program's loops. Detached: it must not keep the process alive, and it only touches
        // state that is never destroyed (the registry, the listener, shared requests).
        AsyncSignalsBlocked blocked;
        std::thread(serve_forever, fd).detach();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "asyncio: ASYNCIO_INSPECT: cannot start its thread: %s\n", e.what());
        ::close(fd);
    }
}

bool inspect_enabled() noexcept {
    // Read once, at the process's first loop.
    static const bool enabled = [] {
        const char* env = std::getenv("ASYNCIO_INSPECT");
        return env != nullptr && *env != '\0' && std::strcmp(env, "0") != 0;
    }();
    return enabled;
}

}  // namespace

void inspect_loop_created(EventLoop& loop) noexcept {
    if (!inspect_enabled()) [[likely]]
        return;
    static const bool started = (start_server(), true);
    (void)started;
    try {
        std::lock_guard lock(registry().mutex);
        registry().loops.push_back({&loop, loop.link(), ::gettid()});
    } catch (...) {
        // No memory: this loop is not listed.
    }
}

void inspect_loop_destroyed(EventLoop& loop) noexcept {
    if (!inspect_enabled()) [[likely]]
        return;
    std::lock_guard lock(registry().mutex);
    auto& loops = registry().loops;
    loops.erase(std::remove_if(loops.begin(), loops.end(), [&loop](const LoopEntry& e) { return e.key == &loop; }),
                loops.end());
}

}  // namespace asyncio::detail
