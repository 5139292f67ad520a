// asyncio::Semaphore / BoundedSemaphore: permits, FIFO hand-off without barging, errors, RAII
// guards, and cancellation (in the queue, after being handed a permit), with 1000 seeded random
// schedules that check that no permit is lost or duplicated. Virtual time; no frame may leak.
#include "asyncio/semaphore.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::BoundedSemaphore;
using asyncio::CancelledError;
using asyncio::Coroutine;
using asyncio::Semaphore;
using asyncio::SemaphoreGuard;
using asyncio::Task;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class ASemaphore : public asyncio_test::LeakChecked {};
class ABoundedSemaphore : public asyncio_test::LeakChecked {};
class SemaphoreCancellation : public asyncio_test::LeakChecked {};
class ASemaphoreGuard : public asyncio_test::LeakChecked {};

using asyncio_test::run_virtual;

using asyncio_test::yields;

using asyncio_test::sets;

Coroutine<> holder(Semaphore& sem, std::vector<int>& log, int id, int hold = 0) {
    co_await sem.acquire();
    log.push_back(id);
    co_await yields(hold);
    sem.release();
}

/// Takes every free permit without waiting; returns how many there were.
Coroutine<int> drain(Semaphore& sem) {
    int n = 0;
    while (!sem.locked()) {
        co_await sem.acquire();
        ++n;
    }
    co_return n;
}

// ---------------------------------------------------------------------------------------------
// Basics

TEST_F(ASemaphore, RejectsANegativeInitialValue) {
    try {
        Semaphore s(-1);
        FAIL() << "no exception";
    } catch (const asyncio::ValueError& e) {
        EXPECT_STREQ(e.what(), "Semaphore initial value must be >= 0");
    }
    EXPECT_THROW(BoundedSemaphore(-3), asyncio::ValueError);
    Semaphore zero(0);
    EXPECT_TRUE(zero.locked());
}

TEST_F(ASemaphore, HasOnePermitByDefault) {
    run_virtual([]() -> Coroutine<> {
        Semaphore sem;
        EXPECT_FALSE(sem.locked());
        EXPECT_EQ(co_await drain(sem), 1);
        sem.release();
    }());
}

TEST_F(ASemaphore, HandsOutItsPermitsWithoutSuspending) {
    run_virtual([]() -> Coroutine<> {
        Semaphore sem(3);
        bool other_ran = false;
        Task<> other = asyncio::create_task(sets(other_ran));
        for (int i = 0; i < 3; ++i) {
            EXPECT_FALSE(sem.locked());
            co_await sem.acquire();
        }
        EXPECT_FALSE(other_ran) << "an available permit must not yield to the loop";
        EXPECT_TRUE(sem.locked());
        for (int i = 0; i < 3; ++i) sem.release();
        EXPECT_EQ(co_await drain(sem), 3);
        for (int i = 0; i < 3; ++i) sem.release();
        co_await other;
    }());
}

TEST_F(ASemaphore, AnUnboundedSemaphoreMayBeReleasedAboveItsInitialValue) {
    run_virtual([]() -> Coroutine<> {
        Semaphore sem(0);
        sem.release();
        sem.release();
        EXPECT_EQ(co_await drain(sem), 2);
    }());
}

TEST_F(ASemaphore, ZeroPermitsMakeAcquireWaitForARelease) {
    run_virtual([]() -> Coroutine<> {
        Semaphore sem(0);
        std::vector<int> log;
        Task<> t = asyncio::create_task(holder(sem, log, 1));
        co_await yields(3);
        EXPECT_TRUE(log.empty());
        sem.release();
        EXPECT_TRUE(sem.locked()) << "the permit went straight to the waiter";
        co_await t;
        EXPECT_EQ(log, std::vector<int>{1});
        EXPECT_EQ(co_await drain(sem), 1);
    }());
}

TEST_F(ASemaphore, ServesOneHundredWaitersInArrivalOrder) {
    for (int k : {1, 3}) {
        SCOPED_TRACE("k=" + std::to_string(k));
        run_virtual([](int permits) -> Coroutine<> {
            Semaphore sem(permits);
            std::vector<int> log;
            co_await drain(sem);
            std::vector<Task<>> tasks;
            for (int i = 0; i < 100; ++i)
                tasks.push_back(asyncio::create_task(holder(sem, log, i, i % 4)));
            co_await asyncio::sleep(0s);
            for (int i = 0; i < permits; ++i) sem.release();
            for (auto& t : tasks) co_await t;
            std::vector<int> expected;
            for (int i = 0; i < 100; ++i) expected.push_back(i);
            EXPECT_EQ(log, expected);
            EXPECT_EQ(co_await drain(sem), permits);
        }(k));
    }
}

