// asyncio::Condition: errors, notify/notify_all order, re-acquiring the lock, wait_for, shared
// locks, RAII guards, and cancellation at every stage of a wait (before it, while waiting, after
// being notified, after being handed the lock), with seeded random producer/consumer schedules
// that check that no notification is lost. Virtual time; no frame may leak.
#include "asyncio/condition.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/lock.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::CancelledError;
using asyncio::Condition;
using asyncio::Coroutine;
using asyncio::Lock;
using asyncio::Task;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class ACondition : public asyncio_test::LeakChecked {};
class ConditionCancellation : public asyncio_test::LeakChecked {};

using asyncio_test::run_virtual;

using asyncio_test::yields;

/// Waits once on c (holding its lock through a guard); logs `id` once it returns.
Coroutine<> waiter(Condition& c, std::vector<int>& log, int id, int hold = 0) {
    auto guard = co_await c.lock();
    co_await c.wait();
    EXPECT_TRUE(c.locked());
    log.push_back(id);
    co_await yields(hold);  // keeps the lock meanwhile
}

/// What a waiter that may be cancelled saw.
struct Outcome {
    bool returned = false;
    bool raised = false;
    bool locked_when_raised = false;
    std::string message;  // of the CancelledError
};

Coroutine<> observed_waiter(Condition& c, Outcome& out) {
    auto guard = co_await c.lock();
    try {
        co_await c.wait();
        out.returned = true;
    } catch (const CancelledError& e) {
        out.raised = true;
        out.locked_when_raised = c.locked();
        out.message = e.message();
        throw;
    }
}

// ---------------------------------------------------------------------------------------------
// Basics

asyncio_test::Eager wait_outside(std::exception_ptr&, Condition& c) { co_await c.wait(); }

TEST_F(ACondition, WaitWithoutTheLockRaisesRuntimeError) {
    Condition c;
    std::exception_ptr error;
    wait_outside(error, c);
    ASSERT_TRUE(error);
    try {
        std::rethrow_exception(error);
    } catch (const asyncio::RuntimeError& e) {
        EXPECT_STREQ(e.what(), "cannot wait on un-acquired lock");
    }
    run_virtual([]() -> Coroutine<> {
        Condition cond;
        EXPECT_THROW(co_await cond.wait(), asyncio::RuntimeError);
        EXPECT_FALSE(cond.locked());
    }());
}

TEST_F(ACondition, NotifyWithoutTheLockRaisesRuntimeError) {
    Condition c;
    try {
        c.notify();
        FAIL() << "no exception";
    } catch (const asyncio::RuntimeError& e) {
        EXPECT_STREQ(e.what(), "cannot notify on un-acquired lock");
    }
    EXPECT_THROW(c.notify(3), asyncio::RuntimeError);
    EXPECT_THROW(c.notify_all(), asyncio::RuntimeError);
}

TEST_F(ACondition, ExportsItsLocksOperations) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        EXPECT_FALSE(c.locked());
        co_await c.acquire();
        EXPECT_TRUE(c.locked());
        c.notify();  // nobody waits: no-op
        c.notify_all();
        c.release();
        EXPECT_FALSE(c.locked());
        EXPECT_THROW(c.release(), asyncio::RuntimeError);
        {
            auto g = co_await c.lock();
            EXPECT_TRUE(c.locked());
        }
        EXPECT_FALSE(c.locked());
    }());
}

TEST_F(ACondition, WaitReleasesTheLockAndNotifyWakesWaitersInFifoOrder) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        std::vector<int> log;
        std::vector<Task<>> tasks;
        for (int i = 0; i < 5; ++i) tasks.push_back(asyncio::create_task(waiter(c, log, i)));
        co_await asyncio::sleep(0s);
        EXPECT_FALSE(c.locked()) << "every waiter released the lock";
        {
            auto g = co_await c.lock();
            c.notify();   // 0
            c.notify(2);  // 1, 2
        }
        co_await yields(3);
        EXPECT_EQ(log, (std::vector<int>{0, 1, 2}));
        {
            auto g = co_await c.lock();
            c.notify_all();
        }
        for (auto& t : tasks) co_await t;
        EXPECT_EQ(log, (std::vector<int>{0, 1, 2, 3, 4}));
        EXPECT_FALSE(c.locked());
    }());
}

