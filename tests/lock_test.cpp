// asyncio::Lock: fast path, FIFO hand-off without barging, errors, RAII guards, and cancellation
// (in the queue, after being handed the lock, pending before acquire), with seeded random
// schedules. Every test runs on virtual time and checks that no frame leaked.
#include "asyncio/lock.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/debug.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::CancelledError;
using asyncio::Coroutine;
using asyncio::Lock;
using asyncio::LockGuard;
using asyncio::Task;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class ALock : public asyncio_test::LeakChecked {};
class LockCancellation : public asyncio_test::LeakChecked {};
class ALockGuard : public asyncio_test::LeakChecked {};

using asyncio_test::run_virtual;

using asyncio_test::yields;

using asyncio_test::sets;

/// Acquires, logs its id, holds for `hold` iterations, releases.
Coroutine<> holder(Lock& lock, std::vector<int>& log, int id, int hold = 0) {
    co_await lock.acquire();
    log.push_back(id);
    co_await yields(hold);
    lock.release();
}

/// As holder, with a guard: releases also when cancelled while holding.
Coroutine<> guarded(Lock& lock, std::vector<int>& log, int id, int hold = 0) {
    auto guard = co_await lock.lock();
    log.push_back(id);
    co_await yields(hold);
}

// ---------------------------------------------------------------------------------------------
// Basics

TEST_F(ALock, StartsUnlockedAndAcquiresWithoutSuspending) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        EXPECT_FALSE(lock.locked());
        bool other_ran = false;
        Task<> other = asyncio::create_task(sets(other_ran));
        co_await lock.acquire();  // free: must not yield to the loop
        EXPECT_FALSE(other_ran);
        EXPECT_TRUE(lock.locked());
        lock.release();
        EXPECT_FALSE(lock.locked());
        co_await other;
        EXPECT_TRUE(other_ran);
    }());
}

TEST_F(ALock, ReleaseOfAnUnlockedLockRaisesRuntimeError) {
    Lock lock;
    try {
        lock.release();
        FAIL() << "no exception";
    } catch (const asyncio::RuntimeError& e) {
        EXPECT_STREQ(e.what(), "Lock is not acquired.");
    }
    run_virtual([](Lock& l) -> Coroutine<> {
        co_await l.acquire();
        l.release();
        EXPECT_THROW(l.release(), asyncio::RuntimeError);
        EXPECT_FALSE(l.locked());
    }(lock));
}

asyncio_test::Eager acquire_outside_a_task(std::exception_ptr&, Lock& lock) {
    co_await lock.acquire();
}

TEST_F(ALock, FreeLockCanBeTakenOutsideATaskButWaitingNeedsOne) {
    Lock lock;
    std::exception_ptr error;
    acquire_outside_a_task(error, lock);  // free: no task needed (as in Python, the fast path)
    EXPECT_FALSE(error);
    EXPECT_TRUE(lock.locked());
    acquire_outside_a_task(error, lock);  // would have to wait: RuntimeError, nothing queued
    ASSERT_TRUE(error);
    EXPECT_THROW(std::rethrow_exception(error), asyncio::RuntimeError);
    EXPECT_TRUE(lock.locked());
    lock.release();
    EXPECT_FALSE(lock.locked());
}

TEST_F(ALock, ServesOneHundredWaitersInArrivalOrder) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        co_await lock.acquire();
        std::vector<Task<>> tasks;
        for (int i = 0; i < 100; ++i) tasks.push_back(asyncio::create_task(holder(lock, log, i, i % 3)));
        co_await asyncio::sleep(0s);  // all of them are queued now, in creation order
        EXPECT_TRUE(log.empty());
        lock.release();
        for (auto& t : tasks) co_await t;
        std::vector<int> expected;
        for (int i = 0; i < 100; ++i) expected.push_back(i);
        EXPECT_EQ(log, expected);
        EXPECT_FALSE(lock.locked());
    }());
}

