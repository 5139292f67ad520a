// The waiter-conformance suite: every way of waiting the library offers keeps the same promises
// about cancellation and wake-ups (detail/waiter.hpp is the one implementation of them). Each case
// runs against every adapter below; an adapter says how to make the waitable, how a task waits on
// it and how to wake a waiter. Adding a waitable (a Future, a process, a signal) is one adapter
// and one line in the list of types.
//
// The cases (the outcomes are CPython 3.13's; tests/cpython_scenarios/s9_waiter_conformance.py
// checks the ones that changed with the cancellation-after-the-step rules):
// - a waiter cancelled before the wake raises CancelledError and the wake goes to the next one;
// - a waiter woken and cancelled in the same iteration raises CancelledError, and what the wake
//   gave it is passed on (a Lock, a permit, a queue's item or slot, a notification): the next
//   waiter completes;
// - a cancellation withdrawn (uncancel) before the cancelled waiter ran is still raised;
// - a cancellation pending when the wait must suspend is delivered to the wait once the task's
//   step is over (as Python's Task.__step): it raises one iteration later, after the callbacks
//   already scheduled, and leaves nothing behind;
// - waiters are woken in the order they started waiting;
// - the waitable destroyed while waited on: no crash; the waiters stay suspended and can be
//   cancelled;
// - the loop closed while waiting: nothing leaks, the waiters are detached, and the waitable
//   serves the tasks of the next loop (with the abandoned tasks' handles kept, or not);
// - woken while no loop runs (between two runs): the waiter runs at the next run.
#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "asyncio/barrier.hpp"
#include "asyncio/condition.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/event.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/lock.hpp"
#include "asyncio/queue.hpp"
#include "asyncio/run.hpp"
#include "asyncio/semaphore.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::CancelledError;
using asyncio::Coroutine;
using asyncio::Task;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

using asyncio_test::yields;

// ---- the adapters ---------------------------------------------------------------------------
//
// struct Adapter {
//     static constexpr const char* kName;
//     struct Prim;                                     // the waitable, made for n waiters
//     static std::unique_ptr<Prim> make(int n);
//     static void destroy(std::unique_ptr<Prim>&);    // optional: what "destroyed" means
//     static Coroutine<> prepare(Prim&);               // so that a wait must suspend
//     static Coroutine<int> wait(Prim&);               // one task's wait (holds what it got)
//     static Coroutine<> wake(Prim&);                  // wakes the first waiter (all: kBroadcast)
//     static constexpr bool kBroadcast;                // one wake ends every wait
//     static constexpr bool kRunsBeforeTheWaker;       // a woken waiter runs before the waking task
//     static constexpr bool kHasObject;                // there is a waitable to destroy
//     static constexpr bool kWakesOutsideATask;        // wake_outside(Prim&) exists
// };

struct EventWait {
    static constexpr const char* kName = "Event::wait";
    struct Prim {
        asyncio::Event event;
    };
    static std::unique_ptr<Prim> make(int) { return std::make_unique<Prim>(); }
    static Coroutine<> prepare(Prim&) { co_return; }
    static Coroutine<int> wait(Prim& p) {
        co_await p.event.wait();
        co_return 0;
    }
    static Coroutine<> wake(Prim& p) {
        wake_outside(p);
        co_return;
    }
    static void wake_outside(Prim& p) { p.event.set(); }
    static constexpr bool kBroadcast = true;
    static constexpr bool kRunsBeforeTheWaker = false;
    static constexpr bool kHasObject = true;
    static constexpr bool kWakesOutsideATask = true;
};

struct LockAcquire {
    static constexpr const char* kName = "Lock::acquire";
    struct Prim {
        asyncio::Lock lock;
    };
    static std::unique_ptr<Prim> make(int) { return std::make_unique<Prim>(); }
    static Coroutine<> prepare(Prim& p) { co_await p.lock.acquire(); }  // held by the test
    static Coroutine<int> wait(Prim& p) {
        co_await p.lock.acquire();  // and keeps it: the next wake() hands it on
        co_return 0;
    }
    static Coroutine<> wake(Prim& p) {
        wake_outside(p);
        co_return;
    }
    static void wake_outside(Prim& p) { p.lock.release(); }
    static constexpr bool kBroadcast = false;
    static constexpr bool kRunsBeforeTheWaker = false;
    static constexpr bool kHasObject = true;
    static constexpr bool kWakesOutsideATask = true;
};