TEST_F(ACondition, ANotifiedWaiterReturnsOnlyOnceItHasTheLockAgain) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        std::vector<int> log;
        Task<> w = asyncio::create_task(waiter(c, log, 1));
        co_await asyncio::sleep(0s);
        co_await c.acquire();
        c.notify();
        co_await yields(5);
        EXPECT_TRUE(log.empty()) << "the notifier still holds the lock";
        c.release();
        EXPECT_TRUE(c.locked()) << "handed straight to the notified waiter";
        co_await w;
        EXPECT_EQ(log, std::vector<int>{1});
    }());
}

TEST_F(ACondition, WokenWaitersTakeTheLockOneAtATime) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        std::vector<int> log;
        std::vector<Task<>> tasks;
        for (int i = 0; i < 4; ++i) tasks.push_back(asyncio::create_task(waiter(c, log, i, 3)));
        co_await asyncio::sleep(0s);
        {
            auto g = co_await c.lock();
            c.notify_all();
        }
        co_await yields(2);
        EXPECT_EQ(log, std::vector<int>{0}) << "waiter 0 holds the lock for 3 iterations";
        for (auto& t : tasks) co_await t;
        EXPECT_EQ(log, (std::vector<int>{0, 1, 2, 3}));
    }());
}

TEST_F(ACondition, ANotifiedWaiterQueuesBehindTasksAlreadyWaitingForTheLock) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        std::vector<int> log;
        Task<> w = asyncio::create_task(waiter(c, log, 1));
        co_await asyncio::sleep(0s);
        co_await c.acquire();
        Task<> other = asyncio::create_task([](Condition& cond, std::vector<int>& l) -> Coroutine<> {
            auto g = co_await cond.lock();
            l.push_back(2);
        }(c, log));
        co_await asyncio::sleep(0s);  // other queues for the lock
        c.notify();                   // w queues behind it
        c.release();
        co_await w;
        co_await other;
        EXPECT_EQ(log, (std::vector<int>{2, 1}));
    }());
}

TEST_F(ACondition, WaitForReturnsThePredicatesLastValue) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        int value = 0;
        int calls = 0;
        auto pred = [&] {
            ++calls;
            return value;
        };
        // True at once: no wait, no lock needed (as in Python).
        value = 5;
        EXPECT_EQ(co_await c.wait_for(pred), 5);
        EXPECT_EQ(calls, 1);
        value = 0;
        calls = 0;
        Task<int> t = asyncio::create_task([](Condition& cond, auto p) -> Coroutine<int> {
            auto g = co_await cond.lock();
            co_return co_await cond.wait_for(p);
        }(c, pred));
        co_await asyncio::sleep(0s);
        for (int v : {0, 0, 7}) {
            auto g = co_await c.lock();
            value = v;
            c.notify_all();
            g.unlock();
            co_await yields(2);
        }
        EXPECT_EQ(co_await t, 7);
        EXPECT_EQ(calls, 4) << "once at first, then once per wake-up";
        EXPECT_FALSE(c.locked());
    }());
}

TEST_F(ACondition, CanShareALockWithAnotherCondition) {
    run_virtual([]() -> Coroutine<> {
        Lock lock;
        Condition a(lock);
        Condition b(lock);
        std::vector<int> log;
        Task<> wa = asyncio::create_task(waiter(a, log, 1));
        Task<> wb = asyncio::create_task(waiter(b, log, 2));
        co_await asyncio::sleep(0s);
        co_await lock.acquire();
        EXPECT_TRUE(a.locked());
        EXPECT_TRUE(b.locked());
        b.notify_all();  // wakes only b's waiter
        lock.release();
        co_await wb;
        co_await yields(2);
        EXPECT_EQ(log, std::vector<int>{2});
        {
            auto g = co_await a.lock();
            EXPECT_TRUE(lock.locked());
            a.notify();
        }
        co_await wa;
        EXPECT_EQ(log, (std::vector<int>{2, 1}));
        EXPECT_FALSE(lock.locked());
    }());
}

Coroutine<> throws_after_wait(Condition& c) {
    auto g = co_await c.lock();
    co_await c.wait();
    throw std::runtime_error("boom");
}

