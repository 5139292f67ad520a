// asyncio::to_thread, loop.run_in_executor and ThreadPoolExecutor: results and exceptions come
// back to the loop's thread, the pool is bounded, cancellation leaves the function running and
// drops its result safely, and no thread outlives the loop.
#include "asyncio/executor.hpp"

#include <gtest/gtest.h>

#include <dirent.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::Coroutine;
using asyncio::EventLoop;
using asyncio::Task;
using asyncio::ThreadPoolExecutor;
using asyncio_test::Counted;
using namespace std::chrono_literals;

class AnExecutor : public asyncio_test::LeakChecked {};

using asyncio_test::thread_count;
using asyncio_test::thread_count_settled;

/// A one-shot gate threads can wait on.
class Gate {
public:
    void open() {
        {
            std::lock_guard lock(m_);
            open_ = true;
        }
        cv_.notify_all();
    }
    void wait() {
        std::unique_lock lock(m_);
        cv_.wait(lock, [this] { return open_; });
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    bool open_ = false;
};

TEST_F(AnExecutor, ToThreadReturnsTheResultOnTheLoopThread) {
    const auto loop_thread = std::this_thread::get_id();
    asyncio::run([](std::thread::id loop_thread) -> Coroutine<> {
        std::thread::id ran_on;
        const int sum = co_await asyncio::to_thread(
            [&ran_on](int a, int b) {
                ran_on = std::this_thread::get_id();
                return a + b;
            },
            2, 3);
        CO_ASSERT(sum == 5);
        CO_ASSERT(ran_on != loop_thread);
        CO_ASSERT(std::this_thread::get_id() == loop_thread);
        // Arguments are decay-copied; results of any movable type; void.
        std::string s = co_await asyncio::to_thread([](std::string x) { return x + "!"; }, std::string("hi"));
        CO_ASSERT(s == "hi!");
        auto up = co_await asyncio::to_thread([] { return std::make_unique<int>(7); });
        CO_ASSERT(*up == 7);
        int touched = 0;
        co_await asyncio::to_thread([](int& t) { t = 1; }, std::ref(touched));
        CO_ASSERT(touched == 1);
    }(loop_thread));
}

TEST_F(AnExecutor, ToThreadRethrowsTheException) {
    asyncio::run([]() -> Coroutine<> {
        try {
            co_await asyncio::to_thread([]() -> int { throw std::runtime_error("from the thread"); });
            ADD_FAILURE() << "no exception";
        } catch (const std::runtime_error& e) {
            CO_ASSERT(std::string(e.what()) == "from the thread");
        }
    }());
}

TEST_F(AnExecutor, RunInExecutorSubmitsAtOnceAndTheLoopKeepsRunning) {
    asyncio::run([]() -> Coroutine<> {
        EventLoop& loop = asyncio::get_running_loop();
        Gate started;
        Gate release;
        auto fut = loop.run_in_executor([&] {
            started.open();
            release.wait();
            return 42;
        });
        started.wait();  // submitted before anything was awaited
        // The loop is free while the function blocks.
        int ticks = 0;
        for (int i = 0; i < 5; ++i) {
            co_await asyncio::sleep(1ms);
            ++ticks;
        }
        CO_ASSERT(!fut.done());
        release.open();
        CO_ASSERT(co_await fut == 42);
        CO_ASSERT(ticks == 5);
        bool threw = false;
        try {
            (void)co_await fut;
        } catch (const asyncio::RuntimeError&) {
            threw = true;
        }
        CO_ASSERT(threw);  // awaited once
    }());
}

TEST_F(AnExecutor, ConcurrentCallsAreBoundedByThePoolSize) {
    std::atomic<int> running{0};
    std::atomic<int> most{0};
    std::size_t threads_used = 0;
    asyncio::run([](std::atomic<int>& running, std::atomic<int>& most, std::size_t& threads_used) -> Coroutine<> {
        std::vector<Coroutine<int>> calls;
        for (int i = 0; i < 60; ++i) {
            calls.push_back(asyncio::to_thread(
                [&running, &most](int v) {
                    const int now = ++running;
                    int seen = most.load();
                    while (now > seen && !most.compare_exchange_weak(seen, now)) {
                    }
                    std::this_thread::sleep_for(5ms);
                    --running;
                    return v * 2;
                },
                i));
        }
        std::vector<int> results = co_await asyncio::gather(std::move(calls));
        for (int i = 0; i < 60; ++i) CO_ASSERT(results[static_cast<std::size_t>(i)] == i * 2);
        threads_used = asyncio::get_running_loop().default_executor().thread_count();
    }(running, most, threads_used));
    const auto bound = static_cast<int>(ThreadPoolExecutor::default_max_workers());
    EXPECT_LE(most.load(), bound);
    EXPECT_GE(most.load(), 2);  // it did run concurrently
    EXPECT_LE(threads_used, static_cast<std::size_t>(bound));
    EXPECT_EQ(bound, std::min(32, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) + 4));
}