struct SemaphoreAcquire {
    static constexpr const char* kName = "Semaphore::acquire";
    struct Prim {
        asyncio::Semaphore sem{0};
    };
    static std::unique_ptr<Prim> make(int) { return std::make_unique<Prim>(); }
    static Coroutine<> prepare(Prim&) { co_return; }
    static Coroutine<int> wait(Prim& p) {
        co_await p.sem.acquire();
        co_return 0;
    }
    static Coroutine<> wake(Prim& p) {
        wake_outside(p);
        co_return;
    }
    static void wake_outside(Prim& p) { p.sem.release(); }
    static constexpr bool kBroadcast = false;
    static constexpr bool kRunsBeforeTheWaker = false;
    static constexpr bool kHasObject = true;
    static constexpr bool kWakesOutsideATask = true;
};

struct BoundedSemaphoreAcquire {
    static constexpr const char* kName = "BoundedSemaphore::acquire";
    struct Prim {
        asyncio::BoundedSemaphore sem{1};
    };
    static std::unique_ptr<Prim> make(int) { return std::make_unique<Prim>(); }
    static Coroutine<> prepare(Prim& p) { co_await p.sem.acquire(); }  // the only permit
    static Coroutine<int> wait(Prim& p) {
        co_await p.sem.acquire();
        co_return 0;
    }
    static Coroutine<> wake(Prim& p) {
        wake_outside(p);
        co_return;
    }
    static void wake_outside(Prim& p) { p.sem.release(); }  // within the bound: a permit is out
    static constexpr bool kBroadcast = false;
    static constexpr bool kRunsBeforeTheWaker = false;
    static constexpr bool kHasObject = true;
    static constexpr bool kWakesOutsideATask = true;
};

struct ConditionWait {
    static constexpr const char* kName = "Condition::wait";
    struct Prim {
        asyncio::Lock lock;  // outlives the condition in DestroyedWhileWaitedOn (the guards use it)
        std::optional<asyncio::Condition> cond{std::in_place, lock};
    };
    static std::unique_ptr<Prim> make(int) { return std::make_unique<Prim>(); }
    static void destroy(std::unique_ptr<Prim>& p) { p->cond.reset(); }
    static Coroutine<> prepare(Prim&) { co_return; }
    static Coroutine<int> wait(Prim& p) {
        auto guard = co_await p.cond->lock();
        co_await p.cond->wait();
        co_return 0;  // (the guard releases the lock, also when wait() raises)
    }
    static Coroutine<> wake(Prim& p) {
        auto guard = co_await p.cond->lock();
        p.cond->notify(1);
    }
    static constexpr bool kBroadcast = false;
    static constexpr bool kRunsBeforeTheWaker = false;
    static constexpr bool kHasObject = true;
    static constexpr bool kWakesOutsideATask = false;
};

struct BarrierWait {
    static constexpr const char* kName = "Barrier::wait";
    struct Prim {
        explicit Prim(int n) : barrier(n + 1) {}
        asyncio::Barrier barrier;
    };
    static std::unique_ptr<Prim> make(int n) { return std::make_unique<Prim>(n); }
    static Coroutine<> prepare(Prim&) { co_return; }
    static Coroutine<int> wait(Prim& p) { co_return static_cast<int>(co_await p.barrier.wait()); }
    /// Completes the round: helpers arrive for the parties missing, then the test itself.
    static Coroutine<> wake(Prim& p) {
        const std::size_t missing = p.barrier.parties() - p.barrier.n_waiting() - 1;
        for (std::size_t i = 0; i < missing; ++i) (void)asyncio::create_task(p.barrier.wait());
        if (missing > 0) co_await asyncio::sleep(0s);
        (void)co_await p.barrier.wait();  // the last arrival: returns at once
    }
    static constexpr bool kBroadcast = true;
    static constexpr bool kRunsBeforeTheWaker = false;
    static constexpr bool kHasObject = true;
    static constexpr bool kWakesOutsideATask = false;
};

struct QueueGet {
    static constexpr const char* kName = "Queue::get";
    struct Prim {
        asyncio::Queue<int> q;
        int next = 100;
    };
    static std::unique_ptr<Prim> make(int) { return std::make_unique<Prim>(); }
    static Coroutine<> prepare(Prim&) { co_return; }
    static Coroutine<int> wait(Prim& p) { co_return co_await p.q.get(); }
    static Coroutine<> wake(Prim& p) {
        wake_outside(p);
        co_return;
    }
    static void wake_outside(Prim& p) { p.q.put_nowait(p.next++); }
    static constexpr bool kBroadcast = false;
    static constexpr bool kRunsBeforeTheWaker = false;
    static constexpr bool kHasObject = true;
    static constexpr bool kWakesOutsideATask = true;
};