TEST_F(ACondition, AGuardReleasesTheLockWhenAnExceptionPropagatesAfterWait) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        Task<> t = asyncio::create_task(throws_after_wait(c));
        co_await asyncio::sleep(0s);
        {
            auto g = co_await c.lock();
            c.notify();
        }
        EXPECT_THROW(co_await t, std::runtime_error);
        EXPECT_FALSE(c.locked());
    }());
}

// ---------------------------------------------------------------------------------------------
// Cancellation

TEST_F(ConditionCancellation, ACancelledWaitReacquiresTheLockBeforeRaising) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        Outcome out;
        Task<> w = asyncio::create_task(observed_waiter(c, out));
        co_await asyncio::sleep(0s);
        co_await c.acquire();  // main holds the lock while w is cancelled
        w.cancel("stop");
        co_await yields(5);
        EXPECT_FALSE(out.raised) << "w cannot raise before it has the lock back";
        c.release();  // handed to w
        EXPECT_TRUE(c.locked());
        co_await c.acquire();  // main queues behind w, which raises and then releases
        EXPECT_TRUE(out.raised);
        EXPECT_TRUE(out.locked_when_raised);
        EXPECT_EQ(out.message, "stop");
        EXPECT_FALSE(out.returned);
        EXPECT_TRUE(w.done());
        EXPECT_TRUE(w.cancelled());
        c.release();
        EXPECT_FALSE(c.locked());
    }());
}

TEST_F(ConditionCancellation, ACancelledWaitTakesAFreeLockWhenItRuns) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        Outcome out;
        Task<> w = asyncio::create_task(observed_waiter(c, out));
        co_await asyncio::sleep(0s);
        EXPECT_FALSE(c.locked());
        w.cancel();
        EXPECT_FALSE(c.locked()) << "w asks for the lock when it runs (asyncio's acquire())";
        EXPECT_THROW(co_await w, CancelledError);
        EXPECT_TRUE(out.locked_when_raised);
        EXPECT_FALSE(c.locked());
    }());
}

TEST_F(ConditionCancellation, AWaiterCancelledWhileReacquiringKeepsWaitingForTheLockThenRaises) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        Outcome out;
        std::vector<int> log;
        Task<> w1 = asyncio::create_task(observed_waiter(c, out));
        Task<> w2 = asyncio::create_task(waiter(c, log, 2));
        co_await asyncio::sleep(0s);
        co_await c.acquire();
        c.notify();  // w1 is notified and now waits for the lock
        w1.cancel();
        w1.cancel();  // cancelling again changes nothing
        co_await yields(3);
        EXPECT_FALSE(out.raised);
        c.release();
        EXPECT_THROW(co_await w1, CancelledError);
        EXPECT_TRUE(out.raised);
        EXPECT_TRUE(out.locked_when_raised);
        // w1 was notified but did not return: it passed the notification on to w2.
        co_await w2;
        EXPECT_EQ(log, std::vector<int>{2});
        EXPECT_FALSE(c.locked());
    }());
}

TEST_F(ConditionCancellation, AWaiterHandedTheLockButCancelledBeforeItRunsRaisesHoldingItAndPassesOn) {
    // A holds the lock; B and C are notified (both then wait for the lock); D waits un-notified.
    // A releases and B, handed the lock, is cancelled in the same iteration: B raises holding the
    // lock, its guard releases it to C, and its notification goes to D. Nobody deadlocks.
    run_virtual([]() -> Coroutine<> {
        Condition c;
        Outcome b_out;
        std::vector<int> log;
        Task<> b = asyncio::create_task(observed_waiter(c, b_out));
        Task<> cc = asyncio::create_task(waiter(c, log, 3));
        Task<> d = asyncio::create_task(waiter(c, log, 4));
        co_await asyncio::sleep(0s);
        co_await c.acquire();           // main is A
        c.notify(2);                    // B, C
        co_await asyncio::sleep(0s);    // their turn: they queue for the lock
        c.release();                    // handed to B...
        b.cancel("late");      // ...cancelled before it runs
        EXPECT_TRUE(c.locked());
        EXPECT_THROW(co_await b, CancelledError);
        EXPECT_TRUE(b_out.raised);
        EXPECT_TRUE(b_out.locked_when_raised);
        EXPECT_EQ(b_out.message, "late");
        co_await cc;
        co_await d;
        EXPECT_EQ(log, (std::vector<int>{3, 4}));
        EXPECT_FALSE(c.locked());
    }());
}

