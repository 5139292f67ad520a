// asyncio::sleep: yielding with sleep(0), exact virtual durations in any unit, far-off deadlines,
// misuse outside a task, and cancellation releasing the timer.
#include "asyncio/sleep.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <ratio>
#include <exception>
#include <string>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/run.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::Coroutine;
using asyncio::Task;
using asyncio_test::Counted;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class Sleep : public asyncio_test::LeakChecked {};

using asyncio_test::elapsed;

TEST_F(Sleep, ZeroYieldsExactlyOneIteration) {
    std::vector<std::string> order;
    auto main = [&]() -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        loop.call_soon([&] {
            order.push_back("callback scheduled before");
            loop.call_soon([&] { order.push_back("callback scheduled by it"); });
        });
        const auto before = loop.stats().iterations;
        co_await asyncio::sleep(0s);
        order.push_back("task");
        EXPECT_EQ(loop.stats().iterations, before + 1);
        EXPECT_EQ(elapsed(), 0s);
        co_await asyncio::sleep(0s);
        order.push_back("task again");
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(order, (std::vector<std::string>{"callback scheduled before", "task",
                                               "callback scheduled by it", "task again"}));
}

TEST_F(Sleep, ZeroLetsOtherTasksTakeTurns) {
    std::vector<std::string> order;
    auto worker = [&](std::string name) -> Coroutine<> {
        for (int i = 0; i < 3; ++i) {
            order.push_back(name + std::to_string(i));
            co_await asyncio::sleep(0s);
        }
    };
    auto main = [&]() -> Coroutine<> {
        Task<> a = asyncio::create_task(worker("a"));
        Task<> b = asyncio::create_task(worker("b"));
        co_await a;
        co_await b;
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(order, (std::vector<std::string>{"a0", "b0", "a1", "b1", "a2", "b2"}));
}

TEST_F(Sleep, NegativeDelayBehavesLikeZero) {
    auto main = []() -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        bool other = false;
        loop.call_soon([&] { other = true; });
        co_await asyncio::sleep(-5s);
        EXPECT_TRUE(other);
        EXPECT_EQ(elapsed(), 0s);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(Sleep, LastsExactlyItsDurationInAnyUnit) {
    auto main = []() -> Coroutine<> {
        co_await asyncio::sleep(1ns);
        EXPECT_EQ(elapsed(), 1ns);
        co_await asyncio::sleep(2us);
        EXPECT_EQ(elapsed(), 1ns + 2us);
        co_await asyncio::sleep(1500ms);
        EXPECT_EQ(elapsed(), 1ns + 2us + 1500ms);
        co_await asyncio::sleep(3s);
        EXPECT_EQ(elapsed(), 1ns + 2us + 4500ms);
        co_await asyncio::sleep(2min);
        EXPECT_EQ(elapsed(), 1ns + 2us + 4500ms + 2min);
        co_await asyncio::sleep(1h);
        EXPECT_EQ(elapsed(), 1ns + 2us + 4500ms + 2min + 1h);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(Sleep, FractionalDurationsAreRoundedUpToTheClockTick) {
    auto main = []() -> Coroutine<> {
        co_await asyncio::sleep(std::chrono::duration<double>(0.25));
        EXPECT_EQ(elapsed(), 250ms);
        co_await asyncio::sleep(std::chrono::duration<double, std::nano>(0.5));  // not 0: one tick
        EXPECT_EQ(elapsed(), 250ms + 1ns);
        co_await asyncio::sleep(std::chrono::duration<double, std::milli>(1.5));
        EXPECT_EQ(elapsed(), 250ms + 1ns + 1500us);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(Sleep, OfFortyEightHoursNeitherOverflowsNorFiresEarly) {
    auto main = []() -> Coroutine<> {
        bool woke = false;
        auto sleeper = [&]() -> Coroutine<> {
            co_await asyncio::sleep(48h);
            woke = true;
        };
        Task<> t = asyncio::create_task(sleeper());
        co_await asyncio::sleep(48h - 1ns);
        EXPECT_FALSE(woke);
        co_await asyncio::sleep(0s);
        EXPECT_FALSE(woke);
        co_await t;
        EXPECT_TRUE(woke);
        EXPECT_EQ(elapsed(), 48h);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(Sleep, OfTheLargestDurationsIsClampedAndNeverFires) {
    auto main = []() -> Coroutine<> {
        auto forever = []() -> Coroutine<> { co_await asyncio::sleep(std::chrono::hours::max()); };
        auto forever_s = []() -> Coroutine<> { co_await asyncio::sleep(std::chrono::seconds::max()); };
        auto forever_ns = []() -> Coroutine<> {
            co_await asyncio::sleep(std::chrono::nanoseconds::max());
        };
        Task<> a = asyncio::create_task(forever());
        Task<> b = asyncio::create_task(forever_s());
        Task<> c = asyncio::create_task(forever_ns());
        co_await asyncio::sleep(24h * 365 * 50);  // fifty years of virtual time
        EXPECT_FALSE(a.done());
        EXPECT_FALSE(b.done());
        EXPECT_FALSE(c.done());
        a.cancel();
        b.cancel();
        c.cancel();
        EXPECT_THROW(co_await a, asyncio::CancelledError);
        EXPECT_THROW(co_await b, asyncio::CancelledError);
        EXPECT_THROW(co_await c, asyncio::CancelledError);
        EXPECT_EQ(elapsed(), 24h * 365 * 50);
    };
    asyncio::run(main(), virtual_time());
}

asyncio_test::Eager eager_sleep(std::exception_ptr& error) {
    (void)error;
    co_await asyncio::sleep(1s);
}

TEST_F(Sleep, OutsideATaskRaisesRuntimeError) {
    std::exception_ptr error;
    eager_sleep(error);  // no loop at all
    EXPECT_THROW(asyncio_test::rethrow(error), asyncio::RuntimeError);

    asyncio::EventLoop loop(virtual_time());
    std::exception_ptr in_callback;
    loop.call_soon([&] {
        eager_sleep(in_callback);  // a running loop, but no current task
        loop.stop();
    });
    loop.run_forever();
    EXPECT_THROW(asyncio_test::rethrow(in_callback), asyncio::RuntimeError);
}

TEST_F(Sleep, CancelledReleasesItsTimer) {
    // Once the sleep is cancelled nothing is left on the timer queue: the loop never jumps to
    // the abandoned deadline, and the frame (with its Counted) is gone.
    auto main = []() -> Coroutine<> {
        auto sleeper = [](Counted) -> Coroutine<> { co_await asyncio::sleep(1h); };
        Task<> t = asyncio::create_task(sleeper(Counted(1)));
        co_await asyncio::sleep(1s);
        t.cancel();
        EXPECT_THROW(co_await t, asyncio::CancelledError);
        t = Task<>();
        EXPECT_EQ(Counted::live(), 0);
    };
    asyncio::EventLoop loop(virtual_time());
    loop.run_until_complete(main());
    EXPECT_EQ(loop.time() - asyncio::TimePoint(1h), 1s);
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(loop.time() - asyncio::TimePoint(1h), 1s);  // the 1h timer is not there to jump to
    loop.call_later(1ms, [&] { loop.stop(); });
    loop.run_forever();
    EXPECT_EQ(loop.time() - asyncio::TimePoint(1h), 1s + 1ms);
}

TEST_F(Sleep, ManySleepersWakeInDeadlineOrder) {
    std::vector<int> order;
    auto sleeper = [&](int i, asyncio::Duration d) -> Coroutine<> {
        co_await asyncio::sleep(d);
        order.push_back(i);
    };
    auto main = [&]() -> Coroutine<> {
        std::vector<Task<>> tasks;
        tasks.push_back(asyncio::create_task(sleeper(0, 3s)));
        tasks.push_back(asyncio::create_task(sleeper(1, 1s)));
        tasks.push_back(asyncio::create_task(sleeper(2, 2s)));
        tasks.push_back(asyncio::create_task(sleeper(3, 1s)));
        for (auto& t : tasks) co_await t;
        EXPECT_EQ(elapsed(), 3s);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(order, (std::vector<int>{1, 3, 2, 0}));
}

// cancel() then uncancel() before the sleeping task ran: the sleep was cancelled (its timer is
// gone), so it must raise, not return early as if it had slept.
TEST_F(Sleep, RegressionCancelThenUncancelBeforeItRunsStillRaises) {
    auto main_ = []() -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        const auto t0 = loop.time();
        auto sleeper = asyncio::create_task([]() -> Coroutine<> { co_await asyncio::sleep(10s); }());
        co_await asyncio::sleep(1s);
        sleeper.cancel();
        sleeper.uncancel();
        EXPECT_THROW(co_await sleeper, asyncio::CancelledError);
        EXPECT_EQ(loop.time() - t0, 1s);
    };
    asyncio::run(main_(), virtual_time());
}

// Regression (issue #7, item 5): the delay is converted by the shared saturating helper
// (clock.hpp), in any unit and representation: huge or infinite floating-point durations and
// thousands of years mean "never" instead of overflowing, and fractions still round up.
TEST_F(Sleep, RegressionSleepOfAThousandYearsOrOfInfiniteSecondsNeverFires) {
    auto main_ = []() -> Coroutine<> {
        auto sleeps = [](auto d) -> Coroutine<> { co_await asyncio::sleep(d); };
        Task<> a = asyncio::create_task(sleeps(std::chrono::years(1000)));
        Task<> b = asyncio::create_task(sleeps(std::chrono::duration<double>(HUGE_VAL)));
        Task<> c = asyncio::create_task(sleeps(std::chrono::duration<long double, std::ratio<3600>>(1e30L)));
        Task<> d = asyncio::create_task(sleeps(std::chrono::duration<unsigned long long, std::milli>(~0ull)));
        co_await asyncio::sleep(std::chrono::duration<double>(0.0000005));  // 500 ns
        EXPECT_EQ(elapsed(), 500ns);
        co_await asyncio::sleep(std::chrono::duration<double, std::milli>(0.0000001));  // 0.1 ns: 1 ns
        EXPECT_EQ(elapsed(), 501ns);
        co_await asyncio::sleep(std::chrono::duration<long, std::ratio<1, 3>>(1));  // a third of a second
        EXPECT_EQ(elapsed(), 501ns + 333'333'334ns);
        co_await asyncio::sleep(24h * 365 * 100);
        for (Task<>* t : {&a, &b, &c, &d}) {
            EXPECT_FALSE(t->done());
            t->cancel();
            EXPECT_THROW(co_await *t, asyncio::CancelledError);
        }
    };
    asyncio::run(main_(), virtual_time());
}

}  // namespace

// Reliability issue #7 (3): a task parked here, its loop destroyed, its last handle dropped
// afterwards: the frame's destruction must not touch the dead loop (ASan: heap-use-after-free).
namespace {
using asyncio_test::destroy_loop_then_task;

TEST_F(Sleep, RegressionTaskHandleOutlivingItsLoopWhileParkedInSleep) {
    destroy_loop_then_task([](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([]() -> asyncio::Coroutine<> { co_await asyncio::sleep(std::chrono::hours(1)); }());
    });
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

// s2_sleep_vs_cancel.py: a sleep whose timer falls due in the iteration in which the task is
// cancelled raises CancelledError whichever of the two runs first (a timer that fired only
// schedules the task, which then finds the cancellation pending), and a task woken by its timer
// runs after the other callbacks due in that iteration. As in the script, the loop is "blocked"
// past every deadline (here: the virtual clock is moved on) so that they all fall due together.
TEST_F(LikeCPython, S2ASleepDueInTheIterationOfACancel) {
    std::vector<std::string> lines;
    auto clock = virtual_time();
    asyncio::MockClock* const c = clock.get();
    auto main = [&]() -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        for (const bool cancel_first : {true, false}) {
            std::vector<std::string> log;
            auto sleeper = [&]() -> Coroutine<> {
                try {
                    co_await asyncio::sleep(10ms);
                    log.push_back("sleep returned");
                    co_await asyncio::sleep(0s);
                    log.push_back("next await returned");
                } catch (const asyncio::CancelledError&) {
                    log.push_back("CancelledError");
                    throw;
                }
            };
            Task<> t = asyncio::create_task(sleeper());
            co_await asyncio::sleep(0s);  // t sleeps (deadline now + 10ms)
            loop.call_later(cancel_first ? 5ms : 15ms,
                            [&] { log.push_back(std::string("cancel() -> ") + (t.cancel() ? "True" : "False")); });
            c->advance(30ms);  // both deadlines pass: both callbacks are due in the next iteration
            try {
                co_await t;
            } catch (const asyncio::CancelledError&) {
            }
            lines.push_back(std::string(cancel_first ? "cancel before the timer: " : "cancel after the timer: ") +
                            joined(log) + "; cancelled()=" + (t.cancelled() ? "True" : "False"));
        }
        std::vector<std::string> log;
        auto sleeper2 = [&]() -> Coroutine<> {
            co_await asyncio::sleep(10ms);
            log.push_back("task resumed");
        };
        Task<> t = asyncio::create_task(sleeper2());
        co_await asyncio::sleep(0s);
        loop.call_later(10ms, [&] { log.push_back("call_later callback"); });
        c->advance(30ms);
        co_await t;
        lines.push_back("sleep timer then callback, same iteration: " + joined(log));
    };
    asyncio::run(main(), std::move(clock));
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "cancel before the timer: cancel() -> True; CancelledError; cancelled()=True",
                         "cancel after the timer: cancel() -> True; CancelledError; cancelled()=True",
                         "sleep timer then callback, same iteration: call_later callback; task resumed",
                     }));
}

// The timer used to resume the task directly, so a cancel() later in the same iteration found it
// running and the sleep returned; as asyncio, the timer only schedules the task, and the
// cancellation raises at the sleep.
TEST_F(LikeCPython, RegressionACancelInTheIterationItsTimerFiredStillRaisesAtTheSleep) {
    auto main = []() -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        bool returned = false;
        auto sleeper = [](bool& returned) -> Coroutine<> {
            co_await asyncio::sleep(10ms);
            returned = true;
        };
        Task<> t = asyncio::create_task(sleeper(returned));
        co_await asyncio::sleep(0s);
        loop.call_later(10ms, [&t] { EXPECT_TRUE(t.cancel()); });  // due just after the sleep's
        EXPECT_THROW(co_await t, asyncio::CancelledError);
        EXPECT_FALSE(returned);
        EXPECT_TRUE(t.cancelled());
    };
    asyncio::run(main(), virtual_time());
}

}  // namespace
