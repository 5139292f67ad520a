// asyncio::Barrier: rounds and indices, n_waiting, tasks held back while a round drains, reset(),
// abort(), broken(), and cancellation (while filling, after the round completed, while held
// back), following CPython's asyncio.Barrier. Virtual time; no frame may leak.
#include "asyncio/barrier.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::Barrier;
using asyncio::BrokenBarrierError;
using asyncio::CancelledError;
using asyncio::Coroutine;
using asyncio::Task;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class ABarrier : public asyncio_test::LeakChecked {};
class ABrokenBarrier : public asyncio_test::LeakChecked {};
class BarrierCancellation : public asyncio_test::LeakChecked {};

using asyncio_test::run_virtual;

using asyncio_test::yields;

/// Waits on the barrier; records (name, index) once it passes.
struct Passed {
    std::vector<std::pair<int, std::size_t>> log;
    std::vector<std::size_t> indices() const {
        std::vector<std::size_t> v;
        for (auto& e : log) v.push_back(e.second);
        std::sort(v.begin(), v.end());
        return v;
    }
};

Coroutine<std::size_t> party(Barrier& b, Passed& p, int name) {
    std::size_t index = co_await b.wait();
    p.log.emplace_back(name, index);
    co_return index;
}

std::vector<std::size_t> iota(std::size_t n) {
    std::vector<std::size_t> v;
    for (std::size_t i = 0; i < n; ++i) v.push_back(i);
    return v;
}

// ---------------------------------------------------------------------------------------------
// Rounds

TEST_F(ABarrier, RejectsFewerThanOneParty) {
    try {
        Barrier b(0);
        FAIL() << "no exception";
    } catch (const asyncio::ValueError& e) {
        EXPECT_STREQ(e.what(), "parties must be > 0");  // CPython 3.13's text
    }
    EXPECT_THROW(Barrier(-2), asyncio::ValueError);
    Barrier one(1);
    EXPECT_EQ(one.parties(), 1u);
    EXPECT_EQ(one.n_waiting(), 0u);
    EXPECT_FALSE(one.broken());
}

TEST_F(ABarrier, ReleasesAllPartiesTogetherWithUniqueIndicesInArrivalOrder) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(3);
        Passed p;
        Task<std::size_t> t0 = asyncio::create_task(party(b, p, 0));
        Task<std::size_t> t1 = asyncio::create_task(party(b, p, 1));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(b.n_waiting(), 2u);
        EXPECT_TRUE(p.log.empty());
        std::size_t last = co_await b.wait();  // the third arrival completes the round at once
        EXPECT_EQ(last, 2u);
        EXPECT_EQ(b.n_waiting(), 0u) << "draining";
        EXPECT_TRUE(p.log.empty()) << "the others are woken through the ready queue";
        EXPECT_EQ(co_await t0, 0u);
        EXPECT_EQ(co_await t1, 1u);
        EXPECT_EQ(b.n_waiting(), 0u);
        EXPECT_FALSE(b.broken());
    }());
}

TEST_F(ABarrier, OfOnePartyPassesAtOnceWithIndexZero) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(1);
        bool other_ran = false;
        Task<> other = asyncio::create_task([](bool& f) -> Coroutine<> {
            f = true;
            co_return;
        }(other_ran));
        for (int i = 0; i < 3; ++i) EXPECT_EQ(co_await b.wait(), 0u);
        EXPECT_FALSE(other_ran) << "passing a complete barrier does not suspend";
        co_await other;
    }());
}

Coroutine<> rounds(Barrier& b, std::vector<std::vector<std::size_t>>& per_round, int n) {
    for (int r = 0; r < n; ++r) {
        std::size_t i = co_await b.wait();
        per_round[static_cast<std::size_t>(r)].push_back(i);
        co_await yields(r % 3);  // leave at different paces
    }
}

TEST_F(ABarrier, CanBeUsedForManyRounds) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(4);
        std::vector<std::vector<std::size_t>> per_round(10);
        std::vector<Task<>> tasks;
        for (int i = 0; i < 4; ++i) tasks.push_back(asyncio::create_task(rounds(b, per_round, 10)));
        for (auto& t : tasks) co_await t;
        for (auto& r : per_round) {
            std::sort(r.begin(), r.end());
            EXPECT_EQ(r, iota(4));
        }
        EXPECT_EQ(b.n_waiting(), 0u);
    }());
}

