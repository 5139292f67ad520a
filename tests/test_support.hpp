// Shared helpers for the core runtime's test suites.
//
//   Counted            a value type that counts its live instances (and catches double destruction)
//   LeakChecked        a fixture that checks, at teardown, that every coroutine frame, every
//                      Counted and every file descriptor created by the test is gone again
//   virtual_time()     a MockClock (autojump) to run loops on virtual time
//   Reports            collects what a loop's exception handler receives
//   Eager              a minimal coroutine type that is NOT an asyncio task, to await library
//                      awaitables outside a task
//   chain_of / cancel_outermost  a chain of tasks each awaiting the next through some primitive
//   chain_link         a chain made outermost first (each task creates the next)
//   run_on_small_stack runs a function on a thread with a small stack (constant-stack proofs)
//   destroy_loop_then_task  parks a task, destroys its loop, and only then drops the task's last
//                      handle (frames that outlive their loop must not touch it)
//   run_virtual        asyncio::run on virtual time
//   yields(n)          lets the loop run n iterations
//   sets(flag)         a coroutine that sets a flag
//   elapsed()          loop time since a virtual_time() loop started
//   thread_count()     threads of this process (thread_count_settled: once a joined one is gone)
//   TempDir            a temporary directory (for Unix sockets), removed with its files
#pragma once

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>
#include <gtest/gtest.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "asyncio/clock.hpp"
#include "asyncio/debug.hpp"
#include "asyncio/event.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"

/// ASSERT_* for the body of a Coroutine<void> (gtest's ASSERT_* uses `return`): records a
/// failure and leaves the coroutine.
#define CO_ASSERT(cond)                                      \
    do {                                                     \
        if (!(cond)) {                                       \
            ADD_FAILURE() << "Assertion failed: " #cond;     \
            co_return;                                       \
        }                                                    \
    } while (false)

namespace asyncio_test {

/// Counts live instances; every copy and move makes a new live instance.
class Counted {
public:
    explicit Counted(int value = 0) noexcept : value_(value) { ++live_; }
    Counted(const Counted& o) noexcept : value_(o.value_) { ++live_; }
    Counted(Counted&& o) noexcept : value_(o.value_) { ++live_; }
    Counted& operator=(const Counted&) = default;
    Counted& operator=(Counted&&) = default;
    ~Counted() {
        if (magic_ != kAlive) ++double_destroyed_;
        magic_ = kDead;
        --live_;
    }

    int value() const noexcept { return value_; }

    /// Instances constructed and not yet destroyed.
    static int live() noexcept { return live_; }
    /// Destructor calls on an object that was already destroyed.
    static int double_destroyed() noexcept { return double_destroyed_; }

private:
    static constexpr std::uint32_t kAlive = 0xC0FFEE11u;
    static constexpr std::uint32_t kDead = 0xDEADDEADu;
    static inline int live_ = 0;
    static inline int double_destroyed_ = 0;
    int value_;
    std::uint32_t magic_ = kAlive;
};

/// Number of open file descriptors of this process (entries of /proc/self/fd, minus the one
/// opendir uses to read it).
inline int open_fd_count() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr) return -1;
    int n = 0;
    while (const dirent* e = ::readdir(dir)) {
        if (e->d_name[0] != '.') ++n;
    }
    ::closedir(dir);
    return n - 1;
}

/// Fixture: at teardown, coroutine frames are back to what they were at setup, no Counted is
/// alive, none was destroyed twice, and no file descriptor was left open.
class LeakChecked : public ::testing::Test {
protected:
    void SetUp() override {
        frames_ = asyncio::debug::live_frames();
        counted_ = Counted::live();
        double_ = Counted::double_destroyed();
        fds_ = open_fd_count();
    }
    void TearDown() override {
        EXPECT_EQ(asyncio::debug::live_frames(), frames_) << "coroutine frames leaked";
        EXPECT_EQ(Counted::live(), counted_) << "Counted instances leaked";
        EXPECT_EQ(Counted::double_destroyed(), double_) << "a Counted was destroyed twice";
        EXPECT_EQ(open_fd_count(), fds_) << "file descriptors leaked";
    }

private:
    std::int64_t frames_ = 0;
    int counted_ = 0;
    int double_ = 0;
    int fds_ = 0;
};