// locked() right after release(): True here, False in asyncio (a documented difference: docs/design.md,
// tests/cpython_scenarios/s8_lock_locked_handoff.py); the order the tasks get the lock is the same.
TEST_F(ALock, ReleaseHandsTheLockToTheFirstWaiterSoNobodyBarges) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        co_await lock.acquire();
        Task<> b = asyncio::create_task(holder(lock, log, 1));
        co_await asyncio::sleep(0s);  // b waits
        lock.release();
        EXPECT_TRUE(lock.locked()) << "handed to b, which has not run yet";
        Task<> c = asyncio::create_task(holder(lock, log, 2));  // will arrive after main
        co_await lock.acquire();  // the releaser at once wants it back: it queues behind b
        log.push_back(0);
        lock.release();
        co_await b;
        co_await c;
        EXPECT_EQ(log, (std::vector<int>{1, 0, 2}));
        EXPECT_FALSE(lock.locked());
    }());
}

TEST_F(ALock, AWaiterIsWokenThroughTheReadyQueue) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        co_await lock.acquire();
        Task<> b = asyncio::create_task(holder(lock, log, 1));
        co_await asyncio::sleep(0s);
        lock.release();
        EXPECT_TRUE(log.empty()) << "b must not run inside release()";
        co_await asyncio::sleep(0s);
        EXPECT_EQ(log, std::vector<int>{1});
        co_await b;
    }());
}

// ---------------------------------------------------------------------------------------------
// Cancellation

TEST_F(LockCancellation, AWaiterHandedTheLockButCancelledBeforeItRunsPassesItOn) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        co_await lock.acquire();  // main is A
        Task<> b = asyncio::create_task(holder(lock, log, 1));
        Task<> c = asyncio::create_task(holder(lock, log, 2));
        co_await asyncio::sleep(0s);
        lock.release();                 // handed to b...
        EXPECT_TRUE(b.cancel("late"));  // ...cancelled in the same iteration, before it runs
        EXPECT_TRUE(lock.locked());
        try {
            co_await b;
            ADD_FAILURE() << "no exception";
        } catch (const CancelledError& e) {
            EXPECT_EQ(e.message(), "late");
        }
        co_await c;  // c gets the lock: no deadlock
        EXPECT_EQ(log, std::vector<int>{2}) << "b never held the lock";
        EXPECT_FALSE(lock.locked());
        co_await lock.acquire();  // and it is free again
        lock.release();
    }());
}

TEST_F(LockCancellation, AGrantedWaiterCancelledWithNobodyBehindUnlocks) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        co_await lock.acquire();
        Task<> b = asyncio::create_task(holder(lock, log, 1));
        co_await asyncio::sleep(0s);
        lock.release();
        b.cancel();
        EXPECT_THROW(co_await b, CancelledError);
        EXPECT_FALSE(lock.locked());
        EXPECT_TRUE(log.empty());
    }());
}

TEST_F(LockCancellation, SeveralGrantedWaitersCancelledInARowPassTheLockAlong) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        co_await lock.acquire();
        std::vector<Task<>> t;
        for (int i = 0; i < 5; ++i) t.push_back(asyncio::create_task(holder(lock, log, i)));
        co_await asyncio::sleep(0s);
        lock.release();
        t[0].cancel();  // granted, cancelled
        t[1].cancel();  // queued, cancelled
        t[2].cancel();  // queued, cancelled
        for (int i = 0; i < 3; ++i) EXPECT_THROW(co_await t[i], CancelledError);
        co_await t[3];
        co_await t[4];
        EXPECT_EQ(log, (std::vector<int>{3, 4}));
        EXPECT_FALSE(lock.locked());
    }());
}

TEST_F(LockCancellation, AGrantedWaiterWhoseCancelIsWithdrawnKeepsTheLock) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        co_await lock.acquire();
        Task<> b = asyncio::create_task(holder(lock, log, 1));
        co_await asyncio::sleep(0s);
        lock.release();
        b.cancel();
        b.uncancel();  // no cancellation pending any more when b runs
        co_await b;
        EXPECT_EQ(log, std::vector<int>{1});
        EXPECT_FALSE(lock.locked());
    }());
}

Coroutine<> self_cancel_then_acquire_free(Lock& lock, int& stage) {
    asyncio::current_task().cancel();
    co_await lock.acquire();  // free: the fast path does not suspend, so no CancelledError yet
    stage = 1;
    try {
        co_await asyncio::sleep(0s);
    } catch (const CancelledError&) {
        stage = 2;
        lock.release();
        throw;
    }
}

