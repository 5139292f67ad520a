// asyncio::EventLoop: callbacks and timers (order, cancel, virtual time), iterations, running and
// stopping, closing, errors, call_soon_threadsafe, get_running_loop, stats.
#include "asyncio/event_loop.hpp"

#include <gtest/gtest.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <system_error>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/debug.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/sock_ops.hpp"
#include "asyncio/socket.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::Coroutine;
using asyncio::EventLoop;
using asyncio::RuntimeError;
using asyncio::Task;
using asyncio::TimePoint;
using asyncio_test::Counted;
using asyncio_test::Reports;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class AnEventLoop : public asyncio_test::LeakChecked {};

// The MockClock starts at 1h.
constexpr TimePoint kStart{std::chrono::hours(1)};

Coroutine<int> value_after(asyncio::Duration d, int v) {
    co_await asyncio::sleep(d);
    co_return v;
}

Coroutine<int> fail_after(asyncio::Duration d, std::string what) {
    co_await asyncio::sleep(d);
    throw std::runtime_error(what);
}

Coroutine<int> sleeps_with(Counted c, asyncio::Duration d) {
    co_await asyncio::sleep(d);
    co_return c.value();
}

Coroutine<int> awaits(Task<int> t) { co_return co_await t; }

/// The calling thread's kernel id.
long this_thread_id() { return static_cast<long>(::syscall(SYS_gettid)); }