TEST_F(AnExecutor, AnExecutorOfOurOwnBoundsItsThreads) {
    std::atomic<int> running{0};
    std::atomic<int> most{0};
    ThreadPoolExecutor pool(2);
    asyncio::run([](ThreadPoolExecutor& pool, std::atomic<int>& running, std::atomic<int>& most) -> Coroutine<> {
        EventLoop& loop = asyncio::get_running_loop();
        std::vector<asyncio::ExecutorFuture<int>> futs;
        for (int i = 0; i < 12; ++i) {
            futs.push_back(loop.run_in_executor(
                pool,
                [&running, &most](int v) {
                    const int now = ++running;
                    int seen = most.load();
                    while (now > seen && !most.compare_exchange_weak(seen, now)) {
                    }
                    std::this_thread::sleep_for(2ms);
                    --running;
                    return v;
                },
                i));
        }
        int total = 0;
        for (auto& f : futs) total += co_await f;
        CO_ASSERT(total == 66);
    }(pool, running, most));
    EXPECT_LE(most.load(), 2);
    EXPECT_EQ(pool.thread_count(), 2u);
    pool.shutdown();
    EXPECT_EQ(pool.thread_count(), 0u);
    EXPECT_THROW(pool.submit([] {}), asyncio::RuntimeError);
}

TEST_F(AnExecutor, CancellingTheAwaiterLeavesTheFunctionRunningAndDropsItsResult) {
    Gate started;
    Gate release;
    std::atomic<bool> finished{false};
    asyncio::run([](Gate& started, Gate& release, std::atomic<bool>& finished) -> Coroutine<> {
        Task<Counted> t = asyncio::create_task(asyncio::to_thread([&] {
            started.open();
            release.wait();
            finished = true;
            return Counted(5);  // dropped: nobody awaits it any more
        }));
        co_await asyncio::sleep(0s);
        started.wait();
        t.cancel();
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        CO_ASSERT(t.done() && t.cancelled());  // at once, while the function still runs
        CO_ASSERT(!finished);
        release.open();
        // The result arrives later and is dropped; the awaiter's frame is long gone.
        for (int i = 0; i < 2000 && !finished; ++i) co_await asyncio::sleep(1ms);
        CO_ASSERT(finished);
        co_await asyncio::sleep(5ms);
    }(started, release, finished));
    EXPECT_TRUE(finished);
    // LeakChecked: the Counted result was destroyed, the frames freed.
}

TEST_F(AnExecutor, ResultOfAFutureNobodyAwaitsIsDropped) {
    asyncio::run([]() -> Coroutine<> {
        EventLoop& loop = asyncio::get_running_loop();
        {
            auto fut = loop.run_in_executor([] { return Counted(1); });
        }  // dropped before the function may even have run
        co_await asyncio::sleep(10ms);
    }());
}

TEST_F(AnExecutor, ThreadsAreJoinedWhenRunEnds) {
    const int before = thread_count();
    int during = 0;
    asyncio::run([](int& during) -> Coroutine<> {
        std::vector<Coroutine<int>> calls;
        for (int i = 0; i < 8; ++i)
            calls.push_back(asyncio::to_thread([] {
                std::this_thread::sleep_for(2ms);
                return 1;
            }));
        co_await asyncio::gather(std::move(calls));
        during = thread_count();
    }(during));
    EXPECT_GT(during, before);
    EXPECT_EQ(thread_count_settled(before), before);
}

TEST_F(AnExecutor, RunWaitsForAFunctionStillRunningWhenMainReturns) {
    // main returns while a function is running: asyncio.run's shutdown cancels the awaiting task,
    // then closing the loop joins the pool (the function finishes, its result is dropped).
    const int before = thread_count();
    std::atomic<bool> finished{false};
    asyncio::run([](std::atomic<bool>& finished) -> Coroutine<> {
        (void)asyncio::create_task(asyncio::to_thread([&finished] {
            std::this_thread::sleep_for(50ms);
            finished = true;
            return Counted(3);
        }));
        co_await asyncio::sleep(1ms);
    }(finished));
    EXPECT_TRUE(finished);
    EXPECT_EQ(thread_count_settled(before), before);
}