TEST_F(ASemaphore, ReleaseHandsThePermitToTheFirstWaiterSoNobodyBarges) {
    run_virtual([]() -> Coroutine<> {
        Semaphore sem(1);
        std::vector<int> log;
        co_await sem.acquire();
        Task<> b = asyncio::create_task(holder(sem, log, 1));
        co_await asyncio::sleep(0s);
        sem.release();
        EXPECT_TRUE(sem.locked());
        co_await sem.acquire();  // queues behind b
        log.push_back(0);
        sem.release();
        co_await b;
        EXPECT_EQ(log, (std::vector<int>{1, 0}));
        EXPECT_EQ(co_await drain(sem), 1);
    }());
}

Coroutine<> arrive_then_hold(Semaphore& sem, std::vector<int>& log, int id) {
    co_await sem.acquire();
    log.push_back(id);
    sem.release();
}

TEST_F(ASemaphore, ANewcomerArrivingBeforeAWokenWaiterRunsQueuesBehindIt) {
    // Python's FIFO rule: while a waiter that was handed a permit has not run, locked() is true
    // even with a free permit, and a newcomer queues behind it, so acquire() calls complete in
    // the order they were made.
    run_virtual([]() -> Coroutine<> {
        Semaphore sem(2);
        std::vector<int> log;
        co_await drain(sem);
        Task<> w = asyncio::create_task(holder(sem, log, 1));
        co_await asyncio::sleep(0s);  // w waits
        sem.release();                // handed to w (not run yet)
        sem.release();                // one permit free
        EXPECT_TRUE(sem.locked());
        co_await arrive_then_hold(sem, log, 0);  // main arrives now: must queue behind w
        EXPECT_EQ(log, (std::vector<int>{1, 0}));
        co_await w;
        EXPECT_EQ(co_await drain(sem), 2);
    }());
}

// ---------------------------------------------------------------------------------------------
// BoundedSemaphore

TEST_F(ABoundedSemaphore, RaisesValueErrorWhenReleasedTooManyTimes) {
    run_virtual([]() -> Coroutine<> {
        BoundedSemaphore sem(2);
        try {
            sem.release();
            ADD_FAILURE() << "no exception";
        } catch (const asyncio::ValueError& e) {
            EXPECT_STREQ(e.what(), "BoundedSemaphore released too many times");
        }
        co_await sem.acquire();
        sem.release();
        EXPECT_THROW(sem.release(), asyncio::ValueError);
        EXPECT_EQ(co_await drain(sem), 2) << "a refused release changes nothing";
        sem.release();
        sem.release();
        EXPECT_THROW(sem.release(), asyncio::ValueError);
    }());
}

TEST_F(ABoundedSemaphore, AGrantedButCancelledWaiterGivesThePermitBackWithinTheBound) {
    run_virtual([]() -> Coroutine<> {
        BoundedSemaphore sem(1);
        std::vector<int> log;
        co_await sem.acquire();
        Task<> b = asyncio::create_task(holder(sem, log, 1));
        co_await asyncio::sleep(0s);
        sem.release();
        b.cancel();
        EXPECT_THROW(co_await b, CancelledError);
        EXPECT_FALSE(sem.locked());
        EXPECT_THROW(sem.release(), asyncio::ValueError) << "the permit came back exactly once";
        EXPECT_EQ(co_await drain(sem), 1);
        sem.release();
    }());
}

// ---------------------------------------------------------------------------------------------
// Cancellation

TEST_F(SemaphoreCancellation, AQueuedWaiterLeavesTheQueueAndTakesNoPermit) {
    run_virtual([]() -> Coroutine<> {
        Semaphore sem(1);
        std::vector<int> log;
        co_await sem.acquire();
        Task<> b = asyncio::create_task(holder(sem, log, 1));
        Task<> c = asyncio::create_task(holder(sem, log, 2));
        co_await asyncio::sleep(0s);
        b.cancel();
        EXPECT_THROW(co_await b, CancelledError);
        EXPECT_TRUE(sem.locked());
        sem.release();
        co_await c;
        EXPECT_EQ(log, std::vector<int>{2});
        EXPECT_EQ(co_await drain(sem), 1);
    }());
}

TEST_F(SemaphoreCancellation, AWaiterHandedAPermitButCancelledBeforeItRunsPassesItOn) {
    run_virtual([]() -> Coroutine<> {
        Semaphore sem(2);
        std::vector<int> log;
        co_await drain(sem);  // main is A, holding both permits
        Task<> b = asyncio::create_task(holder(sem, log, 1));
        Task<> c = asyncio::create_task(holder(sem, log, 2, 2));
        Task<> d = asyncio::create_task(holder(sem, log, 3, 2));
        co_await asyncio::sleep(0s);
        sem.release();  // handed to b...
        b.cancel();     // ...which is cancelled before it runs
        EXPECT_TRUE(sem.locked());
        EXPECT_THROW(co_await b, CancelledError);
        co_await asyncio::sleep(0s);
        EXPECT_EQ(log, std::vector<int>{2}) << "b's permit went to c";
        sem.release();
        co_await c;
        co_await d;
        EXPECT_EQ(log, (std::vector<int>{2, 3}));
        EXPECT_EQ(co_await drain(sem), 2);
    }());
}