// Differs from asyncio on purpose (docs/design.md, Differences from CPython;
// tests/cpython_scenarios/s7_condition_cancel.py a): there w2 is woken spuriously.
TEST_F(ConditionCancellation, AWaiterCancelledBeforeBeingNotifiedWakesNobody) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        Outcome out;
        std::vector<int> log;
        Task<> w1 = asyncio::create_task(observed_waiter(c, out));
        Task<> w2 = asyncio::create_task(waiter(c, log, 2));
        co_await asyncio::sleep(0s);
        w1.cancel();
        EXPECT_THROW(co_await w1, CancelledError);
        co_await yields(3);
        EXPECT_TRUE(log.empty()) << "no spurious wake-up";
        EXPECT_FALSE(w2.done());
        {
            auto g = co_await c.lock();
            c.notify();
        }
        co_await w2;
        EXPECT_EQ(log, std::vector<int>{2});
    }());
}

Coroutine<> self_cancel_then_wait(Condition& c, Outcome& out, std::vector<int>& log) {
    auto guard = co_await c.lock();
    asyncio::current_task().cancel();
    try {
        co_await c.wait();
        out.returned = true;
    } catch (const CancelledError&) {
        out.raised = true;
        out.locked_when_raised = c.locked();
        log.push_back(1);
        throw;
    }
}

// As asyncio (tests/cpython_scenarios/s7_condition_cancel.py, d): the cancellation is delivered
// at the wait like any other, so the lock goes to the task queued for it first.
TEST_F(ConditionCancellation, APendingCancelReleasesTheLockAndReacquiresItBeforeRaising) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        Outcome out;
        std::vector<int> log;
        Task<> w = asyncio::create_task(self_cancel_then_wait(c, out, log));
        Task<> other = asyncio::create_task([](Condition& cond, std::vector<int>& l) -> Coroutine<> {
            auto g = co_await cond.lock();
            l.push_back(2);
        }(c, log));
        EXPECT_THROW(co_await w, CancelledError);
        co_await other;
        EXPECT_TRUE(out.raised);
        EXPECT_TRUE(out.locked_when_raised);
        EXPECT_EQ(log, (std::vector<int>{2, 1})) << "wait() released the lock to `other`";
    }());
}

TEST_F(ConditionCancellation, ACancelledThenUncancelledWaitStillRaises) {
    run_virtual([]() -> Coroutine<> {
        Condition c;
        Outcome out;
        Task<> w = asyncio::create_task(observed_waiter(c, out));
        co_await asyncio::sleep(0s);
        co_await c.acquire();
        w.cancel();
        w.uncancel();
        c.release();
        EXPECT_THROW(co_await w, CancelledError);
        EXPECT_TRUE(out.locked_when_raised);
        EXPECT_FALSE(out.returned);
        EXPECT_FALSE(c.locked());
    }());
}

// Random producer/consumer schedules: consumers arrive at random moments and wait_for an item;
// the driver produces items one by one (notify(1), sometimes notify_all()) and cancels consumers
// at random moments, also right after a release; then it produces one item at a time until every
// consumer is done. Every consumer that is not cancelled must get an item (no lost wake-up: an
// item never stays available while a consumer waits), no item is taken that was not produced,
// every wait raises holding the lock, and the lock ends up free.
struct Market {
    int items = 0;  // produced and not taken
    int taken = 0;
    std::deque<int> waiting;  // mirror of the condition's queue: who a notify() wakes next
    std::vector<bool> got;
    std::vector<bool> raised_without_lock;
};

Coroutine<> consumer(Condition& c, Market& m, int id, int delay) {
    co_await yields(delay);
    auto guard = co_await c.lock();
    try {
        co_await c.wait_for([&m, id] {
            if (m.items > 0) return true;
            m.waiting.push_back(id);  // wait_for is about to wait()
            return false;
        });
    } catch (const CancelledError&) {
        if (!c.locked()) m.raised_without_lock[static_cast<std::size_t>(id)] = true;
        throw;
    }
    --m.items;
    EXPECT_GE(m.items, 0);
    ++m.taken;
    m.got[static_cast<std::size_t>(id)] = true;
}