TEST_F(LockCancellation, APendingCancelDoesNotStopTheFastPath) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        int stage = 0;
        Task<> b = asyncio::create_task(self_cancel_then_acquire_free(lock, stage));
        EXPECT_THROW(co_await b, CancelledError);
        EXPECT_EQ(stage, 2);
        EXPECT_FALSE(lock.locked());
    }());
}

// Random schedules: tasks arrive at random moments, hold the lock for a while (with a guard), and
// are cancelled at random moments (also right after a release hands them the lock). Mutual
// exclusion must hold, survivors get the lock in arrival order, and the lock ends up free.
struct LockSchedule {
    enum State : std::uint8_t { kNew, kWaiting, kHolding, kDone, kCancelled };
    std::vector<State> state;
    std::vector<int> arrivals;  // ids in the order they called acquire
    std::vector<int> acquired;  // ids in the order they got the lock
    int holders = 0;
    int max_holders = 0;
};

Coroutine<> lock_worker(Lock& lock, LockSchedule& s, int id, int delay, int hold) {
    co_await yields(delay);
    s.state[id] = LockSchedule::kWaiting;
    s.arrivals.push_back(id);
    try {
        auto guard = co_await lock.lock();
        s.state[id] = LockSchedule::kHolding;
        s.acquired.push_back(id);
        s.max_holders = std::max(s.max_holders, ++s.holders);
        co_await yields(hold);
        --s.holders;
        s.state[id] = LockSchedule::kDone;
    } catch (const CancelledError&) {
        if (s.state[id] == LockSchedule::kHolding) --s.holders;
        s.state[id] = LockSchedule::kCancelled;
        throw;
    }
}

Coroutine<> lock_schedule(std::uint32_t seed) {
    std::mt19937 rng(seed);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    Lock lock;
    LockSchedule s;
    const int n = pick(2, 25);
    s.state.assign(static_cast<std::size_t>(n), LockSchedule::kNew);
    std::vector<Task<>> tasks;
    std::vector<bool> cancelled(static_cast<std::size_t>(n), false);
    bool main_holds = pick(0, 1) == 1;
    if (main_holds) co_await lock.acquire();
    for (int i = 0; i < n; ++i)
        tasks.push_back(asyncio::create_task(lock_worker(lock, s, i, pick(0, 6), pick(0, 3))));
    auto cancel = [&](int i) {
        if (tasks[static_cast<std::size_t>(i)].cancel()) cancelled[static_cast<std::size_t>(i)] = true;
    };
    for (int step = 0; step < 200; ++step) {
        bool all_done = true;
        for (auto& t : tasks) all_done = all_done && t.done();
        if (all_done) break;
        const int r = pick(0, 9);
        if (r == 0 && main_holds) {
            main_holds = false;
            lock.release();
            if (pick(0, 1) == 1) {
                // Cancel the waiter that was just handed the lock (the first one waiting).
                for (int i = 0; i < n; ++i) {
                    if (s.state[static_cast<std::size_t>(i)] == LockSchedule::kWaiting &&
                        !cancelled[static_cast<std::size_t>(i)]) {
                        cancel(i);
                        break;
                    }
                }
            }
        } else if (r <= 2) {
            cancel(pick(0, n - 1));
        } else {
            co_await asyncio::sleep(0s);
        }
    }
    if (main_holds) lock.release();
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
    EXPECT_LE(s.max_holders, 1);
    EXPECT_EQ(s.holders, 0);
    // Survivors acquired in arrival order.
    std::vector<int> order;
    for (int id : s.arrivals)
        if (s.state[static_cast<std::size_t>(id)] == LockSchedule::kDone) order.push_back(id);
    std::vector<int> got;
    for (int id : s.acquired)
        if (s.state[static_cast<std::size_t>(id)] == LockSchedule::kDone) got.push_back(id);
    EXPECT_EQ(got, order);
    for (int i = 0; i < n; ++i) {
        const auto st = s.state[static_cast<std::size_t>(i)];
        if (!cancelled[static_cast<std::size_t>(i)]) {
            EXPECT_EQ(st, LockSchedule::kDone) << "task " << i;
        }
    }
    EXPECT_FALSE(lock.locked());
    if (!lock.locked()) {
        co_await lock.acquire();  // free, at once
        lock.release();
    }
}