// Random schedules: `n` tasks arrive at random moments at a Semaphore(k) (bounded, so that a
// duplicated permit raises), hold their permit (with a guard) for a while, and are cancelled at
// random moments, including right after a release handed them a permit. Survivors must get their
// permit in arrival order, never more than k at once, and at the end all k permits are free.
struct Schedule {
    enum State : std::uint8_t { kNew, kWaiting, kHolding, kDone, kCancelled };
    std::vector<State> state;
    std::vector<int> arrivals;
    std::vector<int> acquired;
    int holders = 0;
    int max_holders = 0;
};

Coroutine<> worker(Semaphore& sem, Schedule& s, int id, int delay, int hold) {
    co_await yields(delay);
    s.state[static_cast<std::size_t>(id)] = Schedule::kWaiting;
    s.arrivals.push_back(id);
    try {
        auto guard = co_await sem.lock();
        s.state[static_cast<std::size_t>(id)] = Schedule::kHolding;
        s.acquired.push_back(id);
        s.max_holders = std::max(s.max_holders, ++s.holders);
        co_await yields(hold);
        --s.holders;
        s.state[static_cast<std::size_t>(id)] = Schedule::kDone;
    } catch (const CancelledError&) {
        if (s.state[static_cast<std::size_t>(id)] == Schedule::kHolding) --s.holders;
        s.state[static_cast<std::size_t>(id)] = Schedule::kCancelled;
        throw;
    }
}

Coroutine<> schedule(std::uint32_t seed) {
    std::mt19937 rng(seed);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const int k = pick(1, 4);
    const int n = pick(k + 1, 30);
    BoundedSemaphore sem(k);
    Schedule s;
    s.state.assign(static_cast<std::size_t>(n), Schedule::kNew);
    std::vector<SemaphoreGuard> mine;  // permits the driver holds back, released at random
    for (int i = pick(0, k); i > 0; --i) mine.push_back(co_await sem.lock());
    std::vector<Task<>> tasks;
    std::vector<bool> cancelled(static_cast<std::size_t>(n), false);
    for (int i = 0; i < n; ++i)
        tasks.push_back(asyncio::create_task(worker(sem, s, i, pick(0, 8), pick(0, 4))));
    auto cancel = [&](int i) {
        if (tasks[static_cast<std::size_t>(i)].cancel()) cancelled[static_cast<std::size_t>(i)] = true;
    };
    for (int step = 0; step < 300; ++step) {
        bool all_done = true;
        for (auto& t : tasks) all_done = all_done && t.done();
        if (all_done) break;
        const int r = pick(0, 9);
        if (r <= 1 && !mine.empty()) {
            mine.pop_back();  // releases: hands the permit to the first waiter, if any
            if (pick(0, 1) == 1) {
                // Cancel the waiter that was just handed the permit, before it runs.
                for (int i : s.arrivals) {
                    if (s.state[static_cast<std::size_t>(i)] == Schedule::kWaiting &&
                        !cancelled[static_cast<std::size_t>(i)]) {
                        cancel(i);
                        break;
                    }
                }
            }
        } else if (r <= 3) {
            cancel(pick(0, n - 1));
        } else {
            co_await asyncio::sleep(0s);
        }
    }
    mine.clear();
    // Everybody must finish now; one that does not is deadlocked (a lost hand-off).
    for (int i = 0; i < 1000; ++i) {
        bool all_done = true;
        for (auto& t : tasks) all_done = all_done && t.done();
        if (all_done) break;
        co_await asyncio::sleep(1ms);
    }
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (!tasks[i].done()) {
            ADD_FAILURE() << "task " << i << " never finished: deadlock";
            tasks[i].cancel();
        }
        try {
            co_await tasks[i];
            EXPECT_FALSE(cancelled[i]) << "task " << i << " was cancelled but finished normally";
        } catch (const CancelledError&) {
            EXPECT_TRUE(cancelled[i]) << "task " << i << " raised CancelledError uncancelled";
        }
    }
    EXPECT_LE(s.max_holders, k);
    EXPECT_EQ(s.holders, 0);
    std::vector<int> order;
    for (int id : s.arrivals)
        if (s.state[static_cast<std::size_t>(id)] == Schedule::kDone) order.push_back(id);
    std::vector<int> got;
    for (int id : s.acquired)
        if (s.state[static_cast<std::size_t>(id)] == Schedule::kDone) got.push_back(id);
    EXPECT_EQ(got, order) << "survivors must acquire in arrival order";
    for (int i = 0; i < n; ++i) {
        if (!cancelled[static_cast<std::size_t>(i)]) {
            EXPECT_EQ(s.state[static_cast<std::size_t>(i)], Schedule::kDone) << "task " << i;
        }
    }
    // Every permit is accounted for: exactly k are free, and the bound refuses one more.
    EXPECT_EQ(co_await drain(sem), k);
    for (int i = 0; i < k; ++i) sem.release();
    EXPECT_THROW(sem.release(), asyncio::ValueError);
}