Coroutine<> market(std::uint32_t seed) {
    std::mt19937 rng(seed);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    Condition c;
    Market m;
    const int n = pick(2, 25);
    m.got.assign(static_cast<std::size_t>(n), false);
    m.raised_without_lock.assign(static_cast<std::size_t>(n), false);
    std::vector<Task<>> tasks;
    std::vector<bool> cancelled(static_cast<std::size_t>(n), false);
    for (int i = 0; i < n; ++i) tasks.push_back(asyncio::create_task(consumer(c, m, i, pick(0, 6))));
    auto cancel = [&](int i) {
        if (tasks[static_cast<std::size_t>(i)].cancel()) cancelled[static_cast<std::size_t>(i)] = true;
        std::erase(m.waiting, i);  // a waiter cancelled in the queue leaves it at once
    };
    // Produces one item; returns the consumer notify(1) woke (-1: none, or notify_all()).
    auto produce = [&](bool may_notify_all) -> Coroutine<int> {
        auto g = co_await c.lock();
        ++m.items;
        if (may_notify_all && pick(0, 4) == 0) {
            c.notify_all();
            m.waiting.clear();
            co_return -1;
        }
        c.notify();
        if (m.waiting.empty()) co_return -1;
        const int woken = m.waiting.front();
        m.waiting.pop_front();
        co_return woken;
    };
    for (int step = 0; step < 100; ++step) {
        const int r = pick(0, 9);
        if (r == 0) {
            const int woken = co_await produce(true);
            // Cancel the consumer just notified, now handed the lock or still queued for it.
            if (woken >= 0 && pick(0, 1) == 1) cancel(woken);
        } else if (r == 1) {
            cancel(pick(0, n - 1));
        } else {
            co_await asyncio::sleep(0s);
        }
    }
    // Then, with no more cancellations, one item at a time while consumers remain: an item that
    // stays available while a consumer keeps waiting is a lost wake-up.
    int stalled = 0;
    for (int i = 0; i < 5000 && stalled < 100; ++i) {
        bool all_done = true;
        for (auto& t : tasks) all_done = all_done && t.done();
        if (all_done) break;
        if (m.items == 0) {
            stalled = 0;
            co_await produce(false);
        } else {
            ++stalled;
        }
        co_await asyncio::sleep(1ms);
    }
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        if (!tasks[i].done()) {
            ADD_FAILURE() << "consumer " << i << " still waits with " << m.items
                          << " item(s) available: lost wake-up";
            tasks[i].cancel();
        }
        try {
            co_await tasks[i];
            EXPECT_TRUE(m.got[i]);
        } catch (const CancelledError&) {
            EXPECT_TRUE(cancelled[i]) << "consumer " << i;
            EXPECT_FALSE(m.got[i]);
        }
        EXPECT_FALSE(m.raised_without_lock[i]) << "consumer " << i << " raised without the lock";
        if (!cancelled[i]) {
            EXPECT_TRUE(m.got[i]) << "consumer " << i;
        }
    }
    EXPECT_FALSE(c.locked());
}