struct QueuePutWhenFull {
    static constexpr const char* kName = "Queue::put (full)";
    struct Prim {
        asyncio::Queue<int> q{1};
        int next = 100;
    };
    static std::unique_ptr<Prim> make(int) { return std::make_unique<Prim>(); }
    static Coroutine<> prepare(Prim& p) {
        p.q.put_nowait(0);
        co_return;
    }
    static Coroutine<int> wait(Prim& p) {
        const int item = p.next++;
        co_await p.q.put(item);
        co_return item;
    }
    static Coroutine<> wake(Prim& p) {
        wake_outside(p);
        co_return;
    }
    static void wake_outside(Prim& p) { (void)p.q.get_nowait(); }  // frees the one slot
    static constexpr bool kBroadcast = false;
    static constexpr bool kRunsBeforeTheWaker = false;
    static constexpr bool kHasObject = true;
    static constexpr bool kWakesOutsideATask = true;
};

struct QueueJoin {
    static constexpr const char* kName = "Queue::join";
    struct Prim {
        asyncio::Queue<int> q;
    };
    static std::unique_ptr<Prim> make(int) { return std::make_unique<Prim>(); }
    static Coroutine<> prepare(Prim& p) {
        p.q.put_nowait(1);  // one unfinished item
        (void)p.q.get_nowait();
        co_return;
    }
    static Coroutine<int> wait(Prim& p) {
        co_await p.q.join();
        co_return 0;
    }
    static Coroutine<> wake(Prim& p) {
        wake_outside(p);
        co_return;
    }
    static void wake_outside(Prim& p) { p.q.task_done(); }
    static constexpr bool kBroadcast = true;
    static constexpr bool kRunsBeforeTheWaker = false;
    static constexpr bool kHasObject = true;
    static constexpr bool kWakesOutsideATask = true;
};

/// sleep(1s): the "wake" is the time passing (the test sleeps as long, after the waiters). The
/// waiters' timers fire before the test's, so they run before it does (as in asyncio).
struct Sleep {
    static constexpr const char* kName = "sleep";
    struct Prim {};
    static std::unique_ptr<Prim> make(int) { return std::make_unique<Prim>(); }
    static Coroutine<> prepare(Prim&) { co_return; }
    static Coroutine<int> wait(Prim&) {
        co_await asyncio::sleep(1s);
        co_return 0;
    }
    static Coroutine<> wake(Prim&) { co_await asyncio::sleep(1s); }
    static constexpr bool kBroadcast = true;
    static constexpr bool kRunsBeforeTheWaker = true;
    static constexpr bool kHasObject = false;
    static constexpr bool kWakesOutsideATask = false;
};

// ---- the harness ----------------------------------------------------------------------------

template <class A>
void destroy(std::unique_ptr<typename A::Prim>& p) {
    if constexpr (requires { A::destroy(p); })
        A::destroy(p);
    else
        p.reset();
}

enum class Outcome { kPending, kCompleted, kCancelled, kOther };

struct Waiters {
    std::vector<Task<>> tasks;
    std::vector<Outcome> outcome;
    std::vector<int> value;
    std::vector<int> completion_order;

    template <class A>
    static Coroutine<> one(typename A::Prim& p, Waiters& w, std::size_t i) {
        try {
            const int v = co_await A::wait(p);
            w.value[i] = v;
            w.outcome[i] = Outcome::kCompleted;
            w.completion_order.push_back(static_cast<int>(i));
        } catch (const CancelledError&) {
            w.outcome[i] = Outcome::kCancelled;
            throw;
        } catch (...) {
            w.outcome[i] = Outcome::kOther;
            throw;
        }
    }
    /// Starts n waiters, one per iteration (so their order is the order they start waiting).
    template <class A>
    Coroutine<> start(typename A::Prim& p, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            outcome.push_back(Outcome::kPending);
            value.push_back(-1);
            tasks.push_back(asyncio::create_task(one<A>(p, *this, tasks.size())));
            co_await asyncio::sleep(0s);
        }
        co_await asyncio::sleep(0s);
    }
    template <class A>
    void start_on(asyncio::EventLoop& loop, typename A::Prim& p, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            outcome.push_back(Outcome::kPending);
            value.push_back(-1);
            tasks.push_back(loop.create_task(one<A>(p, *this, tasks.size())));
        }
    }
    std::size_t count(Outcome o) const {
        std::size_t n = 0;
        for (Outcome x : outcome) n += x == o;
        return n;
    }
    /// Wakes until every waiter has ended (each wake serves one waiter, or all).
    template <class A>
    Coroutine<> wake_until_done(typename A::Prim& p) {
        for (int guard = 0; count(Outcome::kPending) > 0 && guard < 100; ++guard) {
            co_await A::wake(p);
            co_await yields(3);
        }
    }
};