TEST_F(ABarrier, HoldsBackNewArrivalsUntilTheRoundHasLeft) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(2);
        Passed p;
        Task<std::size_t> a = asyncio::create_task(party(b, p, 0));
        co_await asyncio::sleep(0s);
        // c and d arrive in the next iteration, before a (woken by the round) has left.
        Task<std::size_t> c = asyncio::create_task(party(b, p, 2));
        Task<std::size_t> d = asyncio::create_task(party(b, p, 3));
        EXPECT_EQ(co_await b.wait(), 1u);  // completes round 1
        co_await asyncio::sleep(0s);
        EXPECT_EQ(p.log.size(), 1u) << "a left; c and d were held back, not counted";
        EXPECT_EQ(co_await a, 0u);
        EXPECT_EQ(co_await c, 0u);
        EXPECT_EQ(co_await d, 1u);
        EXPECT_EQ(p.log.size(), 3u);
        if (!p.log.empty()) {
            EXPECT_EQ(p.log[0].first, 0) << "round 1 left before round 2 passed";
        }
    }());
}

TEST_F(ABarrier, CountsWaitersOnlyWhileFilling) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(5);
        Passed p;
        std::vector<Task<std::size_t>> tasks;
        for (int i = 0; i < 4; ++i) {
            tasks.push_back(asyncio::create_task(party(b, p, i)));
            co_await asyncio::sleep(0s);
            EXPECT_EQ(b.n_waiting(), static_cast<std::size_t>(i + 1));
        }
        EXPECT_EQ(co_await b.wait(), 4u);
        EXPECT_EQ(b.n_waiting(), 0u);
        for (auto& t : tasks) co_await t;
        EXPECT_EQ(p.indices(), iota(4));
    }());
}

// ---------------------------------------------------------------------------------------------
// abort(), reset(), broken()

TEST_F(ABrokenBarrier, AbortBreaksCurrentAndFutureWaits) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(3);
        Passed p;
        Task<std::size_t> t0 = asyncio::create_task(party(b, p, 0));
        Task<std::size_t> t1 = asyncio::create_task(party(b, p, 1));
        co_await asyncio::sleep(0s);
        b.abort();
        EXPECT_TRUE(b.broken());
        EXPECT_EQ(b.n_waiting(), 0u);
        for (auto* t : {&t0, &t1}) {
            try {
                co_await *t;
                ADD_FAILURE() << "no exception";
            } catch (const BrokenBarrierError& e) {
                EXPECT_STREQ(e.what(), "Abort or reset of barrier");
            }
        }
        try {
            co_await b.wait();
            ADD_FAILURE() << "no exception";
        } catch (const BrokenBarrierError& e) {
            EXPECT_STREQ(e.what(), "Barrier aborted");
        }
        EXPECT_TRUE(b.broken());
        EXPECT_TRUE(p.log.empty());
    }());
}

TEST_F(ABrokenBarrier, ResetRepairsABrokenBarrier) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(2);
        Passed p;
        b.abort();
        EXPECT_THROW(co_await b.wait(), BrokenBarrierError);
        b.reset();
        EXPECT_FALSE(b.broken());
        EXPECT_EQ(b.n_waiting(), 0u);
        Task<std::size_t> t = asyncio::create_task(party(b, p, 0));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(co_await b.wait(), 1u);
        EXPECT_EQ(co_await t, 0u);
    }());
}

TEST_F(ABrokenBarrier, ResetWithWaitersBreaksTheirWaitAndHoldsNewcomersBackUntilTheyLeft) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(3);
        Passed p;
        Task<std::size_t> t0 = asyncio::create_task(party(b, p, 0));
        Task<std::size_t> t1 = asyncio::create_task(party(b, p, 1));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(b.n_waiting(), 2u);
        b.reset();
        EXPECT_FALSE(b.broken()) << "resetting is not broken";
        EXPECT_EQ(b.n_waiting(), 0u);
        // Newcomers during the reset wait until t0 and t1 have left, then form a new round.
        Task<std::size_t> t2 = asyncio::create_task(party(b, p, 2));
        Task<std::size_t> t3 = asyncio::create_task(party(b, p, 3));
        EXPECT_THROW(co_await t0, BrokenBarrierError);
        EXPECT_THROW(co_await t1, BrokenBarrierError);
        co_await asyncio::sleep(0s);
        EXPECT_EQ(b.n_waiting(), 2u);
        EXPECT_EQ(co_await b.wait(), 2u);
        EXPECT_EQ(co_await t2, 0u);
        EXPECT_EQ(co_await t3, 1u);
        EXPECT_FALSE(b.broken());
    }());
}