TEST_F(LockCancellation, RandomSchedulesKeepMutualExclusionAndOrderAndLoseNothing) {
    for (std::uint32_t seed = 1; seed <= 500; ++seed) {
        SCOPED_TRACE("seed=" + std::to_string(seed));
        run_virtual(lock_schedule(seed));
        if (HasFailure()) {
            ADD_FAILURE() << "first failing seed: " << seed;
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Guards

TEST_F(ALockGuard, ReleasesOnScopeExit) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        {
            LockGuard g = co_await lock.lock();
            EXPECT_TRUE(g.owns_lock());
            EXPECT_TRUE(static_cast<bool>(g));
            EXPECT_EQ(g.mutex(), &lock);
            EXPECT_TRUE(lock.locked());
        }
        EXPECT_FALSE(lock.locked());
    }());
}

Coroutine<> throws_holding(Lock& lock) {
    auto g = co_await lock.lock();
    co_await asyncio::sleep(1s);
    throw std::runtime_error("boom");
}

TEST_F(ALockGuard, ReleasesWhenAnExceptionPropagates) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        Task<> a = asyncio::create_task(throws_holding(lock));
        Task<> b = asyncio::create_task(holder(lock, log, 1));
        EXPECT_THROW(co_await a, std::runtime_error);
        co_await b;
        EXPECT_EQ(log, std::vector<int>{1});
        EXPECT_FALSE(lock.locked());
    }());
}

TEST_F(ALockGuard, ReleasesWhenTheHolderIsCancelled) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        Task<> a = asyncio::create_task(guarded(lock, log, 0, 100));
        Task<> b = asyncio::create_task(guarded(lock, log, 1));
        co_await yields(3);
        EXPECT_TRUE(lock.locked());
        a.cancel();
        EXPECT_THROW(co_await a, CancelledError);
        co_await b;
        EXPECT_EQ(log, (std::vector<int>{0, 1}));
        EXPECT_FALSE(lock.locked());
    }());
}

TEST_F(ALockGuard, MovesAndUnlocksEarly) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        LockGuard outer;
        EXPECT_FALSE(outer.owns_lock());
        {
            LockGuard g = co_await lock.lock();
            outer = std::move(g);
            EXPECT_FALSE(g.owns_lock());  // NOLINT(bugprone-use-after-move): moved-from is empty
        }
        EXPECT_TRUE(lock.locked());
        LockGuard moved(std::move(outer));
        EXPECT_TRUE(moved.owns_lock());
        moved.unlock();
        EXPECT_FALSE(moved.owns_lock());
        EXPECT_FALSE(lock.locked());
        moved.unlock();  // no-op
        co_await lock.acquire();
        LockGuard adopted(lock, std::adopt_lock);
        EXPECT_TRUE(adopted.owns_lock());
        adopted = LockGuard();  // releases
        EXPECT_FALSE(lock.locked());
    }());
}

TEST_F(ALockGuard, AGuardWaitingForTheLockCanBeCancelled) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        std::vector<int> log;
        co_await lock.acquire();
        Task<> b = asyncio::create_task(guarded(lock, log, 1));
        co_await asyncio::sleep(0s);
        lock.release();
        b.cancel();  // granted, then cancelled: the guard is never made, the lock is passed on
        EXPECT_THROW(co_await b, CancelledError);
        EXPECT_FALSE(lock.locked());
        EXPECT_TRUE(log.empty());
    }());
}

