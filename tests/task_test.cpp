// asyncio::Task<T>: scheduling, state, names, done callbacks, Task<> views, current/all tasks,
// unretrieved exceptions, and cancellation.
#include "asyncio/task.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <regex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/event.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/shield.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task_group.hpp"
#include "asyncio/timeout.hpp"
#include "asyncio/wait.hpp"
#include "test_support.hpp"

namespace {

using asyncio::CancelledError;
using asyncio::Coroutine;
using asyncio::Task;
using asyncio_test::Counted;
using asyncio_test::Reports;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class ATask : public asyncio_test::LeakChecked {};
class AnUnretrievedTaskException : public asyncio_test::LeakChecked {};
class TaskCancellation : public asyncio_test::LeakChecked {};

using asyncio_test::elapsed;

using asyncio_test::sets;

Coroutine<int> value_after(asyncio::Duration d, int v) {
    co_await asyncio::sleep(d);
    co_return v;
}

Coroutine<int> fail_after(asyncio::Duration d, std::string what) {
    co_await asyncio::sleep(d);
    throw std::runtime_error(what);
}

Coroutine<int> fails_now(std::string what) {
    throw std::runtime_error(what);
    co_return 0;
}

Coroutine<std::unique_ptr<int>> make_unique_after(asyncio::Duration d, int v) {
    co_await asyncio::sleep(d);
    co_return std::make_unique<int>(v);
}

Coroutine<> sleeps_with(Counted c, asyncio::Duration d, bool& finished) {
    co_await asyncio::sleep(d);
    finished = c.value() >= 0;
}

Coroutine<int> awaits(Task<int> t) { co_return co_await t; }

// ---------------------------------------------------------------------------------------------
// Scheduling and state

TEST_F(ATask, DoesNotRunUntilItsCreatorYields) {
    bool ran = false;
    auto main = [&]() -> Coroutine<> {
        Task<> t = asyncio::create_task(sets(ran));
        EXPECT_FALSE(ran);
        EXPECT_FALSE(t.done());
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(ran);
        EXPECT_TRUE(t.done());
    };
    asyncio::run(main(), virtual_time());
}

// Past a few thousand frames, frames come from 2 MiB blocks on huge pages, and a ready queue of
// more than 131,072 entries is one too (large_block.hpp): a quarter of a million tasks at once
// exercise both, and every frame must come back (the fixture checks at teardown).
TEST_F(ATask, AQuarterOfAMillionTasksAtOnceAllRunAndFreeTheirFrames) {
    constexpr long kTasks = 250'000;
    const long sum = asyncio::run([]() -> Coroutine<long> {
        std::vector<Task<long>> tasks;
        tasks.reserve(kTasks);
        for (long i = 0; i < kTasks; ++i)
            tasks.push_back(asyncio::create_task([](long v) -> Coroutine<long> { co_return v; }(i)));
        long total = 0;
        for (Task<long>& t : tasks) total += co_await t;
        co_return total;
    }());
    EXPECT_EQ(sum, kTasks * (kTasks - 1) / 2);
}

TEST_F(ATask, ThatReturnedIsDoneNotCancelledAndHasItsResult) {
    auto main = []() -> Coroutine<> {
        Task<int> t = asyncio::create_task(value_after(1s, 5));
        EXPECT_FALSE(t.done());
        co_await asyncio::sleep(2s);
        EXPECT_TRUE(t.done());
        EXPECT_FALSE(t.cancelled());
        EXPECT_EQ(t.result(), 5);
        EXPECT_EQ(t.exception(), nullptr);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, ResultWhilePendingRaisesInvalidStateError) {
    auto main = []() -> Coroutine<> {
        Task<int> t = asyncio::create_task(value_after(1s, 5));
        EXPECT_THROW(t.result(), asyncio::InvalidStateError);
        EXPECT_THROW(t.exception(), asyncio::InvalidStateError);
        EXPECT_EQ(co_await t, 5);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, ThatRaisedRethrowsFromResultAndReturnsItFromException) {
    auto main = []() -> Coroutine<> {
        Task<int> t = asyncio::create_task(fail_after(1s, "bad"));
        co_await asyncio::sleep(1s);
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(t.done());
        EXPECT_FALSE(t.cancelled());
        EXPECT_THROW(t.result(), std::runtime_error);
        std::exception_ptr e = t.exception();
        CO_ASSERT(e != nullptr);
        EXPECT_THROW(std::rethrow_exception(e), std::runtime_error);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, AwaitedFromAnotherTaskYieldsItsValueOrException) {
    auto main = []() -> Coroutine<> {
        Task<int> good = asyncio::create_task(value_after(1s, 1));
        Task<int> bad = asyncio::create_task(fail_after(2s, "bad"));
        EXPECT_EQ(co_await good, 1);
        EXPECT_EQ(elapsed(), 1s);
        EXPECT_THROW(co_await bad, std::runtime_error);
        EXPECT_EQ(elapsed(), 2s);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, AlreadyDoneIsAwaitedWithoutSuspending) {
    auto main = []() -> Coroutine<> {
        Task<int> t = asyncio::create_task(value_after(0s, 3));
        co_await asyncio::sleep(1s);
        CO_ASSERT(t.done());
        bool other_ran = false;
        asyncio::get_running_loop().call_soon([&] { other_ran = true; });
        EXPECT_EQ(co_await t, 3);
        EXPECT_FALSE(other_ran);  // no loop iteration happened in between
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(other_ran);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, HandlesAreSharedViewsOfOneTask) {
    auto main = []() -> Coroutine<> {
        Task<int> a = asyncio::create_task(value_after(1s, 4));
        Task<int> b = a;
        EXPECT_TRUE(a == b);
        Task<int> c = std::move(b);
        EXPECT_FALSE(b);  // NOLINT(bugprone-use-after-move): a moved-from handle is empty
        EXPECT_TRUE(c == a);
        EXPECT_EQ(co_await c, 4);
        EXPECT_EQ(a.result(), 4);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, DefaultNameIsTaskDashNumberAndCanBeChanged) {
    auto main = []() -> Coroutine<> {
        Task<int> a = asyncio::create_task(value_after(0s, 1));
        Task<int> b = asyncio::create_task(value_after(0s, 2));
        const std::regex pattern("Task-[0-9]+");
        EXPECT_TRUE(std::regex_match(a.get_name(), pattern)) << a.get_name();
        EXPECT_TRUE(std::regex_match(b.get_name(), pattern)) << b.get_name();
        EXPECT_NE(a.get_name(), b.get_name());
        EXPECT_EQ(a.get_name(), a.get_name());  // stable
        a.set_name("worker");
        EXPECT_EQ(a.get_name(), "worker");
        Task<int> c = asyncio::create_task(value_after(0s, 3), "named");
        EXPECT_EQ(c.get_name(), "named");
        co_await a;
        co_await b;
        co_await c;
        EXPECT_EQ(a.get_name(), "worker");  // kept once done
    };
    asyncio::run(main(), virtual_time());
}

// ---------------------------------------------------------------------------------------------
// Done callbacks

TEST_F(ATask, DoneCallbackRunsThroughTheLoopAfterTheTaskIsDone) {
    std::vector<std::string> log;
    auto body = [&]() -> Coroutine<int> {
        co_await asyncio::sleep(1s);
        log.push_back("body");
        co_return 6;
    };
    auto main = [&]() -> Coroutine<> {
        Task<int> t = asyncio::create_task(body());
        t.add_done_callback([&](Task<int>& done) {
            EXPECT_TRUE(done.done());
            log.push_back("callback " + std::to_string(done.result()));
        });
        co_await t;
        log.push_back("awaiter");
    };
    asyncio::run(main(), virtual_time());
    // Callbacks and waiters are woken in the order they were registered, one iteration later.
    EXPECT_EQ(log, (std::vector<std::string>{"body", "callback 6", "awaiter"}));
}

TEST_F(ATask, DoneCallbackAddedToAFinishedTaskIsScheduledNotCalled) {
    auto main = []() -> Coroutine<> {
        Task<int> t = asyncio::create_task(value_after(0s, 1));
        co_await t;
        int calls = 0;
        t.add_done_callback([&](const Task<int>&) { ++calls; });
        EXPECT_EQ(calls, 0);
        co_await asyncio::sleep(0s);
        EXPECT_EQ(calls, 1);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, DoneCallbackRunsForAFailedAndForACancelledTask) {
    auto main = []() -> Coroutine<> {
        Task<int> bad = asyncio::create_task(fail_after(1s, "bad"));
        Task<int> gone = asyncio::create_task(value_after(5s, 1));
        std::vector<std::string> seen;
        bad.add_done_callback([&](Task<int>& t) {
            seen.push_back(t.exception() ? "failed" : "ok");
        });
        gone.add_done_callback([&](Task<int>& t) { seen.push_back(t.cancelled() ? "cancelled" : "?"); });
        gone.cancel();
        co_await asyncio::sleep(2s);
        EXPECT_EQ(seen, (std::vector<std::string>{"cancelled", "failed"}));
    };
    asyncio::run(main(), virtual_time());
}

// ---------------------------------------------------------------------------------------------
// Task<> views, current_task, all_tasks

TEST_F(ATask, VoidViewOfATypedTaskSharesItsState) {
    auto main = []() -> Coroutine<> {
        Task<int> typed = asyncio::create_task(value_after(1s, 9));
        Task<> view = typed;
        EXPECT_TRUE(view == Task<>(typed));
        EXPECT_EQ(view.get_name(), typed.get_name());
        EXPECT_FALSE(view.done());
        co_await view;
        EXPECT_TRUE(view.done());
        EXPECT_NO_THROW(view.result());
        EXPECT_EQ(typed.result(), 9);

        Task<> failing = asyncio::create_task(fail_after(1s, "bad"));
        EXPECT_THROW(co_await failing, std::runtime_error);
        EXPECT_THROW(failing.result(), std::runtime_error);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, CurrentTaskIsTheRunningTaskAndEmptyOutsideTasks) {
    EXPECT_FALSE(asyncio::current_task());
    auto child = [](Task<>* seen) -> Coroutine<int> {
        *seen = asyncio::current_task();
        co_return 0;
    };
    auto main = [&]() -> Coroutine<> {
        Task<> me = asyncio::current_task();
        EXPECT_TRUE(me);
        EXPECT_FALSE(me.done());
        Task<> seen;
        Task<int> t = asyncio::create_task(child(&seen));
        co_await t;
        EXPECT_TRUE(seen == Task<>(t));
        EXPECT_FALSE(seen == me);
        EXPECT_TRUE(asyncio::current_task() == me);
        bool in_callback_empty = false;
        asyncio::get_running_loop().call_soon([&] { in_callback_empty = !asyncio::current_task(); });
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(in_callback_empty);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_FALSE(asyncio::current_task());
}

TEST_F(ATask, AllTasksListsThePendingTasksOfTheRunningLoop) {
    EXPECT_THROW(asyncio::all_tasks(), asyncio::RuntimeError);
    auto main = []() -> Coroutine<> {
        Task<> me = asyncio::current_task();
        Task<int> a = asyncio::create_task(value_after(1s, 1));
        Task<int> b = asyncio::create_task(value_after(2s, 2));
        std::vector<Task<>> all = asyncio::all_tasks();
        EXPECT_EQ(all.size(), 3u);
        auto contains = [&](const Task<>& t) {
            for (const auto& x : all)
                if (x == t) return true;
            return false;
        };
        EXPECT_TRUE(contains(me));
        EXPECT_TRUE(contains(a));
        EXPECT_TRUE(contains(b));
        co_await a;
        all = asyncio::all_tasks();
        EXPECT_EQ(all.size(), 2u);
        EXPECT_FALSE(contains(a));
        co_await b;
        EXPECT_EQ(asyncio::all_tasks().size(), 1u);
        EXPECT_EQ(asyncio::all_tasks(asyncio::get_running_loop()).size(), 1u);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, AwaitedByTwoTasksGivesBothTheResult) {
    auto main = []() -> Coroutine<> {
        Task<int> shared = asyncio::create_task(value_after(1s, 11));
        Task<int> w1 = asyncio::create_task(awaits(shared));
        Task<int> w2 = asyncio::create_task(awaits(shared));
        EXPECT_EQ(co_await w1, 11);
        EXPECT_EQ(co_await w2, 11);
        EXPECT_EQ(co_await shared, 11);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, CannotAwaitItself) {
    auto main = []() -> Coroutine<> {
        EXPECT_THROW(co_await asyncio::current_task(), asyncio::RuntimeError);
        co_return;
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ATask, WhoseHandleIsDroppedStillRunsToCompletion) {
    bool finished = false;
    auto main = [&]() -> Coroutine<> {
        asyncio::create_task(sleeps_with(Counted(1), 1s, finished));
        EXPECT_EQ(Counted::live(), 1);
        co_await asyncio::sleep(2s);
        EXPECT_TRUE(finished);
        EXPECT_EQ(Counted::live(), 0);  // the frame was freed when it finished
    };
    asyncio::run(main(), virtual_time());
    EXPECT_TRUE(finished);
}

TEST_F(ATask, MoveOnlyResultIsMovedOutByAwaitingAnRvalue) {
    auto main = []() -> Coroutine<int> {
        Task<std::unique_ptr<int>> t = asyncio::create_task(make_unique_after(1s, 8));
        std::unique_ptr<int> p = co_await std::move(t);
        co_return p ? *p : -1;
    };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), 8);
}

TEST_F(ATask, CopyableResultIsCopiedWhileOtherHandlesRemain) {
    auto main = []() -> Coroutine<> {
        auto make = []() -> Coroutine<std::string> { co_return std::string(100, 'x'); };
        Task<std::string> t = asyncio::create_task(make());
        Task<std::string> other = t;
        std::string a = co_await std::move(t);
        EXPECT_EQ(a.size(), 100u);
        EXPECT_EQ(other.result().size(), 100u);  // not moved from: another handle can look
    };
    asyncio::run(main(), virtual_time());
}

// ---------------------------------------------------------------------------------------------
// Exceptions nobody retrieved

TEST_F(AnUnretrievedTaskException, IsReportedExactlyOnceThroughTheHandler) {
    Reports reports;
    auto main = [&]() -> Coroutine<> {
        reports.install(asyncio::get_running_loop());
        Task<int> t = asyncio::create_task(fails_now("lost"), "loser");
        co_await asyncio::sleep(1s);
        EXPECT_TRUE(t.done());
        EXPECT_EQ(reports.size(), 0u);  // still referenced: someone may look at it yet
        t = Task<int>();
        EXPECT_EQ(reports.size(), 1u);
    };
    asyncio::run(main(), virtual_time());
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_EQ(reports.entries()[0].message, "Task exception was never retrieved");
    EXPECT_EQ(reports.entries()[0].task_name, "loser");
    EXPECT_EQ(reports.what(0), "lost");
}

TEST_F(AnUnretrievedTaskException, OfAFireAndForgetTaskIsReportedWhenItFinishes) {
    Reports reports;
    auto main = [&]() -> Coroutine<> {
        reports.install(asyncio::get_running_loop());
        asyncio::create_task(fail_after(1s, "lost"));
        co_await asyncio::sleep(2s);
        EXPECT_EQ(reports.count("Task exception was never retrieved"), 1u);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(reports.size(), 1u);
}

TEST_F(AnUnretrievedTaskException, IsNotReportedOnceRetrieved) {
    Reports reports;
    auto main = [&]() -> Coroutine<> {
        reports.install(asyncio::get_running_loop());
        Task<int> by_result = asyncio::create_task(fails_now("a"));
        Task<int> by_exception = asyncio::create_task(fails_now("b"));
        Task<int> by_await = asyncio::create_task(fails_now("c"));
        Task<> by_view = Task<>(asyncio::create_task(fails_now("d")));
        co_await asyncio::sleep(1s);
        EXPECT_THROW(by_result.result(), std::runtime_error);
        EXPECT_NE(by_exception.exception(), nullptr);
        EXPECT_THROW(co_await by_await, std::runtime_error);
        EXPECT_THROW(by_view.result(), std::runtime_error);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(reports.size(), 0u);
}

TEST_F(AnUnretrievedTaskException, IsNotReportedForACancelledTask) {
    Reports reports;
    auto main = [&]() -> Coroutine<> {
        reports.install(asyncio::get_running_loop());
        Task<int> t = asyncio::create_task(value_after(10s, 1));
        co_await asyncio::sleep(1s);
        t.cancel();
        co_await asyncio::sleep(1s);
        EXPECT_TRUE(t.cancelled());
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(reports.size(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Cancellation

TEST_F(TaskCancellation, WhileSleepingRaisesCancelledErrorAtTheSleep) {
    std::vector<std::string> log;
    auto sleeper = [&]() -> Coroutine<int> {
        try {
            co_await asyncio::sleep(10s);
            log.push_back("woke");
        } catch (const CancelledError&) {
            log.push_back("cancelled at " + std::to_string(elapsed() / 1s) + "s");
            throw;
        }
        co_return 1;
    };
    auto main = [&]() -> Coroutine<> {
        Task<int> t = asyncio::create_task(sleeper());
        co_await asyncio::sleep(1s);
        EXPECT_TRUE(t.cancel());
        EXPECT_FALSE(t.done());  // the exception is raised when the task next runs
        EXPECT_THROW(co_await t, CancelledError);
        EXPECT_EQ(elapsed(), 1s);
        EXPECT_TRUE(t.done());
        EXPECT_TRUE(t.cancelled());
        EXPECT_THROW(t.result(), CancelledError);
        EXPECT_THROW(t.exception(), CancelledError);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(log, (std::vector<std::string>{"cancelled at 1s"}));
}

TEST_F(TaskCancellation, CanBeCaughtToCleanUpAndReturnAValue) {
    auto defiant = []() -> Coroutine<int> {
        try {
            co_await asyncio::sleep(10s);
        } catch (const CancelledError&) {
        }
        co_await asyncio::sleep(1s);  // cleanup that itself waits
        co_return 7;
    };
    auto main = [&]() -> Coroutine<> {
        Task<int> t = asyncio::create_task(defiant());
        co_await asyncio::sleep(1s);
        EXPECT_TRUE(t.cancel());
        EXPECT_EQ(co_await t, 7);
        EXPECT_EQ(elapsed(), 2s);
        EXPECT_FALSE(t.cancelled());
        EXPECT_EQ(t.cancelling(), 1);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(TaskCancellation, MessageIsCarriedByTheCancelledError) {
    std::string seen;
    auto sleeper = [&]() -> Coroutine<> {
        try {
            co_await asyncio::sleep(10s);
        } catch (const CancelledError& e) {
            seen = e.message();
            throw;
        }
    };
    auto main = [&]() -> Coroutine<> {
        Task<> t = asyncio::create_task(sleeper());
        co_await asyncio::sleep(1s);
        t.cancel("shutting down");
        try {
            co_await t;
            ADD_FAILURE() << "not cancelled";
        } catch (const CancelledError& e) {
            EXPECT_EQ(e.message(), "shutting down");
            EXPECT_STREQ(e.what(), "shutting down");
        }
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(seen, "shutting down");
}

TEST_F(TaskCancellation, OfADoneTaskReturnsFalse) {
    auto main = []() -> Coroutine<> {
        Task<int> t = asyncio::create_task(value_after(1s, 1));
        co_await t;
        EXPECT_FALSE(t.cancel());
        EXPECT_FALSE(t.cancelled());
        EXPECT_EQ(t.cancelling(), 0);
        EXPECT_EQ(t.result(), 1);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(TaskCancellation, RequestsAreCountedByCancellingAndUncancel) {
    int remaining_after_uncancel = -1;
    auto defiant = [&]() -> Coroutine<int> {
        try {
            co_await asyncio::sleep(10s);
        } catch (const CancelledError&) {
            remaining_after_uncancel = asyncio::current_task().uncancel();
        }
        co_return 3;
    };
    auto main = [&]() -> Coroutine<> {
        Task<int> t = asyncio::create_task(defiant());
        co_await asyncio::sleep(1s);
        EXPECT_EQ(t.cancelling(), 0);
        EXPECT_TRUE(t.cancel());
        EXPECT_TRUE(t.cancel());
        EXPECT_EQ(t.cancelling(), 2);
        EXPECT_EQ(co_await t, 3);
        EXPECT_EQ(remaining_after_uncancel, 1);
        EXPECT_EQ(t.cancelling(), 1);
        EXPECT_EQ(t.uncancel(), 0);
        EXPECT_EQ(t.uncancel(), 0);  // never below zero
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(TaskCancellation, BeforeTheTaskEverRanFinishesItCancelledWithoutRunningItsBody) {
    bool body_ran = false;
    auto body = [&](Counted) -> Coroutine<int> {
        body_ran = true;
        co_return 1;
    };
    auto main = [&]() -> Coroutine<> {
        Task<int> t = asyncio::create_task(body(Counted(1)));
        EXPECT_TRUE(t.cancel());
        EXPECT_THROW(co_await t, CancelledError);
        EXPECT_TRUE(t.cancelled());
        EXPECT_FALSE(body_ran);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_FALSE(body_ran);
}

TEST_F(TaskCancellation, OfATaskAwaitingAnotherCancelsTheInnerOne) {
    auto main = []() -> Coroutine<> {
        Task<int> inner = asyncio::create_task(value_after(10s, 1));
        Task<int> outer = asyncio::create_task(awaits(inner));
        co_await asyncio::sleep(1s);
        EXPECT_TRUE(outer.cancel());
        EXPECT_THROW(co_await outer, CancelledError);
        EXPECT_EQ(elapsed(), 1s);
        EXPECT_TRUE(inner.cancelled());
        EXPECT_TRUE(outer.cancelled());
        EXPECT_EQ(inner.cancelling(), 1);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(TaskCancellation, OfATaskThatIsAlreadyScheduledRaisesAtItsNextResumption) {
    std::vector<std::string> log;
    auto yielder = [&]() -> Coroutine<> {
        log.push_back("before yield");
        try {
            co_await asyncio::sleep(0s);  // scheduled again at once
            log.push_back("after yield");
        } catch (const CancelledError&) {
            log.push_back("cancelled at yield");
            throw;
        }
    };
    auto main = [&]() -> Coroutine<> {
        Task<> t = asyncio::create_task(yielder());
        co_await asyncio::sleep(0s);  // t ran first and is now scheduled, not yet resumed
        EXPECT_EQ(log, (std::vector<std::string>{"before yield"}));
        EXPECT_TRUE(t.cancel());
        EXPECT_THROW(co_await t, CancelledError);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(log, (std::vector<std::string>{"before yield", "cancelled at yield"}));
}

TEST_F(TaskCancellation, OfATaskWokenByItsAwaitedTaskRaisesInsteadOfTheResult) {
    auto main = []() -> Coroutine<> {
        Task<int> inner = asyncio::create_task(value_after(1s, 5));
        Task<int> waiter = asyncio::create_task(awaits(inner));
        co_await asyncio::sleep(0s);  // both started: inner's timer is ahead of ours
        co_await asyncio::sleep(1s);
        // inner finished in this iteration, before us; waiter is woken but has not run yet.
        CO_ASSERT(inner.done());
        EXPECT_FALSE(waiter.done());
        EXPECT_TRUE(waiter.cancel());
        EXPECT_THROW(co_await waiter, CancelledError);
        EXPECT_EQ(inner.result(), 5);
        EXPECT_FALSE(inner.cancelled());
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(TaskCancellation, OfTheRunningTaskItselfRaisesAtItsNextSuspension) {
    auto main = []() -> Coroutine<> {
        auto self_cancelling = []() -> Coroutine<int> {
            EXPECT_TRUE(asyncio::current_task().cancel());
            int reached = 1;  // still running: nothing is raised until the task suspends
            co_await asyncio::sleep(1s);
            co_return reached;
        };
        Task<int> t = asyncio::create_task(self_cancelling());
        EXPECT_THROW(co_await t, CancelledError);
        EXPECT_EQ(elapsed(), 0s);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(TaskCancellation, ReleasesTheFramesOfTheCancelledTaskAndWhatItAwaited) {
    auto leaf = [](Counted c) -> Coroutine<int> {
        co_await asyncio::sleep(10s);
        co_return c.value();
    };
    auto middle = [&](Counted c) -> Coroutine<int> { co_return c.value() + co_await leaf(Counted(2)); };
    auto main = [&]() -> Coroutine<> {
        Task<int> t = asyncio::create_task(middle(Counted(1)));
        co_await asyncio::sleep(1s);
        EXPECT_EQ(Counted::live(), 3);  // both parameters, and the temporary Counted(2) in middle
        t.cancel();
        EXPECT_THROW(co_await t, CancelledError);
        t = Task<int>();
        EXPECT_EQ(Counted::live(), 0);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(TaskCancellation, RegressionALaterCancelReusesTheEarlierMessage) {
    // Python: the message goes with the one cancellation that delivers it.
    std::vector<std::string> seen;
    auto twice = [&]() -> Coroutine<> {
        try {
            co_await asyncio::sleep(10s);
        } catch (const CancelledError& e) {
            seen.push_back(e.message());
        }
        co_await asyncio::sleep(10s);
    };
    auto main = [&]() -> Coroutine<> {
        Task<> t = asyncio::create_task(twice());
        co_await asyncio::sleep(1s);
        t.cancel("first");
        co_await asyncio::sleep(1s);
        t.cancel();
        try {
            co_await t;
        } catch (const CancelledError& e) {
            seen.push_back(e.message());
        }
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(seen, (std::vector<std::string>{"first", ""}));
}

TEST_F(TaskCancellation, RegressionCancelMessageIsNotPassedToTheAwaitedTask) {
    // Python passes cancel(msg) on to the awaited task, so its CancelledError carries msg.
    std::string inner_saw = "<none>";
    auto inner_body = [&]() -> Coroutine<int> {
        try {
            co_await asyncio::sleep(10s);
        } catch (const CancelledError& e) {
            inner_saw = e.message();
            throw;
        }
        co_return 0;
    };
    auto main = [&]() -> Coroutine<> {
        Task<int> inner = asyncio::create_task(inner_body());
        Task<int> outer = asyncio::create_task(awaits(inner));
        co_await asyncio::sleep(1s);
        outer.cancel("bye");
        try {
            co_await outer;
        } catch (const CancelledError& e) {
            EXPECT_EQ(e.message(), "bye");
        }
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(inner_saw, "bye");
}

TEST_F(TaskCancellation, TwoRequestsBeforeDeliveryRaiseTheFirstMessage) {
    std::string seen = "<none>";
    auto sleeper = [&]() -> Coroutine<> {
        try {
            co_await asyncio::sleep(10s);
        } catch (const CancelledError& e) {
            seen = e.message();
        }
    };
    auto main = [&]() -> Coroutine<> {
        Task<> t = asyncio::create_task(sleeper());
        co_await asyncio::sleep(1s);
        t.cancel("first");
        t.cancel();
        t.cancel("third");
        co_await t;
        EXPECT_EQ(t.cancelling(), 3);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(seen, "first");  // as Python 3.12, where the first request cancels the awaited future
}

TEST_F(TaskCancellation, RegressionCancelOfAWaitingTaskOutsideTheRunningLoopCrashes) {
    // As in asyncio, cancel() may be called while the loop is not running (between runs, or in
    // asyncio::run's shutdown); the task raises CancelledError when the loop runs again. The
    // sleep's cancel hook used to dereference the null running loop.
    asyncio::EventLoop loop(virtual_time());
    Task<int> sleeping = loop.create_task(value_after(10s, 1));
    Task<int> unstarted;
    loop.call_soon([&] {
        unstarted = loop.create_task(value_after(10s, 2));
        loop.stop();
    });
    loop.run_forever();  // `sleeping` now waits in its sleep; `unstarted` has not run yet
    const auto before = loop.time();
    EXPECT_TRUE(sleeping.cancel("from outside"));
    EXPECT_EQ(sleeping.cancelling(), 1);
    EXPECT_TRUE(unstarted.cancel());
    try {
        loop.run_until_complete(sleeping);
        ADD_FAILURE() << "not cancelled";
    } catch (const CancelledError& e) {
        EXPECT_EQ(e.message(), "from outside");
    }
    EXPECT_THROW(loop.run_until_complete(unstarted), CancelledError);
    EXPECT_EQ(loop.time(), before);  // the sleep's timer was removed, not waited for
}

TEST_F(TaskCancellation, OfAWaitingTaskOfAnotherLoopWhileNoLoopRunsWorksAsAsyncio) {
    // A task knows its loop: cancel() between runs reaches it whichever loop it is (asyncio lets
    // cancel() be called from outside the loop's run).
    asyncio::EventLoop first(virtual_time());
    asyncio::EventLoop second(virtual_time());
    Task<int> t = second.create_task(value_after(10s, 1));
    second.call_soon([&] { second.stop(); });
    second.run_forever();
    EXPECT_TRUE(t.cancel());
    EXPECT_EQ(t.cancelling(), 1);
    EXPECT_THROW(second.run_until_complete(t), CancelledError);
    EXPECT_TRUE(t.cancelled());
}

TEST_F(ATask, RegressionAddDoneCallbackToADoneTaskOutsideTheLoopCrashes) {
    // It used to need a running loop (a task did not know its own); now it is scheduled on the
    // task's loop, as asyncio's call_soon, and runs in that loop's next run.
    asyncio::EventLoop loop(virtual_time());
    Task<int> t = loop.create_task(value_after(0s, 1));
    EXPECT_EQ(loop.run_until_complete(t), 1);
    int calls = 0;
    t.add_done_callback([&](Task<int>& done) { calls += done.result(); });
    EXPECT_EQ(calls, 0);
    loop.run_until_complete([]() -> Coroutine<> { co_return; }());
    EXPECT_EQ(calls, 1);
    loop.close();
    EXPECT_THROW(t.add_done_callback([&](Task<int>&) { ++calls; }), asyncio::RuntimeError);
}

}  // namespace

// Reliability issue #7 (3): a task parked here, its loop destroyed, its last handle dropped
// afterwards: the frame's destruction must not touch the dead loop (ASan: heap-use-after-free).
namespace {
using asyncio_test::destroy_loop_then_task;

TEST_F(ATask, RegressionTaskHandleOutlivingItsLoopWhileAwaitingAnotherTask) {
    destroy_loop_then_task([](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([]() -> asyncio::Coroutine<> {
            co_await asyncio::create_task([]() -> asyncio::Coroutine<> {
                co_await asyncio::wait_for(asyncio_test::sleep_a_day(), std::chrono::minutes(1));
            }());
        }());
    });
}

// Between close() and the loop's destruction the frame may go too (it still sees the closed loop).
TEST_F(ATask, RegressionTaskHandleDroppedBetweenCloseAndTheLoopsDestruction) {
    auto loop = std::make_unique<asyncio::EventLoop>(virtual_time());
    asyncio::Task<> a = loop->create_task([]() -> asyncio::Coroutine<> {
        co_await asyncio::wait_for(asyncio_test::sleep_a_day(), std::chrono::minutes(1));
    }());
    asyncio::Task<> b = loop->create_task([]() -> asyncio::Coroutine<> {
        co_await asyncio::wait_for(asyncio_test::sleep_a_day(), std::chrono::minutes(1));
    }());
    loop->run_until_complete([]() -> asyncio::Coroutine<> { co_await asyncio::sleep(std::chrono::seconds(1)); }());
    loop->close();
    a = asyncio::Task<>();  // freed while the closed loop still exists
    loop.reset();
    EXPECT_FALSE(b.done());
    b = asyncio::Task<>();  // freed after it
}
}  // namespace

// Reliability issue #7 (4): cancellation travels down an await chain of any depth, and a chain of
// frames holding each other's handles is freed, in constant stack. (Recursion used to overflow a
// 8 MiB stack at 100,000 tasks in Release, at 10,000 under ASan.)
namespace {

using asyncio_test::run_on_small_stack;

constexpr int kDeep = 100'000;

Coroutine<> awaits_task(Task<> inner) { co_await inner; }

/// A chain of `depth` tasks, each awaiting the next, the innermost waiting on `never`; made
/// innermost first, so that the outermost is the newest. Returns the outermost.
Task<> await_chain(int depth, asyncio::Event& never) {
    Task<> t = asyncio::create_task([](asyncio::Event& e) -> Coroutine<> { co_await e.wait(); }(never));
    for (int i = 1; i < depth; ++i) t = asyncio::create_task(awaits_task(std::move(t)));
    return t;
}

using asyncio_test::chain_link;

Coroutine<> cancel_the_outermost_of_a_chain(int depth) {
    asyncio::Event never;
    Task<> outer = await_chain(depth, never);
    co_await asyncio::sleep(0s);  // every task has started and waits on the next
    EXPECT_TRUE(outer.cancel());
    EXPECT_EQ(outer.cancelling(), 1);
    EXPECT_THROW(co_await outer, CancelledError);
    EXPECT_TRUE(outer.cancelled());
}

TEST_F(TaskCancellation, RegressionCancellingAHundredThousandDeepAwaitChainOverflowsTheStack) {
    asyncio::run(cancel_the_outermost_of_a_chain(kDeep), virtual_time());
}

TEST_F(TaskCancellation, RegressionCancellingADeepAwaitChainOnASmallStack) {
    // 256 KiB: a recursion of one level per task would need far more.
    ASSERT_TRUE(run_on_small_stack(256 * 1024, [] {
        asyncio::run(cancel_the_outermost_of_a_chain(kDeep), virtual_time());
    }));
}

TEST_F(TaskCancellation, RegressionCancellingAChainMadeByEachTaskCreatingTheNext) {
    auto main = []() -> Coroutine<> {
        asyncio::Event never;
        int built = 0;
        Task<> outer = asyncio::create_task(chain_link(kDeep, built, never));
        while (built < kDeep) co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(outer.cancel("stop"));
        try {
            co_await outer;
            ADD_FAILURE() << "not cancelled";
        } catch (const CancelledError& e) {
            EXPECT_STREQ(e.what(), "stop");  // the message travelled down and back up
        }
    };
    asyncio::run(main(), virtual_time());
}

// The order in which the hooks run is the recursion's: depth first, in the order requested.
TEST_F(TaskCancellation, CancellationReachesNestedAwaitsDepthFirstInRequestOrder) {
    auto main = []() -> Coroutine<> {
        std::vector<std::string> order;
        auto leaf = [](std::vector<std::string>& o, std::string name) -> Coroutine<> {
            try {
                co_await asyncio::sleep(1h);
            } catch (const CancelledError&) {
                o.push_back(name);
                throw;
            }
        };
        auto pair = [](Task<> a, Task<> b) -> Coroutine<> {
            co_await asyncio::gather(a, b);
        };
        Task<> a1 = asyncio::create_task(leaf(order, "a1"));
        Task<> a2 = asyncio::create_task(leaf(order, "a2"));
        Task<> b = asyncio::create_task(leaf(order, "b"));
        Task<> a = asyncio::create_task(pair(a1, a2));
        Task<> top = asyncio::create_task(pair(a, b));
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        top.cancel();
        EXPECT_THROW(co_await top, CancelledError);
        // Breadth first would have woken b first.
        EXPECT_EQ(order, (std::vector<std::string>{"a1", "a2", "b"}));
    };
    asyncio::run(main(), virtual_time());
}

// close() with a chain pending, made outermost first: the loop frees the innermost first, and
// each frame then holds the last handle of the next.
TEST_F(ATask, RegressionClosingALoopWithADeepAwaitChainPendingFreesItInConstantStack) {
    asyncio::Event never;
    {
        asyncio::EventLoop loop(virtual_time());
        int built = 0;
        loop.create_task(chain_link(kDeep, built, never));
        while (built < kDeep) loop.run_until_complete([]() -> Coroutine<> { co_await asyncio::sleep(0s); }());
        Reports reports;
        reports.install(loop);
        loop.close();
        EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), static_cast<std::size_t>(kDeep));
    }
}

// A chain whose outermost handle outlives the loop: dropping it frees the whole chain.
TEST_F(ATask, RegressionDroppingTheLastHandleOfADeepChainThatOutlivedItsLoop) {
    asyncio::Event never;
    Task<> outer;
    {
        auto loop = std::make_unique<asyncio::EventLoop>(virtual_time());
        outer = loop->create_task([](asyncio::Event& e) -> Coroutine<> {
            Task<> t = await_chain(kDeep, e);
            co_await t;
        }(never));
        loop->run_until_complete([]() -> Coroutine<> {
            co_await asyncio::sleep(0s);
            co_await asyncio::sleep(0s);
        }());
        loop.reset();
    }
    Reports reports;
    asyncio::EventLoop other(virtual_time());  // the thread's loop now: it gets the reports
    reports.install(other);
    outer = Task<>();  // kDeep + 1 frames, each holding the last handle of the next
    EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), static_cast<std::size_t>(kDeep + 1));
}

}  // namespace

namespace {

// CPython 3.13's texts (checked): result() of a pending task says "Result is not set.",
// exception() says "Exception is not set.".
TEST_F(ATask, ResultAndExceptionOfAPendingTaskRaiseCPythonsTexts) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::Event never;
        Task<> t = asyncio::create_task([](asyncio::Event& e) -> Coroutine<> { co_await e.wait(); }(never));
        try {
            t.result();
            ADD_FAILURE() << "result() of a pending task returned";
        } catch (const asyncio::InvalidStateError& e) {
            EXPECT_STREQ(e.what(), "Result is not set.");
        }
        try {
            (void)t.exception();
            ADD_FAILURE() << "exception() of a pending task returned";
        } catch (const asyncio::InvalidStateError& e) {
            EXPECT_STREQ(e.what(), "Exception is not set.");
        }
        t.cancel();
        co_await asyncio::sleep(std::chrono::seconds(0));
    }());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Scenarios run on CPython 3.13 (tests/cpython_scenarios/): each test prints the same lines as its
// Python script and expects what CPython printed (the comment at the bottom of the script).

namespace {

class LikeCPython : public asyncio_test::LeakChecked {};

std::string joined(const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
    return out;
}
std::string py(bool b) { return b ? "True" : "False"; }

Coroutine<int> completes_at_once() { co_return 1; }

// s1_self_cancel.py: a task that cancels itself finishes cancelled even if it returns a value
// without awaiting anything (Task.__step: StopIteration with _must_cancel set); an exception it
// raises instead is kept; an await after the request raises one iteration later (after a callback
// scheduled before the await), and what it awaits is cancelled with the message (a child task), or
// not (a shielded one).
TEST_F(LikeCPython, S1ATaskThatCancelsItself) {
    std::vector<std::string> lines;
    auto main = [&]() -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        std::vector<std::string> log;
        auto returns = [&]() -> Coroutine<int> {
            asyncio::current_task().cancel("self");
            co_return 42;
        };
        auto raises = [&]() -> Coroutine<int> {
            asyncio::current_task().cancel("self");
            throw std::invalid_argument("boom");
            co_return 0;
        };
        auto awaits_sync_coro = [&]() -> Coroutine<int> {
            asyncio::current_task().cancel("self");
            const int v = co_await completes_at_once();
            log.push_back("sync coro returned " + std::to_string(v));
            co_return 43;
        };
        auto awaits = [&](int kind) -> Coroutine<int> {
            asyncio::current_task().cancel("self");
            loop.call_soon([&] { log.push_back("callback scheduled before the await"); });
            try {
                asyncio::Event never;
                if (kind == 0)
                    co_await asyncio::sleep(0s);
                else if (kind == 1)
                    co_await asyncio::sleep(1s);
                else
                    co_await never.wait();
                log.push_back("await returned");
            } catch (const CancelledError& e) {
                log.push_back("CancelledError(" + e.message() + ") at the await");
                throw;
            }
            co_return 0;
        };
        auto child = [&]() -> Coroutine<int> {
            try {
                co_await asyncio::sleep(10s);
            } catch (const CancelledError& e) {
                log.push_back("child: CancelledError(" + e.message() + ")");
                throw;
            }
            co_return 1;
        };
        auto awaits_child = [&](bool shielded) -> Coroutine<int> {
            Task<int> c = asyncio::create_task(child());
            co_await asyncio::sleep(0s);
            asyncio::current_task().cancel("self");
            try {
                if (shielded)
                    co_await asyncio::shield(c);
                else
                    co_await c;
            } catch (const CancelledError& e) {
                log.push_back("CancelledError(" + e.message() + ") at the await; child done()=" +
                              py(c.done()));
                c.cancel();
                throw;
            }
            co_return 0;
        };
        auto attempt = [&](std::string name, Coroutine<int> body) -> Coroutine<> {
            log.clear();
            Task<int> t = asyncio::create_task(std::move(body));
            try {
                const int r = co_await t;
                log.push_back("result " + std::to_string(r));
            } catch (const CancelledError& e) {
                log.push_back("awaiter: CancelledError(" + e.message() + ")");
            } catch (const std::invalid_argument& e) {
                log.push_back(std::string("awaiter: ValueError(") + e.what() + ")");
            }
            log.push_back("cancelled()=" + py(t.cancelled()) + " cancelling()=" + std::to_string(t.cancelling()));
            lines.push_back(name + ": " + joined(log));
        };
        co_await attempt("returns", returns());
        co_await attempt("raises", raises());
        co_await attempt("awaits_sync_coro", awaits_sync_coro());
        co_await attempt("awaits sleep(0)", awaits(0));
        co_await attempt("awaits sleep(1)", awaits(1));
        co_await attempt("awaits Event.wait()", awaits(2));
        co_await attempt("awaits a child task", awaits_child(false));
        co_await attempt("awaits shield(child task)", awaits_child(true));
    };
    asyncio::run(main(), virtual_time());
    const std::string cancelled = "awaiter: CancelledError(self); cancelled()=True cancelling()=1";
    const std::string callback = "callback scheduled before the await; CancelledError(self) at the await; ";
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "returns: " + cancelled,
                         "raises: awaiter: ValueError(boom); cancelled()=False cancelling()=1",
                         "awaits_sync_coro: sync coro returned 1; " + cancelled,
                         "awaits sleep(0): " + callback + cancelled,
                         "awaits sleep(1): " + callback + cancelled,
                         "awaits Event.wait(): " + callback + cancelled,
                         "awaits a child task: child: CancelledError(self); CancelledError(self) at the "
                         "await; child done()=True; " + cancelled,
                         "awaits shield(child task): CancelledError(self) at the await; child "
                         "done()=False; child: CancelledError(); " + cancelled,
                     }));
}

// s3_cancel_messages.py: which message a cancellation carries when cancel(msg) is called more than
// once. A request that reaches a task suspended on something cancellable goes there with its
// message, and that delivery keeps it (later requests before the task runs are counted, their
// messages dropped); a request that finds the task waiting on nothing (before its first step,
// running, scheduled) sets the message of the pending cancellation: the last one wins.
TEST_F(LikeCPython, S3WhichCancelMessageWins) {
    std::vector<std::string> lines;
    auto main = [&]() -> Coroutine<> {
        std::vector<std::string> log;
        auto msg = [](const CancelledError& e) {
            return e.message().empty() ? std::string("<none>") : "'" + e.message() + "'";
        };
        auto sleeper = [&](bool catch_first, asyncio::Duration second) -> Coroutine<> {
            try {
                co_await asyncio::sleep(10s);
            } catch (const CancelledError& e) {
                log.push_back("first: " + msg(e));
                if (!catch_first) throw;
            }
            // (outside the handler: the handler's exception is gone, as Python's `except` block)
            if (catch_first) log.push_back("uncancel() -> " + std::to_string(asyncio::current_task().uncancel()));
            try {
                co_await asyncio::sleep(second);
                log.push_back("second sleep returned");
            } catch (const CancelledError& e) {
                log.push_back("second: " + msg(e));
                throw;
            }
        };
        auto yielder = [&]() -> Coroutine<> {
            try {
                for (;;) co_await asyncio::sleep(0s);
            } catch (const CancelledError& e) {
                log.push_back("yielder: " + msg(e));
                throw;
            }
        };
        auto outcome = [&](Task<> t) -> Coroutine<std::string> {
            try {
                co_await t;
                log.push_back("returned");
            } catch (const CancelledError& e) {
                log.push_back("awaiter sees " + msg(e));
            }
            co_return joined(log);
        };
        auto start = [&](Coroutine<> c) {
            log.clear();
            return asyncio::create_task(std::move(c));
        };

        Task<> t = start(sleeper(false, 10s));
        t.cancel("a");
        t.cancel("b");
        lines.push_back("a) 'a' then 'b' before the first step: " + co_await outcome(t));

        t = start(sleeper(false, 10s));
        t.cancel("a");
        t.cancel();
        lines.push_back("b) 'a' then none before the first step: " + co_await outcome(t));

        t = start(sleeper(false, 10s));
        co_await asyncio::sleep(0s);
        t.cancel("a");
        t.cancel("b");
        lines.push_back("c) 'a' then 'b' while suspended: " + co_await outcome(t));

        t = start(sleeper(false, 10s));
        co_await asyncio::sleep(0s);
        t.cancel();
        t.cancel("b");
        lines.push_back("d) none then 'b' while suspended: " + co_await outcome(t));

        t = start(yielder());
        co_await asyncio::sleep(0s);
        t.cancel("a");
        t.cancel("b");
        lines.push_back("e) 'a' then 'b' while scheduled (sleep(0)): " + co_await outcome(t));

        t = start(sleeper(true, 10s));
        co_await asyncio::sleep(0s);
        t.cancel("a");
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        t.cancel("b");
        lines.push_back("f) caught 'a', awaits again, then 'b': " + co_await outcome(t));

        t = start(sleeper(true, 10s));
        co_await asyncio::sleep(0s);
        t.cancel("a");
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        t.cancel();
        lines.push_back("g) caught 'a', awaits again, then none: " + co_await outcome(t));

        t = start(sleeper(true, 10ms));
        co_await asyncio::sleep(0s);
        t.cancel("a");
        t.cancel("b");
        lines.push_back("h) 'a' then 'b' while suspended, caught, awaits again: " + co_await outcome(t) +
                        " cancelling()=" + std::to_string(t.cancelling()));
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "a) 'a' then 'b' before the first step: awaiter sees 'b'",
                         "b) 'a' then none before the first step: awaiter sees <none>",
                         "c) 'a' then 'b' while suspended: first: 'a'; awaiter sees 'a'",
                         "d) none then 'b' while suspended: first: <none>; awaiter sees <none>",
                         "e) 'a' then 'b' while scheduled (sleep(0)): yielder: 'b'; awaiter sees 'b'",
                         "f) caught 'a', awaits again, then 'b': first: 'a'; uncancel() -> 0; second: 'b'; "
                         "awaiter sees 'b'",
                         "g) caught 'a', awaits again, then none: first: 'a'; uncancel() -> 0; second: "
                         "<none>; awaiter sees <none>",
                         "h) 'a' then 'b' while suspended, caught, awaits again: first: 'a'; uncancel() -> "
                         "1; second sleep returned; returned cancelling()=1",
                     }));
}

// s11_pending_cancel_reaches_what_is_awaited.py: a task that cancelled itself with a message and
// then awaits a future, a gather, a wait() or the end of a TaskGroup: the cancellation reaches what
// it awaits once the step is over, with the message (the group's tasks are cancelled without it,
// and the CancelledError that propagates from the group carries it).
TEST_F(LikeCPython, S11APendingCancellationReachesWhatTheTaskAwaits) {
    std::vector<std::string> lines;
    auto main = [&]() -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        auto args = [](const CancelledError& e) {
            return e.message().empty() ? std::string("<none>") : "'" + e.message() + "'";
        };
        // a)
        asyncio::Future<int> fut = loop.create_future<int>();
        auto awaits_future = [](asyncio::Future<int> f) -> Coroutine<> {
            asyncio::current_task().cancel("m");
            (void)co_await f;
        };
        Task<> t = asyncio::create_task(awaits_future(fut));
        try {
            co_await t;
        } catch (const CancelledError& e) {
            std::string with;
            try {
                (void)fut.result();
            } catch (const CancelledError& f) {
                with = args(f);
            }
            lines.push_back("a) future: awaiter sees " + args(e) + "; future cancelled()=" +
                            py(fut.cancelled()) + " with " + with);
        }
        // b)
        std::vector<std::string> log;
        auto child = [&](int i) -> Coroutine<> {
            try {
                co_await asyncio::sleep(10s);
            } catch (const CancelledError& e) {
                log.push_back("child " + std::to_string(i) + ": " + args(e));
                throw;
            }
        };
        auto awaits_gather = [&]() -> Coroutine<> {
            Task<> c1 = asyncio::create_task(child(1));
            Task<> c2 = asyncio::create_task(child(2));
            co_await asyncio::sleep(0s);
            asyncio::current_task().cancel("m");
            (void)co_await asyncio::gather(c1, c2);
        };
        t = asyncio::create_task(awaits_gather());
        try {
            co_await t;
        } catch (const CancelledError& e) {
            lines.push_back("b) gather: " + joined(log) + "; awaiter sees " + args(e));
        }
        // c)
        Task<> c1;
        auto awaits_wait = [&]() -> Coroutine<> {
            c1 = asyncio::create_task(asyncio::sleep(10ms));
            asyncio::current_task().cancel("m");
            std::vector<Task<>> one;
            one.push_back(c1);
            (void)co_await asyncio::wait(std::move(one));
        };
        t = asyncio::create_task(awaits_wait());
        try {
            co_await t;
        } catch (const CancelledError& e) {
            lines.push_back("c) wait: awaiter sees " + args(e) + "; the child done()=" + py(c1.done()));
        }
        co_await c1;
        // d)
        log.clear();
        auto ends_group = [&]() -> Coroutine<> {
            asyncio::TaskGroup g;
            co_await g.run([&]() -> Coroutine<> {
                (void)g.create_task(child(3));
                co_await asyncio::sleep(0s);
                asyncio::current_task().cancel("m");
            }());
        };
        t = asyncio::create_task(ends_group());
        try {
            co_await t;
        } catch (const CancelledError& e) {
            lines.push_back("d) TaskGroup: " + joined(log) + "; awaiter sees " + args(e));
        }
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "a) future: awaiter sees 'm'; future cancelled()=True with 'm'",
                         "b) gather: child 1: 'm'; child 2: 'm'; awaiter sees 'm'",
                         "c) wait: awaiter sees 'm'; the child done()=False",
                         "d) TaskGroup: child 3: <none>; awaiter sees 'm'",
                     }));
}

// A task that cancelled itself and returned a value used to finish with the value (not cancelled);
// the value is now dropped (destroyed once, whether it lives in the frame's word or beside it).
TEST_F(TaskCancellation, RegressionATaskThatCancelsItselfAndReturnsFinishesCancelled) {
    auto main = []() -> Coroutine<> {
        auto small = []() -> Coroutine<Counted> {
            asyncio::current_task().cancel("mine");
            co_return Counted(5);
        };
        auto big = []() -> Coroutine<std::string> {
            asyncio::current_task().cancel();
            co_return std::string(100, 'x');
        };
        auto nothing = []() -> Coroutine<> {
            asyncio::current_task().cancel();
            co_return;
        };
        Task<Counted> a = asyncio::create_task(small());
        Task<std::string> b = asyncio::create_task(big());
        Task<> c = asyncio::create_task(nothing());
        try {
            (void)co_await a;
            ADD_FAILURE() << "returned its value";
        } catch (const CancelledError& e) {
            EXPECT_EQ(e.message(), "mine");
        }
        EXPECT_THROW((void)co_await b, CancelledError);
        EXPECT_THROW(co_await c, CancelledError);
        EXPECT_TRUE(a.cancelled() && b.cancelled() && c.cancelled());
        EXPECT_EQ(Counted::live(), 0);
    };
    asyncio::run(main(), virtual_time());
}

// A task that cancelled itself and then awaited another task used to raise at once, leaving the
// awaited task running; as asyncio, the cancellation now reaches the awaited task (with its
// message), and the awaiting task gets that task's CancelledError.
TEST_F(TaskCancellation, RegressionAPendingCancellationIsPassedToTheTaskItAwaits) {
    auto main = []() -> Coroutine<> {
        Task<int> inner = asyncio::create_task(value_after(10s, 1));
        auto outer = [](Task<int> inner) -> Coroutine<int> {
            asyncio::current_task().cancel("both");
            co_return co_await inner;
        };
        Task<int> t = asyncio::create_task(outer(inner));
        try {
            (void)co_await t;
            ADD_FAILURE() << "not cancelled";
        } catch (const CancelledError& e) {
            EXPECT_EQ(e.message(), "both");
        }
        EXPECT_TRUE(inner.cancelled());
        EXPECT_EQ(inner.cancelling(), 1);
        EXPECT_EQ(elapsed(), 0s);
    };
    asyncio::run(main(), virtual_time());
}

// Two requests while nothing is awaited (before the first step, or while the task is scheduled):
// the first message used to win; in asyncio the last one does, and one without a message clears it.
TEST_F(TaskCancellation, RegressionWhileNothingIsAwaitedTheLastCancelMessageWins) {
    auto main = []() -> Coroutine<> {
        auto message_of = [](Task<int>& t) -> Coroutine<std::string> {
            try {
                (void)co_await t;
            } catch (const CancelledError& e) {
                co_return e.message();
            }
            co_return "<not cancelled>";
        };
        Task<int> t = asyncio::create_task(value_after(10s, 1));
        t.cancel("a");
        t.cancel("b");
        EXPECT_EQ(co_await message_of(t), "b");
        t = asyncio::create_task(value_after(10s, 1));
        t.cancel("a");
        t.cancel();
        EXPECT_EQ(co_await message_of(t), "");
        // Suspended on a sleep: the first request wakes it, and its message stays.
        t = asyncio::create_task(value_after(10s, 1));
        co_await asyncio::sleep(0s);
        t.cancel();
        t.cancel("b");
        EXPECT_EQ(co_await message_of(t), "");
    };
    asyncio::run(main(), virtual_time());
}

}  // namespace