template <class A>
class WaiterConformance : public asyncio_test::LeakChecked {
protected:
    template <class F>
    static void run(F body) {
        asyncio::run(body(), virtual_time());
    }
};

using Adapters = ::testing::Types<EventWait, LockAcquire, SemaphoreAcquire, BoundedSemaphoreAcquire,
                                  ConditionWait, BarrierWait, QueueGet, QueuePutWhenFull, QueueJoin,
                                  Sleep>;

struct AdapterNames {
    template <class A>
    static std::string GetName(int) {
        std::string s;
        for (const char* c = A::kName; *c != '\0'; ++c)
            if (std::isalnum(static_cast<unsigned char>(*c))) s += *c;
        return s;
    }
};

TYPED_TEST_SUITE(WaiterConformance, Adapters, AdapterNames);

// ---- the cases ------------------------------------------------------------------------------

TYPED_TEST(WaiterConformance, CancelledBeforeTheWakeRaisesAndTheWakeGoesToTheNext) {
    using A = TypeParam;
    this->run([]() -> Coroutine<> {
        auto p = A::make(2);
        co_await A::prepare(*p);
        Waiters w;
        co_await w.start<A>(*p, 2);
        EXPECT_EQ(w.count(Outcome::kPending), 2u);
        EXPECT_TRUE(w.tasks[0].cancel());
        co_await yields(2);
        EXPECT_EQ(w.outcome[0], Outcome::kCancelled);
        EXPECT_EQ(w.outcome[1], Outcome::kPending);
        co_await w.wake_until_done<A>(*p);
        EXPECT_EQ(w.outcome[1], Outcome::kCompleted);
        EXPECT_TRUE(w.tasks[0].cancelled());
    });
}

TYPED_TEST(WaiterConformance, CancelledAfterTheWakeInTheSameIterationPassesTheHandOffOn) {
    using A = TypeParam;
    this->run([]() -> Coroutine<> {
        auto p = A::make(2);
        co_await A::prepare(*p);
        Waiters w;
        co_await w.start<A>(*p, 2);
        co_await A::wake(*p);      // wakes the first waiter (every waiter: broadcast) ...
        w.tasks[0].cancel();       // ... which is cancelled before it runs
        co_await yields(3);
        if constexpr (A::kRunsBeforeTheWaker) {
            // It ran before the test did: the cancellation came too late (as in asyncio).
            EXPECT_EQ(w.outcome[0], Outcome::kCompleted);
        } else {
            EXPECT_EQ(w.outcome[0], Outcome::kCancelled);
        }
        if (!A::kBroadcast) {
            EXPECT_EQ(w.outcome[1], Outcome::kCompleted) << "the hand-off was lost";
        }
        co_await w.wake_until_done<A>(*p);  // (a broadcast has woken it already)
        EXPECT_EQ(w.outcome[1], Outcome::kCompleted);
    });
}

TYPED_TEST(WaiterConformance, ACancellationWithdrawnBeforeTheWaiterRanIsStillRaised) {
    using A = TypeParam;
    this->run([]() -> Coroutine<> {
        auto p = A::make(1);
        co_await A::prepare(*p);
        Waiters w;
        co_await w.start<A>(*p, 1);
        EXPECT_TRUE(w.tasks[0].cancel());
        EXPECT_EQ(w.tasks[0].uncancel(), 0);
        co_await yields(3);
        EXPECT_EQ(w.outcome[0], Outcome::kCancelled);  // as asyncio: its future was cancelled
    });
}