/// A virtual clock that jumps to the next timer when the loop has nothing else to do.
inline std::unique_ptr<asyncio::MockClock> virtual_time() {
    return std::make_unique<asyncio::MockClock>();
}

/// asyncio::run(main) on virtual time.
template <class T>
T run_virtual(asyncio::Coroutine<T> main) {
    return asyncio::run(std::move(main), virtual_time());
}

/// Lets the loop run `n` iterations.
inline asyncio::Coroutine<> yields(int n) {
    for (int i = 0; i < n; ++i) co_await asyncio::sleep(asyncio::Duration::zero());
}

inline asyncio::Coroutine<> sets(bool& flag) {
    flag = true;
    co_return;
}

/// Loop time elapsed since the loop started (a MockClock starts at 1h).
inline asyncio::Duration elapsed() {
    return asyncio::get_running_loop().time() - asyncio::TimePoint(std::chrono::hours(1));
}

/// Threads of this process (entries of /proc/self/task).
inline int thread_count() {
    DIR* dir = ::opendir("/proc/self/task");
    if (dir == nullptr) return -1;
    int n = 0;
    while (const dirent* e = ::readdir(dir))
        if (e->d_name[0] != '.') ++n;
    ::closedir(dir);
    return n;
}

/// thread_count(), once it is down to `n` (or `timeout` passed): a thread just joined can still be
/// listed for a moment (the kernel wakes pthread_join when the thread clears its tid, before the
/// thread leaves /proc/self/task), longer on a loaded machine; a detached thread takes as long as
/// it runs. A thread still running stays counted.
inline int thread_count_settled(int n, std::chrono::seconds timeout = std::chrono::seconds(5)) {
    const auto give_up = std::chrono::steady_clock::now() + timeout;
    int now = thread_count();
    while (now > n && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        now = thread_count();
    }
    return now;
}

/// A temporary directory for Unix sockets, removed (with the files named through it) at the end.
class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/asyncio_test.XXXXXX";
        const char* p = ::mkdtemp(tmpl);
        if (p == nullptr) throw std::system_error(errno, std::generic_category(), "mkdtemp");
        path_ = p;
    }
    ~TempDir() {
        for (const auto& f : files_) ::unlink(f.c_str());
        ::rmdir(path_.c_str());
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const std::string& name) {
        files_.push_back(path_ + "/" + name);
        return files_.back();
    }

private:
    std::string path_;
    std::vector<std::string> files_;
};

/// Collects every call of a loop's exception handler.
class Reports {
public:
    void install(asyncio::EventLoop& loop) {
        loop.set_exception_handler(
            [this](asyncio::EventLoop&, const asyncio::ExceptionContext& c) { entries_.push_back(c); });
    }
    const std::vector<asyncio::ExceptionContext>& entries() const noexcept { return entries_; }
    std::size_t size() const noexcept { return entries_.size(); }
    std::size_t count(std::string_view message) const {
        return static_cast<std::size_t>(std::count_if(entries_.begin(), entries_.end(),
                                                      [&](const auto& c) { return c.message == message; }));
    }
    /// The what() of the i-th report's exception ("" if none, or neither a std::exception nor an
    /// asyncio::BaseException).
    std::string what(std::size_t i) const {
        if (i >= entries_.size() || !entries_[i].exception) return {};
        try {
            std::rethrow_exception(entries_[i].exception);
        } catch (const std::exception& e) {
            return e.what();
        } catch (const asyncio::BaseException& e) {
            return e.what();
        } catch (...) {
            return {};
        }
    }

private:
    std::vector<asyncio::ExceptionContext> entries_;
};