TEST_F(AnExecutor, AnExecutorMayOutliveItsLoop) {
    ThreadPoolExecutor pool(1);
    Gate release;
    std::atomic<bool> finished{false};
    {
        EventLoop loop;
        loop.set_exception_handler([](EventLoop&, const asyncio::ExceptionContext&) {});
        loop.run_until_complete([](ThreadPoolExecutor& pool, Gate& release, std::atomic<bool>& finished) -> Coroutine<> {
            EventLoop& loop = asyncio::get_running_loop();
            auto fut = loop.run_in_executor(pool, [&] {
                release.wait();
                finished = true;
                return Counted(9);
            });
            co_await asyncio::sleep(1ms);
        }(pool, release, finished));
    }  // the loop is gone; the function still runs
    release.open();
    pool.shutdown();
    EXPECT_TRUE(finished);
}

TEST_F(AnExecutor, AClosedLoopRefusesWorkAndToThreadCanBeMain) {
    EventLoop loop;
    loop.close();
    EXPECT_THROW((void)loop.run_in_executor([] { return 1; }), asyncio::RuntimeError);
    EXPECT_EQ(asyncio::run(asyncio::to_thread([] { return 1; })), 1);  // to_thread as main
    ThreadPoolExecutor pool(1);
    EXPECT_EQ(pool.thread_count(), 0u);  // threads start lazily
}

// ---- regressions of reliability issue #7, item 7c ----
// shutdown_default_executor joined with no time limit, so a function that never returns hung
// close() and asyncio::run() for ever. Now (as CPython 3.12+) it gives up after a timeout, reports
// a RuntimeWarning to the exception handler and leaves the busy thread running, detached, owning
// what it touches.

TEST_F(AnExecutor, RegressionShutdownDefaultExecutorWaitsForeverForAFunctionThatNeverReturns) {
    int with_worker = 0;  // counted while the worker is stuck (a sanitizer may add a thread first)
    Gate release;
    std::atomic<bool> started{false};
    std::atomic<bool> finished{false};
    {
        auto loop = std::make_unique<EventLoop>(asyncio_test::virtual_time());
        asyncio_test::Reports reports;
        reports.install(*loop);
        loop->run_until_complete([](Gate& release, std::atomic<bool>& started,
                                    std::atomic<bool>& finished) -> Coroutine<> {
            // Started and left running: nobody awaits it.
            (void)asyncio::get_running_loop().run_in_executor([&release, &started, &finished] {
                started = true;
                release.wait();
                finished = true;
                return 1;  // (no Counted: nothing orders its destruction on this thread before the
                           // fixture's check)
            });
            while (!started) co_await asyncio::sleep(1ms);
        }(release, started, finished));
        loop->shutdown_default_executor(50ms);
        ASSERT_EQ(reports.size(), 1u);
        EXPECT_EQ(reports.entries()[0].message,
                  "The executor did not finishing joining its threads within 0.05 seconds.");
        EXPECT_THROW(asyncio_test::rethrow(reports.entries()[0].exception), asyncio::RuntimeWarning);
        EXPECT_FALSE(finished);
        with_worker = thread_count();
        loop->close();  // no default executor left: nothing more to wait for
        EXPECT_EQ(reports.size(), 1u);
    }  // the loop and its executor are gone; the thread still runs the function
    EXPECT_FALSE(finished);
    release.open();
    // It finishes, finds the loop gone (its result is dropped) and ends on its own.
    EXPECT_EQ(thread_count_settled(with_worker - 1, 30s), with_worker - 1);  // 30 s: a safety net
    EXPECT_TRUE(finished);
}

TEST_F(AnExecutor, RegressionAnExecutorShutDownWithATimeoutLeavesItsBusyThreadsWithoutDanglingReferences) {
    const int before = thread_count();
    Gate release;
    std::atomic<int> ran{0};
    {
        ThreadPoolExecutor pool(2);
        pool.submit([&] {
            release.wait();
            ++ran;
        });
        pool.submit([&] { ++ran; });
        pool.submit([&] { ++ran; });  // queued: still runs, on a detached thread
        EXPECT_FALSE(pool.shutdown(20ms));
        EXPECT_EQ(pool.thread_count(), 0u);  // detached
        EXPECT_THROW(pool.submit([] {}), asyncio::RuntimeError);
    }  // destroyed while its threads run
    release.open();
    EXPECT_EQ(thread_count_settled(before, 30s), before);  // 30 s: a safety net
    EXPECT_EQ(ran.load(), 3);
    // A pool whose jobs finish in time joins its threads and says so.
    ThreadPoolExecutor quick(2);
    quick.submit([&] { ++ran; });
    EXPECT_TRUE(quick.shutdown(std::chrono::years(1000)));  // saturated, not overflowed
    EXPECT_EQ(ran.load(), 4);
    EXPECT_EQ(thread_count_settled(before, 30s), before);  // 30 s: a safety net
}

}  // namespace