TEST_F(ConditionCancellation, RandomProducerConsumerSchedulesLoseNoWakeUp) {
    for (std::uint32_t seed = 1; seed <= 500; ++seed) {
        SCOPED_TRACE("seed=" + std::to_string(seed));
        run_virtual(market(seed));
        if (HasFailure()) {
            ADD_FAILURE() << "first failing seed: " << seed;
            break;
        }
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Scenarios run on CPython 3.13 (tests/cpython_scenarios/): each test prints the same lines as its
// Python script and expects what CPython printed (the comment at the bottom of the script).

namespace {

class LikeCPython : public asyncio_test::LeakChecked {};

std::string py(bool b) { return b ? "True" : "False"; }
std::string joined(const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
    return out;
}

Coroutine<> named_waiter(Condition& cond, std::vector<std::string>& log, std::string name) {
    auto guard = co_await cond.lock();
    try {
        co_await cond.wait();
        log.push_back(name + " woken (locked=" + py(cond.locked()) + ")");
    } catch (const CancelledError&) {
        log.push_back(name + " CancelledError, holds lock=" + py(cond.locked()));
        throw;
    }
}

Coroutine<> takes_lock(Condition& cond, std::vector<std::string>& log) {
    auto guard = co_await cond.lock();
    log.push_back("other got the lock");
}

Coroutine<> settle(Task<> t) {
    try {
        co_await t;
    } catch (const CancelledError&) {
    }
}

// s7_condition_cancel.py, b), c) and d): a waiter notified and then cancelled re-acquires the lock
// before raising and passes the notification on; a notified waiter queues for the lock when it
// runs again (a task that asks for it in between goes first); a cancellation pending when wait()
// is called releases the lock (to a task queued for it) and re-acquires it before raising.
TEST_F(LikeCPython, S7ACancelledConditionWaiter) {
    std::vector<std::string> lines;
    run_virtual([](std::vector<std::string>& lines) -> Coroutine<> {
        {  // b)
            Condition cond;
            std::vector<std::string> log;
            Task<> w1 = asyncio::create_task(named_waiter(cond, log, "w1"));
            Task<> w2 = asyncio::create_task(named_waiter(cond, log, "w2"));
            co_await asyncio::sleep(0s);
            {
                auto guard = co_await cond.lock();
                cond.notify(1);
                w1.cancel();
                co_await asyncio::sleep(0s);
                log.push_back("main still holds the lock; w1.done()=" + py(w1.done()));
            }
            co_await asyncio::sleep(10ms);
            log.push_back("w2.done()=" + py(w2.done()));
            if (!w2.done()) w2.cancel();
            co_await settle(w1);
            co_await settle(w2);
            lines.push_back("b) notified, then cancelled: " + joined(log));
        }
        for (const bool other_first : {false, true}) {  // c1), c2)
            Condition cond;
            std::vector<std::string> log;
            Task<> w1 = asyncio::create_task(named_waiter(cond, log, "w1"));
            co_await asyncio::sleep(0s);
            co_await cond.acquire();
            Task<> o;
            if (other_first) {
                o = asyncio::create_task(takes_lock(cond, log));
                cond.notify();
            } else {
                cond.notify();
                o = asyncio::create_task(takes_lock(cond, log));
            }
            co_await asyncio::sleep(0s);
            co_await asyncio::sleep(0s);
            cond.release();
            co_await w1;
            co_await o;
            lines.push_back(std::string(other_first ? "c2) a new task is made, then notify(): "
                                                    : "c1) notify(), then a new task asks for the lock: ") +
                            joined(log));
        }
        {  // d)
            Condition cond;
            std::vector<std::string> log;
            auto self_cancel_then_wait = [](Condition& cond, std::vector<std::string>& log) -> Coroutine<> {
                auto guard = co_await cond.lock();
                asyncio::current_task().cancel();
                try {
                    co_await cond.wait();
                } catch (const CancelledError&) {
                    log.push_back("w CancelledError, holds lock=" + py(cond.locked()));
                    throw;
                }
            };
            Task<> w = asyncio::create_task(self_cancel_then_wait(cond, log));
            Task<> o = asyncio::create_task(takes_lock(cond, log));
            co_await settle(w);
            co_await o;
            lines.push_back("d) cancel pending when wait() is called: " + joined(log));
        }
    }(lines));
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "b) notified, then cancelled: main still holds the lock; w1.done()=False; w1 "
                         "CancelledError, holds lock=True; w2 woken (locked=True); w2.done()=True",
                         "c1) notify(), then a new task asks for the lock: w1 woken (locked=True); other "
                         "got the lock",
                         "c2) a new task is made, then notify(): other got the lock; w1 woken (locked=True)",
                         "d) cancel pending when wait() is called: other got the lock; w CancelledError, "
                         "holds lock=True",
                     }));
}

// A notified waiter used to queue for the lock inside notify(); as asyncio's (whose waiter calls
// acquire() when it runs again), it asks when its turn comes, so a task whose first step comes
// before that turn gets the lock first.
TEST_F(LikeCPython, RegressionANotifiedWaiterAsksForTheLockWhenItRuns) {
    run_virtual([]() -> Coroutine<> {
        Condition cond;
        std::vector<std::string> log;
        Task<> w = asyncio::create_task(named_waiter(cond, log, "w"));
        co_await asyncio::sleep(0s);
        co_await cond.acquire();
        Task<> o = asyncio::create_task(takes_lock(cond, log));  // its first step is due first
        cond.notify();
        EXPECT_TRUE(cond.locked());
        cond.release();
        EXPECT_FALSE(cond.locked()) << "nobody was queued for it yet";
        co_await w;
        co_await o;
        EXPECT_EQ(log, (std::vector<std::string>{"other got the lock", "w woken (locked=True)"}));
    }());
}

}  // namespace