/// Waits until thread `tid` of this process is blocked in a system call that waits for events
/// (epoll, poll, select, io_uring). Returns false if that was not seen within 20 s (a safety net:
/// the caller goes on and the test checks the outcome anyway).
bool wait_until_blocked_waiting_for_events(long tid) {
    const std::string path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
    const long waits[] = {
        SYS_epoll_wait, SYS_epoll_pwait, SYS_poll, SYS_ppoll, SYS_select, SYS_pselect6,
#ifdef SYS_epoll_pwait2
        SYS_epoll_pwait2,
#endif
#ifdef SYS_io_uring_enter
        SYS_io_uring_enter,
#endif
    };
    const auto give_up = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < give_up) {
        std::ifstream in(path);
        long nr = -1;
        if (in >> nr && std::find(std::begin(waits), std::end(waits), nr) != std::end(waits))
            return true;
        std::this_thread::yield();
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// call_soon

TEST_F(AnEventLoop, RunsCallSoonCallbacksInFifoOrder) {
    EventLoop loop(virtual_time());
    std::vector<int> order;
    for (int i = 0; i < 5; ++i) loop.call_soon([&order, i] { order.push_back(i); });
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST_F(AnEventLoop, DoesNotRunACallSoonCallbackWhoseHandleWasCancelled) {
    EventLoop loop(virtual_time());
    std::vector<std::string> order;
    loop.call_soon([&] { order.push_back("a"); });
    asyncio::Handle b = loop.call_soon([&] { order.push_back("b"); });
    asyncio::Handle c = loop.call_soon([&] { order.push_back("c"); });
    loop.call_soon([&] { order.push_back("d"); });
    loop.call_soon([&] { loop.stop(); });
    EXPECT_FALSE(b.cancelled());
    b.cancel();
    EXPECT_TRUE(b.cancelled());
    b.cancel();  // idempotent
    loop.run_forever();
    EXPECT_EQ(order, (std::vector<std::string>{"a", "c", "d"}));
    c.cancel();  // after it ran: no effect
    EXPECT_TRUE(c.cancelled());
}

TEST_F(AnEventLoop, DoesNotRunACallbackCancelledByAnEarlierCallbackOfTheSameIteration) {
    EventLoop loop(virtual_time());
    std::vector<std::string> order;
    asyncio::Handle later;
    loop.call_soon([&] {
        order.push_back("first");
        later.cancel();
    });
    later = loop.call_soon([&] { order.push_back("second"); });
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(order, (std::vector<std::string>{"first"}));
}

TEST_F(AnEventLoop, RunsCallbacksScheduledByCallbacksInTheNextIteration) {
    EventLoop loop(virtual_time());
    std::vector<std::string> order;
    std::uint64_t first_iteration = 0, nested_iteration = 0;
    loop.call_soon([&] {
        order.push_back("first");
        first_iteration = loop.stats().iterations;
        loop.call_soon([&] {
            order.push_back("nested");
            nested_iteration = loop.stats().iterations;
            loop.stop();
        });
    });
    loop.call_soon([&] { order.push_back("second"); });
    loop.run_forever();
    EXPECT_EQ(order, (std::vector<std::string>{"first", "second", "nested"}));
    EXPECT_EQ(nested_iteration, first_iteration + 1);
}

TEST_F(AnEventLoop, SelfReschedulingCallbackDoesNotStarveAZeroDelayTimer) {
    EventLoop loop(virtual_time());
    int spins = 0;
    bool timer_ran = false;
    std::function<void()> spin = [&] {
        ++spins;
        if (timer_ran || spins > 1000) {
            loop.stop();
            return;
        }
        loop.call_soon(spin);
    };
    loop.call_soon(spin);
    loop.call_later(0s, [&] { timer_ran = true; });
    loop.run_forever();
    EXPECT_TRUE(timer_ran);
    EXPECT_LE(spins, 3);
    EXPECT_EQ(loop.time(), kStart);  // a busy loop never jumps virtual time
}

TEST_F(AnEventLoop, SelfReschedulingCallbackDoesNotStarveCallbacksFromOtherThreads) {
    // Stands in for I/O: the wake-up channel of the loop is polled even while callbacks are ready.
    EventLoop loop(virtual_time());
    std::atomic<bool> delivered{false};
    bool ran = false;
    const auto give_up = std::chrono::steady_clock::now() + 60s;  // a safety net, not a measure
    std::function<void()> spin = [&] {
        if (ran || std::chrono::steady_clock::now() > give_up) {
            loop.stop();
            return;
        }
        loop.call_soon(spin);
    };
    loop.call_soon(spin);
    std::thread producer([&] {
        loop.call_soon_threadsafe([&] { ran = true; });
        delivered = true;
    });
    loop.run_forever();
    producer.join();
    EXPECT_TRUE(delivered);
    EXPECT_TRUE(ran);
}

// ---------------------------------------------------------------------------------------------
// Timers on virtual time

TEST_F(AnEventLoop, RunsTimersByDeadlineAndInSchedulingOrderForEqualDeadlines) {
    EventLoop loop(virtual_time());
    std::vector<std::string> order;
    std::vector<TimePoint> times;
    auto record = [&](const char* name) {
        return [&, name] {
            order.push_back(name);
            times.push_back(loop.time());
        };
    };
    loop.call_later(3s, record("c"));
    loop.call_later(1s, record("a1"));
    loop.call_at(loop.time() + 1s, record("a2"));
    loop.call_later(2s, record("b"));
    loop.call_later(1000ms, record("a3"));
    loop.call_later(3s, [&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(order, (std::vector<std::string>{"a1", "a2", "a3", "b", "c"}));
    EXPECT_EQ(times, (std::vector<TimePoint>{kStart + 1s, kStart + 1s, kStart + 1s, kStart + 2s,
                                             kStart + 3s}));
}

TEST_F(AnEventLoop, AdvancesVirtualTimeExactlyToEachDeadline) {
    EventLoop loop(virtual_time());
    EXPECT_EQ(loop.time(), kStart);
    std::vector<asyncio::Duration> seen;
    loop.call_later(1ns, [&] { seen.push_back(loop.time() - kStart); });
    loop.call_later(1500us, [&] { seen.push_back(loop.time() - kStart); });
    loop.call_later(1h, [&] {
        seen.push_back(loop.time() - kStart);
        loop.stop();
    });
    loop.run_forever();
    EXPECT_EQ(seen, (std::vector<asyncio::Duration>{1ns, 1500us, 1h}));
    EXPECT_EQ(loop.time(), kStart + 1h);
}

TEST_F(AnEventLoop, TimerHandleWhenIsTheScheduledLoopTime) {
    EventLoop loop(virtual_time());
    asyncio::TimerHandle a = loop.call_later(2s, [] {});
    asyncio::TimerHandle b = loop.call_at(kStart + 5min, [] {});
    EXPECT_EQ(a.when(), kStart + 2s);
    EXPECT_EQ(b.when(), kStart + 5min);
    a.cancel();
    b.cancel();
}

TEST_F(AnEventLoop, DoesNotRunACancelledTimerNorJumpTimeToIt) {
    EventLoop loop(virtual_time());
    bool ran = false;
    asyncio::TimerHandle h = loop.call_later(5s, [&] { ran = true; });
    loop.call_later(1s, [&] { loop.stop(); });
    h.cancel();
    EXPECT_TRUE(h.cancelled());
    loop.run_forever();
    EXPECT_FALSE(ran);
    EXPECT_EQ(loop.time(), kStart + 1s);
    // Nothing is left: a loop told to stop with only that cancelled timer does not jump.
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(loop.time(), kStart + 1s);
}

TEST_F(AnEventLoop, CancellingATimerFromAnEarlierTimerWithTheSameDeadlineSkipsIt) {
    EventLoop loop(virtual_time());
    std::vector<std::string> order;
    asyncio::TimerHandle second;
    loop.call_later(1s, [&] {
        order.push_back("first");
        second.cancel();
    });
    second = loop.call_later(1s, [&] { order.push_back("second"); });
    loop.call_later(1s, [&] {
        order.push_back("third");
        loop.stop();
    });
    loop.run_forever();
    EXPECT_EQ(order, (std::vector<std::string>{"first", "third"}));
}

TEST_F(AnEventLoop, HandlesManyTimersCancelledOutOfOrder) {
    EventLoop loop(virtual_time());
    std::vector<int> ran;
    std::vector<asyncio::TimerHandle> handles;
    for (int i = 0; i < 1000; ++i)
        handles.push_back(loop.call_later(std::chrono::milliseconds(1000 - i), [&ran, i] { ran.push_back(i); }));
    for (int i = 0; i < 1000; ++i)
        if (i % 3 != 0) handles[static_cast<std::size_t>(i)].cancel();
    loop.call_later(2s, [&] { loop.stop(); });
    loop.run_forever();
    std::vector<int> expected;
    for (int i = 999; i >= 0; --i)
        if (i % 3 == 0) expected.push_back(i);
    EXPECT_EQ(ran, expected);
    EXPECT_EQ(loop.time(), kStart + 2s);
}

// A cancelled timer's entry is dropped at once when it is at an end of the in-order lane or the
// last leaf of the heap, and left stale otherwise: every mix must leave the others in order.
TEST_F(AnEventLoop, CancellingTimersAtTheEndsAndInTheMiddleKeepsTheOthersInOrder) {
    EventLoop loop(virtual_time());
    std::vector<int> ran;
    std::vector<asyncio::TimerHandle> h;
    auto at = [&](int ms, int id) {
        h.push_back(loop.call_later(std::chrono::milliseconds(ms), [&ran, id] { ran.push_back(id); }));
    };
    // In order (the FIFO lane), with equal deadlines, then out of order (the heap).
    at(10, 0);
    at(20, 1);
    at(20, 2);
    at(30, 3);
    at(40, 4);
    at(15, 5);
    at(5, 6);
    at(25, 7);
    at(20, 8);
    h[4].cancel();  // the back of the lane
    h[0].cancel();  // the front of the lane
    h[2].cancel();  // the middle of the lane: stale
    h[8].cancel();  // the heap's last leaf
    h[5].cancel();  // inside the heap: stale
    h[4].cancel();  // twice: nothing
    at(40, 9);      // after the lane's back was dropped
    auto extra = loop.call_later(50ms, [&ran] { ran.push_back(10); });
    extra.cancel();  // added and cancelled at once (as wait_for around a ready value)
    loop.call_later(1s, [&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(ran, (std::vector<int>{6, 1, 7, 3, 9}));
    EXPECT_EQ(loop.time(), kStart + 1s);
}

// Past 32,768 timers the slots and the in-order lane live in 2 MiB blocks (large_block.hpp):
// a hundred thousand timers, half of them cancelled, run in order and the loop frees them all.
TEST_F(AnEventLoop, AHundredThousandTimersHalfCancelledRunInDeadlineOrder) {
    EventLoop loop(virtual_time());
    constexpr int kTimers = 100'000;
    std::vector<int> ran;
    ran.reserve(kTimers / 2);
    std::vector<asyncio::TimerHandle> handles;
    handles.reserve(kTimers);
    for (int i = 0; i < kTimers; ++i) {
        // Mostly increasing deadlines (the lane), every tenth one earlier (the heap).
        const auto delay = std::chrono::microseconds(i % 10 == 9 ? i / 2 : i);
        handles.push_back(loop.call_later(delay, [&ran, i] { ran.push_back(i); }));
    }
    for (int i = 0; i < kTimers; i += 2) handles[static_cast<std::size_t>(i)].cancel();
    loop.call_later(1s, [&] { loop.stop(); });
    loop.run_forever();
    ASSERT_EQ(ran.size(), static_cast<std::size_t>(kTimers / 2));
    auto deadline = [](int i) { return i % 10 == 9 ? i / 2 : i; };
    for (std::size_t k = 1; k < ran.size(); ++k) {
        const int a = ran[k - 1], b = ran[k];
        ASSERT_TRUE(deadline(a) < deadline(b) || (deadline(a) == deadline(b) && a < b)) << a << " then " << b;
    }
}

// ---------------------------------------------------------------------------------------------
// Running and stopping

TEST_F(AnEventLoop, StopEndsRunForeverAfterTheCurrentIteration) {
    EventLoop loop(virtual_time());
    std::vector<std::string> order;
    loop.call_soon([&] {
        order.push_back("a");
        loop.stop();
        loop.call_soon([&] {
            order.push_back("c");
            loop.stop();
        });
    });
    loop.call_soon([&] { order.push_back("b"); });
    EXPECT_FALSE(loop.is_running());
    loop.run_forever();
    EXPECT_FALSE(loop.is_running());
    EXPECT_EQ(order, (std::vector<std::string>{"a", "b"}));
    loop.run_forever();  // the loop can be run again; "c" was kept
    EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(AnEventLoop, StoppedBeforeRunForeverRunsOneIteration) {
    EventLoop loop(virtual_time());
    std::vector<std::string> order;
    loop.call_soon([&] {
        order.push_back("ready");
        loop.call_soon([&] { order.push_back("next"); });
    });
    loop.stop();
    loop.run_forever();
    EXPECT_EQ(order, (std::vector<std::string>{"ready"}));
    EXPECT_EQ(loop.stats().iterations, 1u);
}

TEST_F(AnEventLoop, IsRunningOnlyWhileRunning) {
    EventLoop loop(virtual_time());
    bool inside = false;
    loop.call_soon([&] {
        inside = loop.is_running();
        loop.stop();
    });
    loop.run_forever();
    EXPECT_TRUE(inside);
    EXPECT_FALSE(loop.is_running());
}

TEST_F(AnEventLoop, RunUntilCompleteReturnsTheValue) {
    EventLoop loop(virtual_time());
    EXPECT_EQ(loop.run_until_complete(value_after(2s, 5)), 5);
    EXPECT_EQ(loop.time(), kStart + 2s);
    Task<int> t = loop.create_task(value_after(1s, 6));
    EXPECT_EQ(loop.run_until_complete(t), 6);
    EXPECT_EQ(loop.run_until_complete(t), 6);  // already done: returns at once
    EXPECT_EQ(loop.time(), kStart + 3s);
}

TEST_F(AnEventLoop, RunUntilCompleteRethrowsTheException) {
    EventLoop loop(virtual_time());
    Reports reports;
    reports.install(loop);
    EXPECT_THROW(loop.run_until_complete(fail_after(1s, "bad")), std::runtime_error);
    auto cancelled = []() -> Coroutine<> {
        asyncio::current_task().cancel();
        co_await asyncio::sleep(1s);
    };
    EXPECT_THROW(loop.run_until_complete(cancelled()), asyncio::CancelledError);
    EXPECT_EQ(reports.size(), 0u);  // it was retrieved
}

TEST_F(AnEventLoop, RunUntilCompleteOfVoidWorks) {
    EventLoop loop(virtual_time());
    bool ran = false;
    auto body = [&]() -> Coroutine<> {
        co_await asyncio::sleep(1s);
        ran = true;
    };
    loop.run_until_complete(body());
    EXPECT_TRUE(ran);
}

TEST_F(AnEventLoop, RegressionATimerCancelledWhileTheLoopClosesDropsItsCallbackThen) {
    // close() frees the frames of tasks still pending (and what close hooks hold) before it drops
    // its timers; a TimerHandle cancelled from there used to be ignored ("the loop is closed"),
    // so the callback outlived what it pointed to until the timers were dropped (a TLS stream's
    // shutdown timer read its freed engine). Now cancel() drops it at once.
    struct Target {
        bool callback_alive = false;
        bool alive_after_cancel = true;
    };
    struct Callback {
        Target* t;
        explicit Callback(Target* target) : t(target) { t->callback_alive = true; }
        Callback(Callback&& o) noexcept : t(std::exchange(o.t, nullptr)) {}
        Callback& operator=(Callback&&) = delete;
        void operator()() const {}
        ~Callback() {
            if (t != nullptr) t->callback_alive = false;
        }
    };
    struct CancelOnExit {
        asyncio::TimerHandle h;
        Target* t;
        ~CancelOnExit() {
            h.cancel();
            t->alive_after_cancel = t->callback_alive;
        }
    };
    Target target;
    EventLoop loop(virtual_time());
    auto pending = [](EventLoop& l, Target& t) -> Coroutine<> {
        CancelOnExit guard{l.call_later(3600s, Callback(&t)), &t};
        co_await asyncio::sleep(7200s);
    };
    loop.run_until_complete([](EventLoop& l, Target& t, auto make) -> Coroutine<> {
        (void)l.create_task(make(l, t));  // no handle kept: close() frees it
        co_await asyncio::sleep(0s);
    }(loop, target, pending));
    EXPECT_TRUE(target.callback_alive);
    loop.close();
    EXPECT_FALSE(target.alive_after_cancel);
    EXPECT_FALSE(target.callback_alive);
}

TEST_F(AnEventLoop, RunUntilCompleteStoppedEarlyRaisesRuntimeErrorAndCanBeResumed) {
    EventLoop loop(virtual_time());
    Task<int> t = loop.create_task(value_after(10s, 1));
    loop.call_later(1s, [&] { loop.stop(); });
    EXPECT_THROW(loop.run_until_complete(t), RuntimeError);
    EXPECT_FALSE(t.done());
    EXPECT_EQ(loop.time(), kStart + 1s);
    EXPECT_EQ(loop.run_until_complete(t), 1);
    EXPECT_EQ(loop.time(), kStart + 10s);
}

TEST_F(AnEventLoop, RunningALoopThatIsAlreadyRunningRaisesRuntimeError) {
    EventLoop loop(virtual_time());
    int checks = 0;
    loop.call_soon([&] {
        EXPECT_THROW(loop.run_forever(), RuntimeError);
        EXPECT_THROW(loop.run_until_complete(value_after(0s, 1)), RuntimeError);
        EventLoop other(virtual_time());
        EXPECT_THROW(other.run_forever(), RuntimeError);  // another loop on the same thread
        ++checks;
        loop.stop();
    });
    loop.run_forever();
    EXPECT_EQ(checks, 1);
    auto nested = [&]() -> Coroutine<> {
        EXPECT_THROW(loop.run_until_complete(value_after(0s, 1)), RuntimeError);
        ++checks;
        co_return;
    };
    loop.run_until_complete(nested());
    EXPECT_EQ(checks, 2);
}

TEST_F(AnEventLoop, RaisesRuntimeErrorWhenUsedAfterClose) {
    EventLoop loop(virtual_time());
    EXPECT_FALSE(loop.is_closed());
    loop.close();
    EXPECT_TRUE(loop.is_closed());
    EXPECT_THROW(loop.call_soon([] {}), RuntimeError);
    EXPECT_THROW(loop.call_later(1s, [] {}), RuntimeError);
    EXPECT_THROW(loop.call_at(kStart, [] {}), RuntimeError);
    EXPECT_THROW(loop.call_soon_threadsafe([] {}), RuntimeError);
    EXPECT_THROW(loop.create_task(value_after(0s, 1)), RuntimeError);
    EXPECT_THROW(loop.run_forever(), RuntimeError);
    EXPECT_THROW(loop.run_until_complete(value_after(0s, 1)), RuntimeError);
    EXPECT_NO_THROW(loop.close());  // idempotent
}

TEST_F(AnEventLoop, CallSoonThreadsafeFromAnotherThreadAfterCloseRaisesRuntimeError) {
    EventLoop loop;
    loop.close();
    bool threw = false;
    std::thread other([&] {
        try {
            loop.call_soon_threadsafe([] {});
        } catch (const RuntimeError&) {
            threw = true;
        }
    });
    other.join();
    EXPECT_TRUE(threw);
}

TEST_F(AnEventLoop, ClosingARunningLoopRaisesRuntimeError) {
    EventLoop loop(virtual_time());
    bool threw = false;
    loop.call_soon([&] {
        try {
            loop.close();
        } catch (const RuntimeError&) {
            threw = true;
        }
        loop.stop();
    });
    loop.run_forever();
    EXPECT_TRUE(threw);
    EXPECT_FALSE(loop.is_closed());
}

TEST_F(AnEventLoop, CloseDestroysPendingTasksAndReportsThem) {
    EventLoop loop(virtual_time());
    Reports reports;
    reports.install(loop);
    loop.create_task(sleeps_with(Counted(1), 10s), "sleeper-1");
    loop.create_task(sleeps_with(Counted(2), 20s), "sleeper-2");
    loop.create_task(sleeps_with(Counted(3), 0s));  // never started
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(Counted::live(), 3);
    loop.close();
    EXPECT_EQ(Counted::live(), 0);
    EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), 3u);
    std::vector<std::string> names;
    for (const auto& r : reports.entries()) names.push_back(r.task_name);
    EXPECT_NE(std::find(names.begin(), names.end(), "sleeper-1"), names.end());
    EXPECT_NE(std::find(names.begin(), names.end(), "sleeper-2"), names.end());
}

TEST_F(AnEventLoop, CloseLeavesAHeldPendingTaskToItsLastHandle) {
    EventLoop loop(virtual_time());
    Reports reports;
    reports.install(loop);
    Task<int> t = loop.create_task(sleeps_with(Counted(1), 10s));
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();
    loop.close();
    EXPECT_FALSE(t.done());
    EXPECT_FALSE(t.cancel());  // its loop is gone: it can never run again
    EXPECT_THROW(t.result(), asyncio::InvalidStateError);
    EXPECT_EQ(Counted::live(), 1);
    t = Task<int>();
    EXPECT_EQ(Counted::live(), 0);
    EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), 1u);
}

TEST_F(AnEventLoop, DestructorClosesTheLoop) {
    Reports reports;
    {
        EventLoop loop(virtual_time());
        reports.install(loop);
        loop.create_task(sleeps_with(Counted(1), 10s));
        loop.call_soon([&] { loop.stop(); });
        loop.run_forever();
        EXPECT_EQ(Counted::live(), 1);
    }
    EXPECT_EQ(Counted::live(), 0);
    EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), 1u);
}

TEST_F(AnEventLoop, ReportsACallbackThatThrowsAndKeepsGoing) {
    EventLoop loop(virtual_time());
    Reports reports;
    reports.install(loop);
    std::vector<std::string> order;
    loop.call_soon([&] {
        order.push_back("thrower");
        throw std::runtime_error("callback failed");
    });
    loop.call_soon([&] { order.push_back("next"); });
    loop.call_later(1s, [] { throw std::logic_error("timer failed"); });
    loop.call_later(2s, [&] {
        order.push_back("later");
        loop.stop();
    });
    loop.run_forever();
    EXPECT_EQ(order, (std::vector<std::string>{"thrower", "next", "later"}));
    ASSERT_EQ(reports.size(), 2u);
    EXPECT_EQ(reports.entries()[0].message, "Exception in callback");
    EXPECT_EQ(reports.what(0), "callback failed");
    EXPECT_EQ(reports.what(1), "timer failed");
}

TEST_F(AnEventLoop, ExceptionHandlerCanBeReadAndReset) {
    EventLoop loop(virtual_time());
    EXPECT_FALSE(loop.get_exception_handler());
    Reports reports;
    reports.install(loop);
    EXPECT_TRUE(loop.get_exception_handler());
    loop.call_exception_handler({"custom", nullptr, "t"});
    EXPECT_EQ(reports.count("custom"), 1u);
    loop.set_exception_handler({});
    EXPECT_FALSE(loop.get_exception_handler());
}

TEST_F(AnEventLoop, ExceptionHandlerThatThrowsDoesNotStopTheLoop) {
    EventLoop loop(virtual_time());
    loop.set_exception_handler([](EventLoop&, const asyncio::ExceptionContext&) {
        throw std::runtime_error("handler failed");
    });
    bool after = false;
    loop.call_soon([] { throw std::runtime_error("callback failed"); });
    loop.call_soon([&] {
        after = true;
        loop.stop();
    });
    ::testing::internal::CaptureStderr();  // the fallback prints to stderr
    loop.run_forever();
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_TRUE(after);
    EXPECT_NE(err.find("handler failed"), std::string::npos) << err;
}

TEST_F(AnEventLoop, TheDefaultHandlerNamesTheExceptionTypeReadably) {
    // "std::runtime_error", as a C++ programmer writes it, not the mangled "St13runtime_error".
    ::testing::internal::CaptureStderr();
    EventLoop::default_exception_handler(
        {"Task exception was never retrieved", std::make_exception_ptr(std::runtime_error("boom")), "Task-7"});
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(err, "Task exception was never retrieved\ntask: Task-7\nexception: std::runtime_error: boom\n");
}

TEST_F(AnEventLoop, CallSoonThreadsafeFromFourThreadsRunsEveryCallbackOnceAndWakesTheLoop) {
    // A real clock: the loop blocks in the backend whenever it has nothing to do, and only the
    // producers' wake-ups can get it going again. The watchdog is a safety net against a hang,
    // never a measurement.
    EventLoop loop;
    constexpr int kThreads = 4;
    constexpr int kPerThread = 10'000;
    constexpr int kTotal = kThreads * kPerThread;
    std::vector<int> per_thread(kThreads, 0);
    int total = 0;
    bool watchdog_fired = false;
    std::vector<std::thread> producers;
    std::atomic<bool> saw_blocked{false};
    const long loop_thread = this_thread_id();
    loop.call_soon([&] {
        for (int t = 0; t < kThreads; ++t) {
            producers.emplace_back([&loop, &per_thread, &total, &saw_blocked, loop_thread, t] {
                // Start once the loop sleeps in the backend, so the first callback must wake it.
                if (wait_until_blocked_waiting_for_events(loop_thread)) saw_blocked = true;
                for (int i = 0; i < kPerThread; ++i) {
                    loop.call_soon_threadsafe([&loop, &per_thread, &total, t] {
                        ++per_thread[static_cast<std::size_t>(t)];
                        if (++total == kTotal) loop.stop();
                    });
                }
            });
        }
    });
    asyncio::TimerHandle watchdog = loop.call_later(60s, [&] {
        watchdog_fired = true;
        loop.stop();
    });
    loop.run_forever();
    watchdog.cancel();
    for (auto& p : producers) p.join();
    EXPECT_FALSE(watchdog_fired);
    EXPECT_EQ(total, kTotal);
    EXPECT_EQ(per_thread, std::vector<int>(kThreads, kPerThread));
    EXPECT_TRUE(saw_blocked);
    EXPECT_GE(loop.stats().backend_waits, 1u);
}

TEST_F(AnEventLoop, CallSoonThreadsafeWakesAnIdleLoopBlockedInPoll) {
    // Virtual time with no timers: the loop can only block in the backend until woken.
    EventLoop loop(virtual_time());
    bool ran = false;
    std::atomic<bool> saw_blocked{false};
    const long loop_thread = this_thread_id();
    std::thread producer;
    loop.call_soon([&] {
        producer = std::thread([&] {
            if (wait_until_blocked_waiting_for_events(loop_thread)) saw_blocked = true;
            loop.call_soon_threadsafe([&] {
                ran = true;
                loop.stop();
            });
        });
    });
    loop.run_forever();
    producer.join();
    EXPECT_TRUE(saw_blocked);
    EXPECT_TRUE(ran);
    EXPECT_GE(loop.stats().backend_waits, 1u);
    EXPECT_EQ(loop.time(), kStart);
}

// ---------------------------------------------------------------------------------------------
// call_soon_threadsafe: the lock-free queue (detail/mpsc_queue.hpp) and its wake-up protocol

/// Stops `loop` (through call_soon_threadsafe, which wakes it) unless disarmed within `limit`:
/// a safety net against a hang, never a measurement. fired() says whether it had to.
class Watchdog {
public:
    Watchdog(EventLoop& loop, std::chrono::seconds limit)
        : thread_([this, &loop, limit] {
              std::unique_lock lock(m_);
              if (!cv_.wait_for(lock, limit, [this] { return disarmed_; })) {
                  fired_ = true;
                  loop.call_soon_threadsafe([&loop] { loop.stop(); });
              }
          }) {}
    ~Watchdog() { disarm(); }
    /// Returns whether the watchdog fired.
    bool disarm() {
        {
            std::lock_guard lock(m_);
            disarmed_ = true;
        }
        cv_.notify_all();
        if (thread_.joinable()) thread_.join();
        return fired_;
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    bool disarmed_ = false;
    bool fired_ = false;
    std::thread thread_;
};

TEST_F(AnEventLoop, CallSoonThreadsafeFromEightThreadsRunsEveryCallbackOnceInEachThreadsOrder) {
    // A loop with nothing else to do (real clock, no timer, no I/O): it blocks in the backend
    // whenever the queue is empty, and only the producers' wake-ups get it going again. Each
    // producer posts in bursts and, before each burst, waits until the loop sleeps in the
    // backend, so that it goes to sleep and is woken many times in the middle.
    EventLoop loop;
    constexpr int kThreads = 8;
    constexpr int kBursts = 10;
    constexpr int kPerBurst = 2'000;
    constexpr int kPerThread = kBursts * kPerBurst;
    constexpr int kTotal = kThreads * kPerThread;
    std::vector<int> next(kThreads, 0);  // loop thread only
    int total = 0, out_of_order = 0;
    std::atomic<int> saw_blocked{0};
    const long loop_thread = this_thread_id();
    std::vector<std::thread> producers;
    for (int t = 0; t < kThreads; ++t) {
        producers.emplace_back([&, t] {
            for (int i = 0; i < kPerThread; ++i) {
                if (i % kPerBurst == 0 && wait_until_blocked_waiting_for_events(loop_thread))
                    saw_blocked.fetch_add(1);
                loop.call_soon_threadsafe([&, t, i] {
                    int& expected = next[static_cast<std::size_t>(t)];
                    if (i != expected) ++out_of_order;
                    expected = i + 1;
                    if (++total == kTotal) loop.stop();
                });
            }
        });
    }
    Watchdog watchdog(loop, 120s);
    loop.run_forever();
    EXPECT_FALSE(watchdog.disarm());
    for (auto& p : producers) p.join();
    EXPECT_EQ(total, kTotal);
    EXPECT_EQ(out_of_order, 0);
    EXPECT_EQ(next, std::vector<int>(kThreads, kPerThread));
    // It did block, and was woken; at most one wake-up write each time it announced that it may
    // block (every such announcement is a backend poll), however many producers saw it.
    EXPECT_EQ(saw_blocked.load(), kThreads * kBursts);
    EXPECT_GE(loop.stats().backend_waits, static_cast<std::uint64_t>(kBursts));
    EXPECT_GE(loop.threadsafe_wakeups(), 1u);
    EXPECT_LE(loop.threadsafe_wakeups(), loop.stats().backend_polls);
}

TEST_F(AnEventLoop, CallSoonThreadsafeRacingTheLoopGoingToSleepAlwaysWakesIt) {
    // Each round posts one callback, which says it is running and then lingers, a little longer
    // each round; the producer posts the next one as soon as it sees the previous one running. So
    // the posts sweep the window in which the loop, done with that callback, announces that it may
    // block, looks at the queue and enters epoll_wait. (Both sides spin: a yield would blur the
    // sweep.) A lost wake-up leaves the loop asleep for ever (nothing else would wake it): the
    // producer gives up on that round after 20 s and the test fails.
    EventLoop loop;
    constexpr int kRounds = 20'000;
    std::atomic<int> started{0};
    std::atomic<bool> lost{false};
    std::thread producer([&] {
        for (int round = 0; round < kRounds && !lost; ++round) {
            const int linger = (round % 1000) * 4;
            loop.call_soon_threadsafe([&started, linger] {
                started.fetch_add(1);
                for (int spin = 0; spin < linger; ++spin)
                    std::atomic_signal_fence(std::memory_order_seq_cst);  // kept: a compiler barrier
            });
            const auto give_up = std::chrono::steady_clock::now() + 20s;
            for (int spins = 0; started.load() != round + 1; ++spins) {
                if (spins < 20'000) continue;  // the loop runs on the other core, usually
                if (std::chrono::steady_clock::now() > give_up) {
                    lost = true;
                    break;
                }
                std::this_thread::yield();
            }
        }
        loop.call_soon_threadsafe([&loop] { loop.stop(); });
    });
    loop.run_forever();
    producer.join();
    EXPECT_FALSE(lost);
    EXPECT_EQ(started.load(), kRounds);
    EXPECT_GE(loop.stats().backend_waits, 1u);
}

TEST_F(AnEventLoop, CallSoonThreadsafePostedAfterTheLoopsLastLookAndBeforeItSleepsIsSeen) {
    // The narrowest case, made deterministic: the post lands after the loop found nothing ready
    // and before it announces that it may block (the clock is read in between, to compute the
    // poll timeout, and this clock waits there for the producer). The producer then sees no
    // announcement and writes nothing, so the loop must see the post itself when it looks at the
    // queue once more after announcing. If it did not, it would sleep until its 1 h timer.
    struct HandOffClock final : public asyncio::Clock {
        mutable std::atomic<bool> armed{false}, in_window{false}, posted{false};
        asyncio::TimePoint now() const noexcept override {
            if (armed.exchange(false)) {
                in_window = true;
                const auto give_up = std::chrono::steady_clock::now() + 20s;
                while (!posted.exchange(false) && std::chrono::steady_clock::now() < give_up)
                    std::this_thread::yield();
            }
            return std::chrono::steady_clock::now();
        }
    };
    auto owned = std::make_unique<HandOffClock>();
    HandOffClock& clock = *owned;
    EventLoop loop(std::move(owned));
    constexpr int kRounds = 1'000;
    std::atomic<int> ran{0};
    std::atomic<bool> lost{false};
    std::uint64_t waits = 0;  // the loop's sleeps until the last round ran
    loop.call_later(1h, [] {});  // the timeout is computed from the clock: the window
    auto round_trip = [&] {
        // Runs on the loop; the loop's next look at the clock is inside the window.
        if (ran.fetch_add(1) + 1 < kRounds)
            clock.armed = true;
        else
            waits = loop.stats().backend_waits;
    };
    loop.call_soon_threadsafe(round_trip);  // round 0, before the loop runs
    std::thread producer([&] {
        for (int round = 1; round < kRounds && !lost; ++round) {
            const auto give_up = std::chrono::steady_clock::now() + 20s;
            while (!clock.in_window.exchange(false)) {
                if (std::chrono::steady_clock::now() > give_up) {
                    lost = true;
                    break;
                }
                std::this_thread::yield();
            }
            loop.call_soon_threadsafe(round_trip);
            clock.posted = true;  // let the loop go on: it holds in the window
            while (ran.load() != round + 1) {
                if (std::chrono::steady_clock::now() > give_up) {
                    lost = true;
                    break;
                }
                std::this_thread::yield();
            }
        }
        loop.call_soon_threadsafe([&loop] { loop.stop(); });
    });
    loop.run_forever();
    producer.join();
    EXPECT_FALSE(lost);
    EXPECT_EQ(ran.load(), kRounds);
    EXPECT_EQ(waits, 0u);  // it never went to sleep with a post queued
}

TEST_F(AnEventLoop, CallSoonThreadsafeRunsACallbackPostedDuringTheDrainInTheNextIteration) {
    // As Python, where a callback posted while an iteration runs waits for the next one: an
    // iteration takes only what was posted before it began to drain. Chain is a callable whose
    // move, when the loop takes it from the thread-safe queue, posts its successor: with an
    // unbounded drain the whole chain would run in one iteration (and an endless chain would keep
    // the loop in its drain for ever).
    EventLoop loop(virtual_time());
    struct Context {
        EventLoop* loop;
        std::thread::id loop_thread;
        bool posting = false;  // the loop thread is inside call_soon_threadsafe
        std::vector<std::uint64_t> ran_in;  // the iteration each link ran in
    } ctx{&loop, std::this_thread::get_id(), false, {}};
    struct Chain {
        Context* c;
        int left;
        bool posted = false;
        Chain(Context* context, int n) : c(context), left(n) {}
        Chain(Chain&& o) noexcept : c(o.c), left(o.left), posted(o.posted) {
            if (posted || left == 0 || c->posting || std::this_thread::get_id() != c->loop_thread)
                return;
            posted = true;
            c->posting = true;
            c->loop->call_soon_threadsafe(Chain(c, left - 1));
            c->posting = false;
        }
        Chain& operator=(Chain&&) = delete;
        void operator()() {
            c->ran_in.push_back(c->loop->stats().iterations);
            if (left == 0) c->loop->stop();
        }
    };
    static_assert(sizeof(Chain) <= asyncio::debug::kCallbackInlineBytes);  // moved, not boxed
    std::thread([&] { loop.call_soon_threadsafe(Chain(&ctx, 4)); }).join();
    loop.run_forever();
    ASSERT_EQ(ctx.ran_in.size(), 5u);
    for (std::size_t i = 1; i < ctx.ran_in.size(); ++i) EXPECT_EQ(ctx.ran_in[i], ctx.ran_in[i - 1] + 1);
}

TEST_F(AnEventLoop, CallSoonThreadsafeRacingCloseRaisesOrRunsOrIsDroppedAndTheLoopMayBeDestroyedAtOnce) {
    // Producers post until they are refused. The loop runs until some callbacks ran, stops, and is
    // closed (while producers are in the middle of their pushes) and destroyed as soon as every
    // producer has been refused once, without waiting for them to return. Every call that
    // returned normally ran its callback or had it dropped by close() (counted, in debug mode,
    // by the report); every other call raised RuntimeError. Run under ASan and TSan.
    constexpr int kThreads = 4;
    constexpr int kRounds = 40;
    struct Round {
        std::thread::id loop_thread = std::this_thread::get_id();
        std::atomic<long> accepted{0}, ran{0}, dropped{0};
        std::atomic<int> refused{0};
        EventLoop* loop = nullptr;
        long stop_at = 0;
    };
    // Destroyed unrun on the loop thread = dropped by close() (the producer destroys the callback
    // of a refused call itself).
    struct Probe {
        Round* r;
        bool ran = false;
        explicit Probe(Round* round) : r(round) {}
        Probe(Probe&& o) noexcept : r(std::exchange(o.r, nullptr)), ran(o.ran) {}
        Probe& operator=(Probe&&) = delete;
        void operator()() {
            ran = true;
            if (r->ran.fetch_add(1) + 1 == r->stop_at) r->loop->stop();
        }
        ~Probe() {
            if (r != nullptr && !ran && std::this_thread::get_id() == r->loop_thread)
                r->dropped.fetch_add(1);
        }
    };
    long total_dropped = 0, reported_dropped = 0;
    for (int round = 0; round < kRounds; ++round) {
        auto r = std::make_unique<Round>();
        auto loop = std::make_unique<EventLoop>();
        loop->set_debug(true);
        Reports reports;
        reports.install(*loop);
        r->loop = loop.get();
        r->stop_at = 1 + (round * 613) % 5000;
        std::vector<std::thread> producers;
        for (int t = 0; t < kThreads; ++t) {
            producers.emplace_back([&r, l = loop.get()] {
                for (int calls = 0;; ++calls) {
                    if (calls > 3000) std::this_thread::yield();  // enough queued: slow down
                    try {
                        l->call_soon_threadsafe(Probe(r.get()));
                    } catch (const RuntimeError&) {
                        r->refused.fetch_add(1);
                        return;  // never touches the loop again
                    }
                    r->accepted.fetch_add(1);
                }
            });
        }
        loop->run_forever();
        loop->close();
        while (r->refused.load() < kThreads) std::this_thread::yield();
        // A producer may still be counting its last accepted call.
        for (auto& e : reports.entries()) {
            const auto at = e.message.find("dropped ");
            if (at != std::string::npos) reported_dropped += std::stol(e.message.substr(at + 8));
        }
        loop.reset();
        for (auto& p : producers) p.join();
        EXPECT_GE(r->ran.load(), r->stop_at);
        EXPECT_EQ(r->ran.load() + r->dropped.load(), r->accepted.load()) << "round " << round;
        total_dropped += r->dropped.load();
    }
    EXPECT_EQ(reported_dropped, total_dropped);
}

TEST_F(AnEventLoop, GetRunningLoopRaisesRuntimeErrorOutsideALoop) {
    EXPECT_THROW(asyncio::get_running_loop(), RuntimeError);
    EventLoop loop(virtual_time());
    EXPECT_THROW(asyncio::get_running_loop(), RuntimeError);  // exists but not running
    EventLoop* seen = nullptr;
    loop.call_soon([&] {
        seen = &asyncio::get_running_loop();
        loop.stop();
    });
    loop.run_forever();
    EXPECT_EQ(seen, &loop);
    EXPECT_THROW(asyncio::get_running_loop(), RuntimeError);
}

TEST_F(AnEventLoop, StatsCountIterationsAndNeverWaitOnVirtualTime) {
    EventLoop loop(virtual_time());
    EXPECT_EQ(loop.stats().iterations, 0u);
    loop.call_soon([&] { loop.call_soon([&] { loop.call_soon([&] { loop.stop(); }); }); });
    loop.run_forever();
    EXPECT_EQ(loop.stats().iterations, 3u);
    loop.call_later(1h, [&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(loop.time(), kStart + 1h);
    EXPECT_EQ(loop.stats().backend_waits, 0u);  // virtual time jumps instead of sleeping
}

TEST_F(AnEventLoop, CreateTaskRunsItInALaterIteration) {
    EventLoop loop(virtual_time());
    std::vector<std::string> order;
    auto body = [&]() -> Coroutine<int> {
        order.push_back("task");
        co_return 1;
    };
    loop.call_soon([&] { order.push_back("callback before"); });
    Task<int> t = loop.create_task(body());
    loop.call_soon([&] { order.push_back("callback after"); });
    EXPECT_EQ(loop.run_until_complete(t), 1);
    EXPECT_EQ(order, (std::vector<std::string>{"callback before", "task", "callback after"}));
}

// ---------------------------------------------------------------------------------------------
// Regressions

TEST_F(AnEventLoop, RegressionCloseLeaksAPendingTaskThatHasADoneCallback) {
    EventLoop loop(virtual_time());
    Reports reports;
    reports.install(loop);
    bool called = false;
    {
        Task<int> t = loop.create_task(sleeps_with(Counted(1), 10s));
        t.add_done_callback([&](Task<int>&) { called = true; });
    }
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();
    loop.close();
    EXPECT_FALSE(called);  // the task never finished
    EXPECT_EQ(Counted::live(), 0);
    EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), 1u);
}

TEST_F(AnEventLoop, RegressionCloseLeaksADoneCallbackThatWasScheduledButNotRun) {
    EventLoop loop(virtual_time());
    bool called = false;
    {
        Task<int> t = loop.create_task(sleeps_with(Counted(1), 1s));
        t.add_done_callback([&](Task<int>&) { called = true; });
        EXPECT_EQ(loop.run_until_complete(t), 1);  // stops before the callback's iteration
    }
    loop.close();
    EXPECT_FALSE(called);
    EXPECT_EQ(Counted::live(), 0);
}

TEST_F(AnEventLoop, RegressionCloseWithTwoWaitersOnOnePendingTaskReadsFreedMemory) {
    // waiter_a registers on `shared` through gather, then waiter_b through co_await. close()
    // destroys the newest task first (waiter_b), then waiter_a's gather unlinks itself from
    // `shared`'s waiters: it must not walk through waiter_b's freed awaiter.
    EventLoop loop(virtual_time());
    Reports reports;
    reports.install(loop);
    {
        Task<int> shared = loop.create_task(value_after(10s, 1));
        auto via_gather = [](Task<int> t) -> Coroutine<int> {
            auto [v] = co_await asyncio::gather(t);
            co_return v;
        };
        loop.create_task(via_gather(shared));
        loop.create_task(awaits(shared));
    }
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();
    loop.close();
    EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), 3u);
}

// ---------------------------------------------------------------------------------------------
// Regressions of reliability issue #7

// (5) time() + delay overflowed for call_later(Duration::max()), and the poll timeout of a timer
// at TimePoint::max() overflowed in the backend's rounding (epoll_wait then blocked for ever).
TEST_F(AnEventLoop, RegressionCallLaterOfTheLargestDurationsIsNeverAndStarvesNoOtherTimer) {
    EventLoop loop(virtual_time());
    bool far_ran = false;
    std::vector<asyncio::TimerHandle> far;
    far.push_back(loop.call_later(asyncio::Duration::max(), [&] { far_ran = true; }));
    far.push_back(loop.call_later(std::chrono::years(1000), [&] { far_ran = true; }));
    far.push_back(loop.call_later(std::chrono::seconds::max(), [&] { far_ran = true; }));
    far.push_back(loop.call_later(std::chrono::duration<double>(1e300), [&] { far_ran = true; }));
    far.push_back(loop.call_at(TimePoint::max(), [&] { far_ran = true; }));
    for (const auto& h : far) EXPECT_EQ(h.when(), TimePoint::max());
    std::vector<asyncio::Duration> seen;
    loop.call_later(1s, [&] { seen.push_back(loop.time() - kStart); });
    loop.call_later(std::chrono::duration<double>(2.5), [&] { seen.push_back(loop.time() - kStart); });
    loop.call_later(3s, [&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(seen, (std::vector<asyncio::Duration>{1s, 2500ms}));
    EXPECT_EQ(loop.time(), kStart + 3s);
    EXPECT_FALSE(far_ran);
    // A virtual clock that reaches the end of time runs them, in scheduling order, and time
    // arithmetic keeps saturating there.
    loop.call_later(std::chrono::years(2000), [&] { loop.stop(); });
    loop.run_forever();
    EXPECT_TRUE(far_ran);
    EXPECT_EQ(loop.time(), TimePoint::max());
    EXPECT_EQ(loop.call_later(1s, [] {}).when(), TimePoint::max());
}

TEST_F(AnEventLoop, RegressionASleepOf200msCompletesOnTheRealClockWithACallLaterOfDurationMaxPending) {
    // The real clock: the loop blocks in epoll_wait. A watchdog thread stops the loop if the
    // sleep has not completed after 30 s (a hang would otherwise be for ever); no tight timing.
    EventLoop loop;
    bool far_ran = false;
    loop.call_later(asyncio::Duration::max(), [&] { far_ran = true; });
    loop.call_at(TimePoint::max(), [&] { far_ran = true; });
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    std::thread watchdog([&] {
        std::unique_lock lock(m);
        if (!cv.wait_for(lock, 30s, [&] { return done; })) loop.call_soon_threadsafe([&] { loop.stop(); });
    });
    const auto t0 = std::chrono::steady_clock::now();
    bool completed = false;
    try {
        loop.run_until_complete([](bool& completed) -> Coroutine<> {
            co_await asyncio::sleep(200ms);
            completed = true;
        }(completed));
    } catch (const RuntimeError&) {
        // stopped by the watchdog: completed stays false
    }
    const auto took = std::chrono::steady_clock::now() - t0;
    {
        std::lock_guard lock(m);
        done = true;
    }
    cv.notify_all();
    watchdog.join();
    EXPECT_TRUE(completed);
    EXPECT_GE(took, 200ms);
    EXPECT_FALSE(far_ran);
}

// (7b) call_soon_threadsafe touched ts_pending_ and the backend (wake-up) after unlocking its
// mutex, so a caller whose callback had already run could still be inside when the loop was
// closed and destroyed. Now close() waits for the callers inside. Every call either runs its
// callback once, or throws RuntimeError, or (accepted after the last iteration) is dropped by
// close(), which says how many in debug mode; the loop is destroyed as soon as every call is
// accounted for, without waiting for the producer threads to return. Run under ASan and TSan.
TEST_F(AnEventLoop, RegressionCloseReturnsWhileACallSoonThreadsafeCallerIsStillInside) {
    constexpr int kThreads = 4;
    constexpr int kPerThread = 200;
    constexpr int kTotal = kThreads * kPerThread;
    constexpr int kRounds = 60;
    struct Round {
        std::atomic<int> runs[kTotal] = {};
        std::atomic<bool> threw[kTotal] = {};
        std::atomic<bool> dropped[kTotal] = {};
        std::atomic<int> resolved{0};
        std::atomic<int> ran{0};
        std::thread::id loop_thread = std::this_thread::get_id();
        EventLoop* loop = nullptr;
        int stop_at = 0;
    };
    // The callback: runs once, or is destroyed unrun (by close() on the loop thread: dropped; by
    // the refused call on the producer thread: counted by the producer's catch).
    struct Probe {
        Round* r;
        int id;
        bool ran = false;
        Probe(Round* round, int i) : r(round), id(i) {}
        Probe(Probe&& o) noexcept : r(std::exchange(o.r, nullptr)), id(o.id), ran(o.ran) {}
        Probe& operator=(Probe&&) = delete;
        void operator()() {
            ran = true;
            if (r->runs[id].fetch_add(1) == 0) r->resolved.fetch_add(1);
            if (r->ran.fetch_add(1) + 1 == r->stop_at) r->loop->stop();
        }
        ~Probe() {
            if (r == nullptr || ran || std::this_thread::get_id() != r->loop_thread) return;
            r->dropped[id] = true;
            r->resolved.fetch_add(1);
        }
    };
    std::size_t reported_drops = 0;
    int total_dropped = 0, total_threw = 0, total_ran = 0;
    for (int round = 0; round < kRounds; ++round) {
        auto r = std::make_unique<Round>();
        auto loop = std::make_unique<EventLoop>();
        loop->set_debug(true);
        Reports reports;
        reports.install(*loop);
        r->loop = loop.get();
        r->stop_at = 1 + (round * 97) % kTotal;  // stop early in some rounds, late in others
        std::vector<std::thread> producers;
        for (int t = 0; t < kThreads; ++t) {
            producers.emplace_back([&r, &loop, t] {
                EventLoop* l = loop.get();  // read before the loop may be destroyed
                for (int i = 0; i < kPerThread; ++i) {
                    const int id = t * kPerThread + i;
                    try {
                        l->call_soon_threadsafe(Probe(r.get(), id));
                    } catch (const RuntimeError&) {
                        r->threw[id] = true;
                        r->resolved.fetch_add(1);
                    }
                }
            });
        }
        loop->run_forever();
        loop->close();
        while (r->resolved.load() < kTotal) std::this_thread::yield();
        // Every call is accounted for; the callers whose callbacks ran or were dropped may still
        // be returning: close() promised they are out of the loop.
        for (std::size_t i = 0; i < reports.size(); ++i) {
            const std::string& m = reports.entries()[i].message;
            const auto at = m.find("dropped ");
            if (at != std::string::npos) reported_drops += std::stoul(m.substr(at + 8));
        }
        loop.reset();
        for (auto& p : producers) p.join();
        int dropped = 0;
        for (int id = 0; id < kTotal; ++id) {
            const int runs = r->runs[id].load();
            const int outcomes = runs + int(r->threw[id].load()) + int(r->dropped[id].load());
            ASSERT_EQ(outcomes, 1) << "call " << id << " of round " << round << ": runs " << runs;
            dropped += r->dropped[id].load();
            total_threw += r->threw[id].load();
        }
        total_dropped += dropped;
        total_ran += r->ran.load();
    }
    EXPECT_EQ(reported_drops, static_cast<std::size_t>(total_dropped));
    EXPECT_EQ(total_ran + total_threw + total_dropped, kRounds * kTotal);
}

// (7e) Callbacks that call_soon_threadsafe accepted after the loop's last iteration are dropped
// by close(): silently by default (as Python), reported with their count in debug mode.
TEST_F(AnEventLoop, RegressionCloseDropsLateCallSoonThreadsafeCallbacksAndSaysHowManyInDebugMode) {
    for (const bool debug : {true, false}) {
        EventLoop loop(virtual_time());
        Reports reports;
        reports.install(loop);
        loop.set_debug(debug);
        EXPECT_EQ(loop.get_debug(), debug);
        bool ran = false;
        loop.call_soon_threadsafe([&] { loop.stop(); });
        loop.run_forever();
        std::thread late([&] {
            for (int i = 0; i < 3; ++i) loop.call_soon_threadsafe([c = Counted(i), &ran] { ran = true; });
        });
        late.join();
        loop.close();
        EXPECT_FALSE(ran);
        if (debug) {
            ASSERT_EQ(reports.size(), 1u);
            EXPECT_NE(reports.entries()[0].message.find("dropped 3 callback"), std::string::npos)
                << reports.entries()[0].message;
        } else {
            EXPECT_EQ(reports.size(), 0u);
        }
    }
}

TEST_F(AnEventLoop, RegressionDebugModeFollowsAsyncioDebugAtConstruction) {
    const char* saved = std::getenv("ASYNCIO_DEBUG");
    const std::string saved_value = saved != nullptr ? saved : "";
    ::setenv("ASYNCIO_DEBUG", "1", 1);
    EXPECT_TRUE(EventLoop(virtual_time()).get_debug());
    ::setenv("ASYNCIO_DEBUG", "", 1);
    EXPECT_FALSE(EventLoop(virtual_time()).get_debug());
    ::unsetenv("ASYNCIO_DEBUG");
    EventLoop loop(virtual_time());
    EXPECT_FALSE(loop.get_debug());
    loop.set_debug(true);
    EXPECT_TRUE(loop.get_debug());
    if (saved != nullptr) ::setenv("ASYNCIO_DEBUG", saved_value.c_str(), 1);
}

// ---------------------------------------------------------------------------------------------
// The I/O backend: chosen when the loop is made, from ASYNCIO_BACKEND (select_backend.cpp)

/// Sets ASYNCIO_BACKEND for the scope of one test and puts the old value back.
class BackendEnv {
public:
    explicit BackendEnv(const char* value) {
        const char* old = std::getenv("ASYNCIO_BACKEND");
        had_ = old != nullptr;
        if (had_) old_ = old;
        if (value != nullptr)
            ::setenv("ASYNCIO_BACKEND", value, 1);
        else
            ::unsetenv("ASYNCIO_BACKEND");
    }
    ~BackendEnv() {
        if (had_)
            ::setenv("ASYNCIO_BACKEND", old_.c_str(), 1);
        else
            ::unsetenv("ASYNCIO_BACKEND");
    }
    BackendEnv(const BackendEnv&) = delete;
    BackendEnv& operator=(const BackendEnv&) = delete;

private:
    bool had_ = false;
    std::string old_;
};

/// Whether this machine can set up an io_uring at all (the library may still lack the backend).
bool kernel_has_io_uring() {
    try {
        BackendEnv env("io_uring");
        EventLoop loop(virtual_time());
        return std::string(loop.backend_name()) == "io_uring";
    } catch (const std::system_error&) {
        return false;
    }
}

TEST_F(AnEventLoop, ReportsTheBackendItRunsOn) {
    // CTest runs the suite once per backend with ASYNCIO_BACKEND set: each run is on the one asked.
    const char* asked = std::getenv("ASYNCIO_BACKEND");
    EventLoop loop(virtual_time());
    const std::string name = loop.backend_name();
    EXPECT_TRUE(name == "epoll" || name == "io_uring") << name;
    if (asked != nullptr && (std::string(asked) == "epoll" || std::string(asked) == "io_uring")) {
        EXPECT_EQ(name, asked);
    }
    {
        BackendEnv env("epoll");
        EXPECT_STREQ(EventLoop(virtual_time()).backend_name(), "epoll");
    }
    {
        // auto (and unset, and empty) takes io_uring wherever it can be set up.
        const bool uring = kernel_has_io_uring();
        for (const char* value : {"auto", "", static_cast<const char*>(nullptr)}) {
            BackendEnv env(value);
            EXPECT_STREQ(EventLoop(virtual_time()).backend_name(), uring ? "io_uring" : "epoll");
        }
    }
}

TEST_F(AnEventLoop, AnUnknownBackendNameIsAValueError) {
    BackendEnv env("kqueue");
    try {
        EventLoop loop(virtual_time());
        ADD_FAILURE() << "made a loop on " << loop.backend_name();
    } catch (const asyncio::ValueError& e) {
        EXPECT_STREQ(e.what(), "ASYNCIO_BACKEND must be 'epoll', 'io_uring' or 'auto', not 'kqueue'");
    }
}

/// In a child process: makes io_uring_setup fail with `err` (a seccomp filter, as container
/// runtimes install), then checks that ASYNCIO_BACKEND=io_uring is a system_error naming the
/// cause and that auto falls back to epoll. Exits 0 when all holds.
[[noreturn]] void check_backend_choice_without_io_uring(int err) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | static_cast<unsigned>(err)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        std::_Exit(2);
    int status = 0;
    try {
        BackendEnv env("io_uring");
        EventLoop loop(virtual_time());
        status = 3;  // made a loop without io_uring
    } catch (const std::system_error& e) {
        const std::string what = e.what();
        if (e.code().value() != err || what.find("io_uring") == std::string::npos) status = 4;
        if (err == ENOSYS && what.find("no io_uring") == std::string::npos) status = 5;
    }
    {
        BackendEnv env("auto");
        if (std::string(EventLoop(virtual_time()).backend_name()) != "epoll") status = 6;
    }
    std::_Exit(status);
}

TEST_F(AnEventLoop, AskingForIoUringWhereItCannotRunIsASystemErrorAndAutoFallsBackToEpoll) {
    if (!kernel_has_io_uring()) GTEST_SKIP() << "no io_uring backend here: nothing to take away";
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(check_backend_choice_without_io_uring(ENOSYS), ::testing::ExitedWithCode(0), "");
    EXPECT_EXIT(check_backend_choice_without_io_uring(EPERM), ::testing::ExitedWithCode(0), "");
}

/// One round trip over a socketpair, with a receive that has to wait.
Coroutine<> round_trip(asyncio::Socket& a, asyncio::Socket& b) {
    Task<std::string> r = asyncio::create_task(
        [](asyncio::Socket& s) -> Coroutine<std::string> { co_return co_await asyncio::sock_recv(s, 10); }(a));
    co_await asyncio::sleep(0s);
    co_await asyncio::sleep(0s);
    co_await asyncio::sock_sendall(b, "ping");
    CO_ASSERT(co_await r == "ping");
}

TEST_F(AnEventLoop, RunsOnAnotherThreadAfterItRanOnThisOne) {
    // Python lets a loop that is not running be run from another thread. (An io_uring ring set up
    // for one issuer is remade for the new thread: nothing of the loop is lost, its reader stays.)
    auto pair = asyncio::socketpair();
    asyncio::Socket a = std::move(pair.first);
    asyncio::Socket b = std::move(pair.second);
    auto watched = asyncio::socketpair();
    int reader_calls = 0;
    EventLoop loop;
    loop.add_reader(watched.first.fileno(), [&] {
        char c;
        if (::recv(watched.first.fileno(), &c, 1, 0) == 1) ++reader_calls;
    });
    loop.run_until_complete(round_trip(a, b));
    std::thread other([&] {
        loop.run_until_complete(round_trip(a, b));
        ASSERT_EQ(::send(watched.second.fileno(), "x", 1, MSG_NOSIGNAL), 1);
        loop.run_until_complete([](int& calls) -> Coroutine<> {
            for (int i = 0; i < 1000 && calls == 0; ++i) co_await asyncio::sleep(1ms);
        }(reader_calls));
    });
    other.join();
    EXPECT_EQ(reader_calls, 1);
    loop.run_until_complete(round_trip(a, b));  // and back
    EXPECT_TRUE(loop.remove_reader(watched.first.fileno()));
}

TEST(EventLoopThreads, RegressionALoopMappedWhereAFinishedThreadsLoopWasIsNoRaceForTsan) {
    // liburing maps its rings with syscalls TSan does not see: a ring mapped at the address a
    // finished thread's ring had looked like a race with that thread's writes (CI, TSan, twice
    // loops on two threads). The threads here share no lock, only a relaxed flag, so nothing but
    // the backend's own annotation orders the second ring after the first.
    std::atomic<bool> first_done{false};
    std::thread first([&] {
        auto pair = asyncio::socketpair();
        EventLoop loop;
        loop.run_until_complete(round_trip(pair.first, pair.second));
        loop.close();
    });
    std::thread second([&] {
        while (!first_done.load(std::memory_order_relaxed)) std::this_thread::sleep_for(1ms);
        for (int i = 0; i < 3; ++i) {
            auto pair = asyncio::socketpair();
            EventLoop loop;
            loop.run_until_complete(round_trip(pair.first, pair.second));
        }
    });
    first.join();  // (the flag is set after the first thread's loop is gone)
    first_done.store(true, std::memory_order_relaxed);
    second.join();
}

}  // namespace