TEST_F(ABrokenBarrier, ResetWithoutWaitersIsImmediate) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(1);
        b.reset();
        EXPECT_FALSE(b.broken());
        EXPECT_EQ(co_await b.wait(), 0u);
    }());
}

TEST_F(ABrokenBarrier, AResetRightAfterARoundCompletedBreaksTheTasksThatHaveNotLeftYet) {
    // CPython's behaviour: the round's tasks find the barrier resetting when they wake.
    run_virtual([]() -> Coroutine<> {
        Barrier b(2);
        Passed p;
        Task<std::size_t> t = asyncio::create_task(party(b, p, 0));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(co_await b.wait(), 1u);
        b.reset();
        EXPECT_THROW(co_await t, BrokenBarrierError);
        EXPECT_FALSE(b.broken());
        Task<std::size_t> u = asyncio::create_task(party(b, p, 1));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(co_await b.wait(), 1u) << "the barrier filled again";
        EXPECT_EQ(co_await u, 0u);
    }());
}

Coroutine<> aborts(Barrier& b) {
    b.abort();
    co_return;
}

TEST_F(ABrokenBarrier, AbortWhileTasksAreHeldBackBreaksThemToo) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(2);
        Passed p;
        Task<std::size_t> a = asyncio::create_task(party(b, p, 0));
        co_await asyncio::sleep(0s);
        // Next iteration: `held` arrives while the round drains (held back), then `aborter`
        // aborts, then `a` (woken by the round) runs: all before anybody left.
        Task<std::size_t> held = asyncio::create_task(party(b, p, 1));
        Task<> aborter = asyncio::create_task(aborts(b));
        EXPECT_EQ(co_await b.wait(), 1u);  // completes the round
        try {
            co_await a;
            ADD_FAILURE() << "no exception: a had not left yet";
        } catch (const BrokenBarrierError& e) {
            EXPECT_STREQ(e.what(), "Abort or reset of barrier");
        }
        try {
            co_await held;
            ADD_FAILURE() << "no exception";
        } catch (const BrokenBarrierError& e) {
            EXPECT_STREQ(e.what(), "Barrier aborted");
        }
        co_await aborter;
        EXPECT_TRUE(b.broken());
    }());
}

// ---------------------------------------------------------------------------------------------
// Cancellation

TEST_F(BarrierCancellation, AWaiterCancelledWhileFillingLeavesWithoutBreakingTheBarrier) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(3);
        Passed p;
        Task<std::size_t> a = asyncio::create_task(party(b, p, 0));
        Task<std::size_t> bb = asyncio::create_task(party(b, p, 1));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(b.n_waiting(), 2u);
        a.cancel();
        EXPECT_EQ(b.n_waiting(), 1u) << "a left at once";
        EXPECT_FALSE(b.broken());
        EXPECT_THROW(co_await a, CancelledError);
        // The round now needs two more: c and main. Indices stay unique (CPython gh-155233).
        Task<std::size_t> c = asyncio::create_task(party(b, p, 2));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(b.n_waiting(), 2u);
        EXPECT_EQ(co_await b.wait(), 2u);
        EXPECT_EQ(co_await bb, 0u);
        EXPECT_EQ(co_await c, 1u);
        EXPECT_FALSE(b.broken());
    }());
}

TEST_F(BarrierCancellation, ACancelledWaiterCannotHelpCompleteARound) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(2);
        Passed p;
        Task<std::size_t> a = asyncio::create_task(party(b, p, 0));
        co_await asyncio::sleep(0s);
        a.cancel();  // a has not run its cancellation yet...
        Task<std::size_t> c = asyncio::create_task(party(b, p, 1));
        co_await asyncio::sleep(0s);  // ...when c arrives: c must wait, not pass with a
        EXPECT_FALSE(c.done());
        EXPECT_EQ(b.n_waiting(), 1u);
        EXPECT_THROW(co_await a, CancelledError);
        EXPECT_EQ(co_await b.wait(), 1u);
        EXPECT_EQ(co_await c, 0u);
    }());
}