// As asyncio (the task cancelled itself, or a timeout fired while it ran): the wait is cancelled
// once the step is over, as by a cancel() that came while it waited.
TYPED_TEST(WaiterConformance, APendingCancellationIsRaisedAtTheWaitOneIterationLater) {
    using A = TypeParam;
    this->run([]() -> Coroutine<> {
        auto p = A::make(2);
        co_await A::prepare(*p);
        Waiters w;
        co_await w.start<A>(*p, 1);
        std::vector<std::string> log;
        asyncio::get_running_loop().call_soon([&log] { log.push_back("callback"); });
        asyncio::current_task().cancel();
        try {
            (void)co_await A::wait(*p);
            log.push_back("returned");
        } catch (const CancelledError&) {
            log.push_back("CancelledError");
        }
        EXPECT_EQ(log, (std::vector<std::string>{"callback", "CancelledError"}));
        EXPECT_EQ(asyncio::current_task().uncancel(), 0);
        // Nothing was left behind: the real waiter gets the wake.
        co_await w.wake_until_done<A>(*p);
        EXPECT_EQ(w.outcome[0], Outcome::kCompleted);
    });
}

TYPED_TEST(WaiterConformance, WakesWaitersInTheOrderTheyStartedWaiting) {
    using A = TypeParam;
    this->run([]() -> Coroutine<> {
        constexpr std::size_t n = 5;
        auto p = A::make(n);
        co_await A::prepare(*p);
        Waiters w;
        co_await w.start<A>(*p, n);
        EXPECT_EQ(w.count(Outcome::kPending), n);
        co_await w.wake_until_done<A>(*p);
        EXPECT_EQ(w.completion_order, (std::vector<int>{0, 1, 2, 3, 4}));
    });
}

TYPED_TEST(WaiterConformance, CancellingOneOfManyKeepsTheOthersInOrder) {
    using A = TypeParam;
    this->run([]() -> Coroutine<> {
        constexpr std::size_t n = 5;
        auto p = A::make(n);
        co_await A::prepare(*p);
        Waiters w;
        co_await w.start<A>(*p, n);
        w.tasks[1].cancel();
        w.tasks[3].cancel();
        co_await yields(2);
        co_await w.wake_until_done<A>(*p);
        EXPECT_EQ(w.completion_order, (std::vector<int>{0, 2, 4}));
        EXPECT_EQ(w.count(Outcome::kCancelled), 2u);
    });
}

// Regression for Barrier and Condition: cancelling a waiter of a destroyed one touched it (the
// barrier's count, the condition's lock): use after free.
TYPED_TEST(WaiterConformance, RegressionDestroyedWhileWaitedOnLeavesItsWaitersCancellable) {
    using A = TypeParam;
    if constexpr (!A::kHasObject) {
        GTEST_SKIP() << A::kName << " has no object to destroy";
    } else {
        this->run([]() -> Coroutine<> {
            auto p = A::make(2);
            co_await A::prepare(*p);
            Waiters w;
            co_await w.start<A>(*p, 2);
            destroy<A>(p);  // a bug in the program, but no crash
            co_await yields(3);
            EXPECT_EQ(w.count(Outcome::kPending), 2u);  // detached: they wait on
            EXPECT_TRUE(w.tasks[1].cancel());
            EXPECT_TRUE(w.tasks[0].cancel());
            co_await yields(3);
            EXPECT_EQ(w.count(Outcome::kCancelled), 2u);
        });
    }
}

// A waitable is bound to the loop of the tasks waiting on it (asyncio's _LoopBoundMixin binds at
// the first wait): a task of another loop that would wait gets RuntimeError "<Type> is bound to a
// different event loop" and nothing changes; the waiter already there is still served.
TYPED_TEST(WaiterConformance, ATaskOfAnotherLoopCannotWaitWhileItIsBound) {
    using A = TypeParam;
    if constexpr (!A::kHasObject) {
        GTEST_SKIP() << A::kName << " has no shared object";
    } else {
        auto p = A::make(2);
        asyncio::EventLoop first(virtual_time());
        first.run_until_complete(A::prepare(*p));
        Waiters parked;
        parked.start_on<A>(first, *p, 1);
        first.run_until_complete(yields(3));
        ASSERT_EQ(parked.outcome[0], Outcome::kPending);
        std::string text;
        {
            asyncio::EventLoop second(virtual_time());
            text = second.run_until_complete([](typename A::Prim& prim) -> Coroutine<std::string> {
                try {
                    (void)co_await A::wait(prim);
                } catch (const asyncio::RuntimeError& e) {
                    co_return e.what();
                }
                co_return "no error";
            }(*p));
            second.close();
        }
        const std::string suffix = " is bound to a different event loop";
        ASSERT_GT(text.size(), suffix.size()) << text;
        EXPECT_EQ(text.substr(text.size() - suffix.size()), suffix);
        // The type's name (a BoundedSemaphore speaks as the Semaphore it is).
        EXPECT_NE(std::string(A::kName).find(text.substr(0, text.size() - suffix.size()) + "::"), std::string::npos)
            << text;
        first.run_until_complete([](typename A::Prim& prim, Waiters& w) -> Coroutine<> {
            co_await w.wake_until_done<A>(prim);
        }(*p, parked));
        EXPECT_EQ(parked.outcome[0], Outcome::kCompleted);
        parked.tasks.clear();
        first.close();
    }
}