// A lock that outlives a loop closed while tasks wait on it: the waiters' frames are destroyed
// with the loop and must leave the lock's queue (no dangling nodes for the next user).
TEST(LockLifetime, RegressionWaitersDestroyedWithAClosedLoopLeaveTheQueue) {
    const auto frames = asyncio::debug::live_frames();
    Lock lock;
    {
        asyncio::EventLoop loop(virtual_time());
        loop.set_exception_handler([](asyncio::EventLoop&, const asyncio::ExceptionContext&) {});
        auto holder = [](Lock& l) -> Coroutine<> {
            co_await l.acquire();
            co_await asyncio::sleep(1h);
        };
        auto waiter = [](Lock& l) -> Coroutine<> {
            co_await l.acquire();
            l.release();
        };
        auto main_ = [&]() -> Coroutine<> {
            auto h = asyncio::create_task(holder(lock));
            auto w1 = asyncio::create_task(waiter(lock));
            auto w2 = asyncio::create_task(waiter(lock));
            co_await asyncio::sleep(1s);  // both waiters are queued now
        };
        loop.run_until_complete(main_());
        loop.close();  // destroys the holder and both queued waiters
    }
    EXPECT_EQ(asyncio::debug::live_frames(), frames);
    // The queue is empty again: a fresh loop can use the lock (still held by the destroyed holder,
    // as asyncio's would be), release it and take it.
    EXPECT_TRUE(lock.locked());
    lock.release();
    auto main_ = [](Lock& l) -> Coroutine<int> {
        co_await l.acquire();
        l.release();
        co_return 1;
    };
    EXPECT_EQ(asyncio::run(main_(lock), virtual_time()), 1);
}

}  // namespace

// Reliability issue #7 (3): a task parked here, its loop destroyed, its last handle dropped
// afterwards: the frame's destruction must not touch the dead loop (ASan: heap-use-after-free).
namespace {
using asyncio_test::destroy_loop_then_task;

TEST_F(ALock, RegressionTaskHandleOutlivingItsLoopWhileParkedInLockAcquire) {
    Lock lock;  // outlives both
    destroy_loop_then_task([&](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([](Lock& l) -> asyncio::Coroutine<> {
            co_await l.acquire();  // free: taken at once
            co_await l.acquire();  // held (by this task): parked
        }(lock));
    });
}
}  // namespace

namespace {

// A task left waiting for a Lock when its loop closed (its frame kept by a Task handle) no longer
// waits: releasing the lock afterwards unlocks it instead of handing it to a task that will
// never run (and scheduling that task on whatever loop runs), so another loop can take it.
TEST_F(ALock, RegressionAWaiterOfAClosedLoopIsNotHandedTheLockLater) {
    asyncio::Lock lock;
    asyncio::Task<> parked;
    {
        asyncio::EventLoop loop(asyncio_test::virtual_time());
        loop.set_exception_handler([](asyncio::EventLoop&, const asyncio::ExceptionContext&) {});
        loop.run_until_complete([](asyncio::Lock& lock) -> asyncio::Coroutine<> { co_await lock.acquire(); }(lock));
        parked = loop.create_task([](asyncio::Lock& lock) -> asyncio::Coroutine<> {
            co_await lock.acquire();
            lock.release();
        }(lock));
        loop.run_until_complete([]() -> asyncio::Coroutine<> { co_await asyncio::sleep(asyncio::Duration::zero()); }());
        EXPECT_FALSE(parked.done());
        loop.close();
    }
    lock.release();  // no loop runs: nobody waits any more
    EXPECT_FALSE(lock.locked());
    asyncio::EventLoop other(asyncio_test::virtual_time());
    bool took = false;
    other.run_until_complete([](asyncio::Lock& lock, bool& took) -> asyncio::Coroutine<> {
        co_await lock.acquire();
        took = true;
        lock.release();
    }(lock, took));
    EXPECT_TRUE(took);
    EXPECT_FALSE(parked.done());
    parked = asyncio::Task<>();
}

TEST_F(ALock, RegressionReleaseFromAPlainThreadRacesSilently) {
    // Issue #8: Lock::release() from a plain thread while the loop ran raced silently. With a
    // waiter to hand the lock to, it raises RuntimeError and the lock stays with its holder.
    bool refused = false;
    asyncio::run([](bool& out) -> Coroutine<> {
        asyncio::Lock lock;
        co_await lock.acquire();
        Task<> waiter = asyncio::create_task([](asyncio::Lock& l) -> Coroutine<> {
            co_await l.acquire();
            l.release();
        }(lock));
        co_await asyncio::sleep(0s);
        std::thread other([&] {
            try {
                lock.release();
            } catch (const asyncio::RuntimeError&) {
                out = true;
            }
        });
        other.join();
        EXPECT_TRUE(lock.locked());
        lock.release();  // on the loop's thread: handed to the waiter
        co_await waiter;
        EXPECT_FALSE(lock.locked());
    }(refused));
    EXPECT_TRUE(refused);
}

}  // namespace