TEST_F(BarrierCancellation, ATaskCancelledAfterItsRoundCompletedRaisesAndTheOthersPass) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(3);
        Passed p;
        Task<std::size_t> a = asyncio::create_task(party(b, p, 0));
        Task<std::size_t> c = asyncio::create_task(party(b, p, 1));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(co_await b.wait(), 2u);
        a.cancel();  // the round is complete, a has not run yet
        EXPECT_THROW(co_await a, CancelledError);
        EXPECT_EQ(co_await c, 1u);
        EXPECT_FALSE(b.broken());
        // The barrier fills again normally.
        Task<std::size_t> d = asyncio::create_task(party(b, p, 2));
        Task<std::size_t> e = asyncio::create_task(party(b, p, 3));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(b.n_waiting(), 2u);
        EXPECT_EQ(co_await b.wait(), 2u);
        co_await d;
        co_await e;
    }());
}

Coroutine<> cancels(Task<std::size_t>& t) {
    t.cancel();
    co_return;
}

TEST_F(BarrierCancellation, ATaskCancelledWhileHeldBackChangesNothing) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(2);
        Passed p;
        Task<std::size_t> a = asyncio::create_task(party(b, p, 0));
        co_await asyncio::sleep(0s);
        // Next iteration: `held` is held back (the round drains), then cancelled, then a leaves.
        Task<std::size_t> held = asyncio::create_task(party(b, p, 1));
        Task<> canceller = asyncio::create_task(cancels(held));
        EXPECT_EQ(co_await b.wait(), 1u);
        EXPECT_THROW(co_await held, CancelledError);
        co_await canceller;
        EXPECT_EQ(co_await a, 0u);
        EXPECT_EQ(b.n_waiting(), 0u);
        EXPECT_FALSE(b.broken());
        Task<std::size_t> c = asyncio::create_task(party(b, p, 2));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(b.n_waiting(), 1u);
        EXPECT_EQ(co_await b.wait(), 1u);
        EXPECT_EQ(co_await c, 0u);
    }());
}

Coroutine<std::size_t> self_cancel_then_wait(Barrier& b, std::size_t* returned = nullptr) {
    asyncio::current_task().cancel();
    const std::size_t index = co_await b.wait();
    if (returned != nullptr) *returned = index;
    co_return index;
}

// As asyncio 3.13 (checked): a pending cancellation is raised where wait() suspends; an arrival
// that completes the round does not suspend and wait() returns its index, but the task that then
// returns with the cancellation still pending ends cancelled (Task.__step).
TEST_F(BarrierCancellation, APendingCancelRaisesInWaitUnlessTheArrivalCompletesTheRound) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(2);
        Task<std::size_t> t = asyncio::create_task(self_cancel_then_wait(b));
        EXPECT_THROW(co_await t, CancelledError);
        EXPECT_EQ(b.n_waiting(), 0u) << "it arrived and left";
        Passed p;
        Task<std::size_t> a = asyncio::create_task(party(b, p, 0));
        co_await asyncio::sleep(0s);
        std::size_t returned = 99;
        Task<std::size_t> u = asyncio::create_task(self_cancel_then_wait(b, &returned));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(returned, 1u);
        EXPECT_TRUE(u.done());
        EXPECT_TRUE(u.cancelled());
        EXPECT_EQ(co_await a, 0u);
    }());
}

TEST_F(BarrierCancellation, CancellingEveryWaiterLeavesAnEmptyFillingBarrier) {
    run_virtual([]() -> Coroutine<> {
        Barrier b(4);
        Passed p;
        std::vector<Task<std::size_t>> tasks;
        for (int i = 0; i < 3; ++i) tasks.push_back(asyncio::create_task(party(b, p, i)));
        co_await asyncio::sleep(0s);
        for (auto& t : tasks) t.cancel();
        EXPECT_EQ(b.n_waiting(), 0u);
        for (auto& t : tasks) EXPECT_THROW(co_await t, CancelledError);
        EXPECT_FALSE(b.broken());
        tasks.clear();
        for (int i = 0; i < 3; ++i) tasks.push_back(asyncio::create_task(party(b, p, i)));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(co_await b.wait(), 3u);
        for (auto& t : tasks) co_await t;
        EXPECT_EQ(p.indices(), iota(3));
    }());
}

}  // namespace