/// A coroutine that runs eagerly on the caller's stack, outside any asyncio task; whatever it
/// throws is kept in `error`.
struct Eager {
    struct promise_type {
        std::exception_ptr* error;
        template <class... Args>
        explicit promise_type(std::exception_ptr& e, Args&&...) noexcept : error(&e) {}
        Eager get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { *error = std::current_exception(); }
    };
};

/// Rethrows a stored exception_ptr (for EXPECT_THROW on values from gather(return_exceptions)).
inline void rethrow(const std::exception_ptr& e) {
    if (e) std::rethrow_exception(e);
}

/// Sleeps a day (virtual time): a body that parks.
inline asyncio::Coroutine<> sleep_a_day() { co_await asyncio::sleep(std::chrono::hours(24)); }

/// Starts a task with start(loop), runs the loop (virtual time) for `iterations` iterations so that
/// the task parks where it waits, destroys the loop (heap-allocated, so that ASan sees any later
/// access to it), and only then drops the task's last handle: the frame is destroyed while its
/// loop is gone, and nothing its destruction does may touch that loop. Returns false (and records
/// a failure) if the task finished instead of parking.
inline bool destroy_loop_then_task(const std::function<asyncio::Task<>(asyncio::EventLoop&)>& start,
                                   int iterations = 5) {
    auto loop = std::make_unique<asyncio::EventLoop>(virtual_time());
    asyncio::Task<> task = start(*loop);
    loop->run_until_complete([](int n) -> asyncio::Coroutine<> {
        for (int i = 0; i < n; ++i) co_await asyncio::sleep(asyncio::Duration::zero());
    }(iterations));
    if (task.done()) {
        ADD_FAILURE() << "the task finished instead of parking";
        return false;
    }
    loop.reset();
    EXPECT_FALSE(task.done());
    EXPECT_FALSE(task.cancel()) << "a task whose loop is gone cannot be cancelled";
    task = asyncio::Task<>();  // the frame goes now
    return true;
}

/// A chain made outermost first (each task creates the next and awaits it; the oldest is the
/// outermost, the innermost waits on `never`); `built` counts the links.
inline asyncio::Coroutine<> chain_link(int depth, int& built, asyncio::Event& never) {
    ++built;
    if (depth == 1) {
        co_await never.wait();
        co_return;
    }
    co_await asyncio::create_task(chain_link(depth - 1, built, never));
}

/// Runs fn on a new thread with a stack of `bytes` (a default std::thread has 8 MiB); false if the
/// thread could not be made.
template <class F>
bool run_on_small_stack(std::size_t bytes, F fn) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return false;
    pthread_attr_setstacksize(&attr, bytes);
    pthread_t thread;
    auto trampoline = [](void* arg) -> void* {
        (*static_cast<F*>(arg))();
        return nullptr;
    };
    const bool ok = pthread_create(&thread, &attr, trampoline, &fn) == 0;
    pthread_attr_destroy(&attr);
    if (ok) pthread_join(thread, nullptr);
    return ok;
}

/// A chain of `depth` tasks made innermost first (the outermost is the newest), each running
/// link(next); the innermost waits on `never`.
template <class Link>
asyncio::Task<> chain_of(int depth, asyncio::Event& never, Link link) {
    asyncio::Task<> t = asyncio::create_task([](asyncio::Event& e) -> asyncio::Coroutine<> { co_await e.wait(); }(never));
    for (int i = 1; i < depth; ++i) t = asyncio::create_task(link(std::move(t)));
    return t;
}

/// Cancels the outermost task of such a chain once every task waits, and checks it ends cancelled.
template <class Link>
asyncio::Coroutine<> cancel_outermost(int depth, Link link) {
    asyncio::Event never;
    asyncio::Task<> outer = chain_of(depth, never, link);
    co_await asyncio::sleep(asyncio::Duration::zero());
    co_await asyncio::sleep(asyncio::Duration::zero());
    EXPECT_TRUE(outer.cancel());
    bool cancelled = false;
    try {
        co_await outer;
    } catch (const asyncio::CancelledError&) {
        cancelled = true;
    }
    EXPECT_TRUE(cancelled);
}

}  // namespace asyncio_test