// The loop closes with the waiters parked: each is detached (as by a cancellation), nothing
// leaks (LeakChecked), and the waitable serves the next loop's tasks as if they never waited.
template <class A>
void close_the_loop_while_waiting(bool keep_handles) {
    auto p = A::make(2);
    Waiters parked;
    {
        asyncio::EventLoop loop(virtual_time());
        asyncio_test::Reports reports;
        reports.install(loop);
        loop.run_until_complete(A::prepare(*p));
        parked.start_on<A>(loop, *p, 2);
        loop.run_until_complete(yields(3));
        EXPECT_EQ(parked.count(Outcome::kPending), 2u);
        if (!keep_handles) parked.tasks.clear();  // the loop owns them: close() destroys them
        loop.close();
        EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), keep_handles ? 0u : 2u);
    }
    EXPECT_EQ(parked.count(Outcome::kPending), 2u);  // never ran again
    // The next loop's tasks get every wake-up: none goes to a task of the closed loop.
    asyncio::EventLoop next(virtual_time());
    asyncio_test::Reports next_reports;  // where the kept frames are reported when freed
    next_reports.install(next);
    Waiters fresh;
    next.run_until_complete([](typename A::Prim& prim, Waiters& w) -> Coroutine<> {
        co_await w.start<A>(prim, 2);
        co_await w.wake_until_done<A>(prim);
    }(*p, fresh));
    EXPECT_EQ(fresh.completion_order, (std::vector<int>{0, 1}));
    for (auto& t : parked.tasks) {
        EXPECT_FALSE(t.done());
        EXPECT_FALSE(t.cancel());  // abandoned
    }
    EXPECT_EQ(parked.count(Outcome::kPending), 2u);
    parked.tasks.clear();
    EXPECT_EQ(next_reports.count("Task was destroyed but it is pending!"), keep_handles ? 2u : 0u);
    next.close();
}

TYPED_TEST(WaiterConformance, LoopClosedWhileWaitingFreesTheWaitersAndLeavesTheWaitableUsable) {
    close_the_loop_while_waiting<TypeParam>(false);
}

// Regression for Condition: close() cancelled the waiters through their hooks, and a cancelled
// Condition waiter re-acquires the lock: a task that would never run again took it.
TYPED_TEST(WaiterConformance, RegressionLoopClosedWhileWaitingDetachesWaitersWhoseHandlesAreKept) {
    close_the_loop_while_waiting<TypeParam>(true);
}

// Regression: Event::set(), Lock::release(), Semaphore::release() between two runs of the loop
// scheduled the waiter on the running loop, which was none (a null dereference).
TYPED_TEST(WaiterConformance, RegressionWokenWhileNoLoopRunsTheWaiterRunsAtTheNextRun) {
    using A = TypeParam;
    if constexpr (!A::kWakesOutsideATask) {
        GTEST_SKIP() << A::kName << " is woken from inside a task only";
    } else {
        auto p = A::make(1);
        asyncio::EventLoop loop(virtual_time());
        loop.run_until_complete(A::prepare(*p));
        Waiters w;
        w.start_on<A>(loop, *p, 1);
        loop.run_until_complete(yields(3));
        EXPECT_EQ(w.outcome[0], Outcome::kPending);
        A::wake_outside(*p);  // between two runs
        loop.run_until_complete(w.tasks[0]);
        EXPECT_EQ(w.outcome[0], Outcome::kCompleted);
        w.tasks.clear();
        loop.close();
    }
}

}  // namespace