TEST_F(SemaphoreCancellation, ThousandRandomSchedulesLoseNoPermitAndKeepArrivalOrder) {
    for (std::uint32_t seed = 1; seed <= 1000; ++seed) {
        SCOPED_TRACE("seed=" + std::to_string(seed));
        run_virtual(schedule(seed));
        if (HasFailure()) {
            ADD_FAILURE() << "first failing seed: " << seed;
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Guards

TEST_F(ASemaphoreGuard, ReleasesOnScopeExit) {
    run_virtual([]() -> Coroutine<> {
        Semaphore sem(2);
        {
            SemaphoreGuard a = co_await sem.lock();
            SemaphoreGuard b = co_await sem.lock();
            EXPECT_TRUE(a.owns_lock());
            EXPECT_TRUE(sem.locked());
        }
        EXPECT_EQ(co_await drain(sem), 2);
        sem.release();
        sem.release();
    }());
}

Coroutine<> throws_holding(Semaphore& sem) {
    auto g = co_await sem.lock();
    co_await asyncio::sleep(1s);
    throw std::runtime_error("boom");
}

TEST_F(ASemaphoreGuard, ReleasesWhenAnExceptionPropagatesOrTheHolderIsCancelled) {
    run_virtual([]() -> Coroutine<> {
        Semaphore sem(1);
        std::vector<int> log;
        Task<> a = asyncio::create_task(throws_holding(sem));
        Task<> b = asyncio::create_task(holder(sem, log, 1));
        EXPECT_THROW(co_await a, std::runtime_error);
        co_await b;
        Task<> c = asyncio::create_task(throws_holding(sem));
        Task<> d = asyncio::create_task(holder(sem, log, 2));
        co_await asyncio::sleep(0s);
        c.cancel();  // while it holds the permit and sleeps
        EXPECT_THROW(co_await c, CancelledError);
        co_await d;
        EXPECT_EQ(log, (std::vector<int>{1, 2}));
        EXPECT_EQ(co_await drain(sem), 1);
        sem.release();
    }());
}

TEST_F(ASemaphoreGuard, MovesAndUnlocksEarlyAndNeverOverReleasesABoundedSemaphore) {
    run_virtual([]() -> Coroutine<> {
        BoundedSemaphore sem(1);
        SemaphoreGuard outer;
        EXPECT_FALSE(outer.owns_lock());
        {
            SemaphoreGuard g = co_await sem.lock();
            outer = std::move(g);
        }
        EXPECT_TRUE(sem.locked());
        outer.unlock();
        EXPECT_FALSE(outer.owns_lock());
        EXPECT_FALSE(sem.locked());
        co_await sem.acquire();
        {
            SemaphoreGuard adopted(sem, std::adopt_lock);
            sem.release();  // misuse: released behind the guard's back
        }  // the guard's release would exceed the bound: skipped, no exception
        EXPECT_EQ(co_await drain(sem), 1);
        sem.release();
    }());
}

TEST_F(ASemaphore, RegressionReleaseFromAPlainThreadMovedTheCountBeforeRefusing) {
    // A release() from a plain thread, with a waiter of the running loop, raised RuntimeError only
    // after it had counted the permit (the value went up, and the waiter was never woken). Now it
    // refuses first: nothing changes, and a release on the loop's thread then serves the waiter.
    std::string text;
    asyncio::run([](std::string& out) -> Coroutine<> {
        Semaphore sem(0);
        Task<> waiter = asyncio::create_task([](Semaphore& s) -> Coroutine<> { co_await s.acquire(); }(sem));
        co_await asyncio::sleep(0s);
        std::thread other([&] {
            try {
                sem.release();
            } catch (const asyncio::RuntimeError& e) {
                out = e.what();
            }
        });
        other.join();
        EXPECT_TRUE(sem.locked());
        sem.release();
        co_await waiter;
        EXPECT_TRUE(sem.locked());  // the permit went to the waiter, none is left over
    }(text));
    EXPECT_EQ(text, "Semaphore.release(): Non-thread-safe operation invoked on an event loop other than the current one");
}

}  // namespace
