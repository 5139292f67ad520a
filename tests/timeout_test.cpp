// Timeout scopes and wait_for, on virtual time.
#include "asyncio/timeout.hpp"

#include <gtest/gtest.h>

#include <type_traits>

#include <chrono>
#include <cmath>

#include "asyncio/asyncio.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using asyncio_test::Counted;
using asyncio_test::virtual_time;
using asyncio::Task;

namespace {

class TimeoutTest : public asyncio_test::LeakChecked {};

asyncio::Coroutine<int> value_after(int v, asyncio::Duration d) {
    co_await asyncio::sleep(d);
    co_return v;
}

asyncio::Duration since(asyncio::TimePoint t0) { return asyncio::get_running_loop().time() - t0; }

TEST_F(TimeoutTest, WaitForReturnsTheValueWhenInTime) {
    auto main_ = []() -> asyncio::Coroutine<int> {
        co_return co_await asyncio::wait_for(value_after(7, 5ms), 10ms);
    };
    EXPECT_EQ(asyncio::run(main_(), virtual_time()), 7);
}

TEST_F(TimeoutTest, WaitForRaisesTimeoutErrorAtTheDeadlineAndCancelsTheWork) {
    auto main_ = []() -> asyncio::Coroutine<> {
        const auto t0 = asyncio::get_running_loop().time();
        bool cleaned = false;
        auto work = [](bool& cleaned) -> asyncio::Coroutine<int> {
            Counted c(1);
            try {
                co_await asyncio::sleep(1h);
            } catch (const asyncio::CancelledError&) {
                cleaned = true;
                throw;
            }
            co_return 1;
        };
        EXPECT_THROW(co_await asyncio::wait_for(work(cleaned), 10ms), asyncio::TimeoutError);
        EXPECT_EQ(since(t0), 10ms);
        EXPECT_TRUE(cleaned);
        // The task is usable afterwards: no stray cancellation is left behind.
        co_await asyncio::sleep(1ms);
        EXPECT_EQ(asyncio::current_task().cancelling(), 0);
    };
    asyncio::run(main_(), virtual_time());
}

// The timer is armed when the body first suspends, not before: the deadline must still be the
// one fixed when wait_for() was called, even if the body ran past it before suspending, and a body
// that never suspends needs no timer at all.
TEST_F(TimeoutTest, TheDeadlineIsFixedAtTheCallEvenIfTheBodySuspendsLate) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        auto& clock = static_cast<asyncio::MockClock&>(loop.clock());
        const auto t0 = loop.time();
        auto slow_start = [](asyncio::MockClock& clock) -> asyncio::Coroutine<int> {
            clock.advance(30ms);  // 30 ms of synchronous work: past the 10 ms deadline
            co_await asyncio::sleep(1h);
            co_return 1;
        };
        EXPECT_THROW(co_await asyncio::wait_for(slow_start(clock), 10ms), asyncio::TimeoutError);
        EXPECT_EQ(since(t0), 30ms);  // fired at the first suspension, not 10 ms after it
        // Suspending later than the deadline but finishing in time is not possible; finishing
        // without suspending returns the value, however long it took.
        auto slow_value = [](asyncio::MockClock& clock) -> asyncio::Coroutine<int> {
            clock.advance(30ms);
            co_return 2;
        };
        EXPECT_EQ(co_await asyncio::wait_for(slow_value(clock), 10ms), 2);
        // A body that suspends after a while within the deadline still times out at it.
        const auto t1 = loop.time();
        auto late = [](asyncio::MockClock& clock) -> asyncio::Coroutine<int> {
            clock.advance(4ms);
            co_await asyncio::sleep(1h);
            co_return 3;
        };
        EXPECT_THROW(co_await asyncio::wait_for(late(clock), 10ms), asyncio::TimeoutError);
        EXPECT_EQ(since(t1), 10ms);
        EXPECT_EQ(asyncio::current_task().cancelling(), 0);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, WaitForOnATaskCancelsTheTaskOnTimeout) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto t = asyncio::create_task(value_after(1, 1h));
        EXPECT_THROW(co_await asyncio::wait_for(t, 5ms), asyncio::TimeoutError);
        EXPECT_TRUE(t.done());
        EXPECT_TRUE(t.cancelled());
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, TimeoutScopeTellsWhetherItExpired) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto t = asyncio::timeout(10ms);
        EXPECT_EQ(co_await t.run(value_after(3, 1ms)), 3);
        EXPECT_FALSE(t.expired());

        auto t2 = asyncio::timeout(10ms);
        EXPECT_THROW(co_await t2.run(value_after(3, 1s)), asyncio::TimeoutError);
        EXPECT_TRUE(t2.expired());
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, TimeoutAtUsesAnAbsoluteDeadline) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        const auto t0 = loop.time();
        auto t = asyncio::timeout_at(t0 + 25ms);
        EXPECT_THROW(co_await t.run(value_after(1, 1s)), asyncio::TimeoutError);
        EXPECT_EQ(loop.time() - t0, 25ms);
        EXPECT_EQ(t.when(), t0 + 25ms);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, RescheduleFromInsideTheBodyMovesTheDeadline) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        const auto t0 = loop.time();
        asyncio::Timeout t(std::nullopt);  // no deadline yet
        auto body = [](asyncio::Timeout& t) -> asyncio::Coroutine<> {
            co_await asyncio::sleep(5ms);
            t.reschedule(asyncio::get_running_loop().time() + 20ms);
            co_await asyncio::sleep(1h);
        };
        EXPECT_THROW(co_await t.run(body(t)), asyncio::TimeoutError);
        EXPECT_EQ(loop.time() - t0, 25ms);
        EXPECT_THROW(t.reschedule(std::nullopt), asyncio::RuntimeError);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, RescheduleToNoDeadlineDisarmsIt) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto t = asyncio::timeout(5ms);
        auto body = [](asyncio::Timeout& t) -> asyncio::Coroutine<int> {
            t.reschedule(std::nullopt);
            co_await asyncio::sleep(1s);
            co_return 9;
        };
        EXPECT_EQ(co_await t.run(body(t)), 9);
        EXPECT_FALSE(t.expired());
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, AnOuterCancelStaysACancelledErrorNotATimeout) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto inner = [](bool& timed_out) -> asyncio::Coroutine<> {
            try {
                co_await asyncio::wait_for(value_after(1, 1h), 1s);
            } catch (const asyncio::TimeoutError&) {
                timed_out = true;
            }
        };
        bool timed_out = false;
        auto t = asyncio::create_task(inner(timed_out));
        co_await asyncio::sleep(10ms);
        t.cancel();
        try {
            co_await t;
        } catch (const asyncio::CancelledError&) {
        }
        EXPECT_TRUE(t.cancelled());
        EXPECT_FALSE(timed_out);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, NestedTimeoutsEachReportTheirOwnExpiry) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto outer = asyncio::timeout(50ms);
        auto body = []() -> asyncio::Coroutine<> {
            auto inner = asyncio::timeout(10ms);
            EXPECT_THROW(co_await inner.run(value_after(1, 1h)), asyncio::TimeoutError);
            EXPECT_TRUE(inner.expired());
            co_await asyncio::sleep(1h);  // now the outer one fires
        };
        EXPECT_THROW(co_await outer.run(body()), asyncio::TimeoutError);
        EXPECT_TRUE(outer.expired());
    };
    asyncio::run(main_(), virtual_time());
}

// A result that arrives in the same iteration as the deadline is never dropped: either it is
// returned, or the work is cancelled cleanly and TimeoutError raised (python/cpython#86296).
TEST_F(TimeoutTest, RegressionResultAndDeadlineInTheSameIterationLoseNothing) {
    auto main_ = []() -> asyncio::Coroutine<> {
        for (int shift = -2; shift <= 2; ++shift) {
            // The value is produced by a timer whose deadline is the same as the timeout's
            // (shift 0), or a tick before or after.
            auto producer = [](int shift) -> asyncio::Coroutine<int> {
                co_await asyncio::sleep(10ms + shift * 1ns);
                co_return 42;
            };
            bool got = false;
            bool timed_out = false;
            try {
                got = (co_await asyncio::wait_for(producer(shift), 10ms)) == 42;
            } catch (const asyncio::TimeoutError&) {
                timed_out = true;
            }
            EXPECT_NE(got, timed_out) << "shift " << shift;
            if (shift < 0) {
                EXPECT_TRUE(got);
            }
            if (shift > 0) {
                EXPECT_TRUE(timed_out);
            }
            // No pending cancellation leaks out of wait_for either way.
            co_await asyncio::sleep(0s);
            EXPECT_EQ(asyncio::current_task().cancelling(), 0);
        }
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, ATimeoutRunsOnlyOnce) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto t = asyncio::timeout(1s);
        co_await t.run(value_after(1, 1ms));
        EXPECT_THROW(co_await t.run(value_after(1, 1ms)), asyncio::RuntimeError);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, TimeoutOutsideATaskIsAnError) {
    EXPECT_THROW(asyncio::timeout(1s), asyncio::RuntimeError);  // no running loop
}

// ---- regressions: timer arithmetic overflow (issue #7, item 5) ----
// now + ceil<Duration>(limit) overflowed (signed, UB) for a limit past ~292 years, so these raised
// TimeoutError at once. A deadline that far off now saturates to TimePoint::max(): never.

TEST_F(TimeoutTest, RegressionWaitForOfAThousandYearsDoesNotTimeOutAtOnce) {
    auto main_ = []() -> asyncio::Coroutine<> {
        const auto t0 = asyncio::get_running_loop().time();
        EXPECT_EQ(co_await asyncio::wait_for(value_after(1, 1s), std::chrono::years(1000)), 1);
        EXPECT_EQ(co_await asyncio::wait_for(value_after(2, 1s), std::chrono::seconds::max()), 2);
        EXPECT_EQ(co_await asyncio::wait_for(value_after(3, 1s), std::chrono::hours::max()), 3);
        EXPECT_EQ(co_await asyncio::wait_for(value_after(4, 1s), asyncio::Duration::max()), 4);
        EXPECT_EQ(co_await asyncio::wait_for(value_after(5, 1s), std::chrono::duration<double>(1e300)), 5);
        EXPECT_EQ(co_await asyncio::wait_for(value_after(6, 1s),
                                             std::chrono::duration<double>(HUGE_VAL)), 6);
        Task<int> task = asyncio::create_task(value_after(7, 1s));
        EXPECT_EQ(co_await asyncio::wait_for(std::move(task), std::chrono::years(1000)), 7);
        EXPECT_EQ(since(t0), 7s);
        EXPECT_EQ(asyncio::current_task().cancelling(), 0);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, RegressionWaitForOfAThousandYearsTimesOutOnlyAtTheEndOfTime) {
    // Virtual time jumps to the next deadline: the only one left is the saturated one.
    auto main_ = []() -> asyncio::Coroutine<> {
        asyncio::Event never;
        auto waits = [](asyncio::Event& e) -> asyncio::Coroutine<int> {
            co_await e.wait();
            co_return 1;
        };
        EXPECT_THROW(co_await asyncio::wait_for(waits(never), std::chrono::years(1000)),
                     asyncio::TimeoutError);
        EXPECT_EQ(asyncio::get_running_loop().time(), asyncio::TimePoint::max());
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(TimeoutTest, RegressionTimeoutOfAThousandYearsDoesNotExpireAtOnce) {
    auto main_ = []() -> asyncio::Coroutine<> {
        const auto t0 = asyncio::get_running_loop().time();
        asyncio::Timeout a = asyncio::timeout(std::chrono::years(1000));
        EXPECT_EQ(a.when(), asyncio::TimePoint::max());
        EXPECT_EQ(co_await a.run(value_after(1, 1s)), 1);
        EXPECT_FALSE(a.expired());

        asyncio::Timeout b = asyncio::timeout(std::chrono::duration<float, std::ratio<86400 * 365>>(1e30f));
        EXPECT_EQ(co_await b.run(value_after(2, 1s)), 2);
        EXPECT_FALSE(b.expired());

        asyncio::Timeout c = asyncio::timeout_at(asyncio::TimePoint::max());
        EXPECT_EQ(co_await c.run(value_after(3, 1s)), 3);
        EXPECT_FALSE(c.expired());

        // reschedule() to "never" while the body runs: the near deadline is gone.
        asyncio::Timeout d = asyncio::timeout(10ms);
        auto body = [](asyncio::Timeout& t) -> asyncio::Coroutine<int> {
            t.reschedule(asyncio::deadline_after(asyncio::get_running_loop().time(),
                                                 std::chrono::years(1000)));
            co_await asyncio::sleep(1s);
            t.reschedule(asyncio::TimePoint::max());
            co_await asyncio::sleep(1s);
            co_return 4;
        };
        EXPECT_EQ(co_await d.run(body(d)), 4);
        EXPECT_FALSE(d.expired());
        EXPECT_EQ(since(t0), 5s);
    };
    asyncio::run(main_(), virtual_time());
}

}  // namespace

// Reliability issue #7 (3): a task parked here, its loop destroyed, its last handle dropped
// afterwards: the frame's destruction must not touch the dead loop (ASan: heap-use-after-free).
namespace {
using asyncio_test::destroy_loop_then_task;

TEST_F(TimeoutTest, RegressionTaskHandleOutlivingItsLoopWhileParkedInWaitFor) {
    destroy_loop_then_task([](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([]() -> asyncio::Coroutine<> {
            co_await asyncio::wait_for(asyncio_test::sleep_a_day(), std::chrono::minutes(1));
        }());
    });
}

TEST_F(TimeoutTest, RegressionTaskHandleOutlivingItsLoopWhileParkedInATimeoutScope) {
    destroy_loop_then_task([](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([]() -> asyncio::Coroutine<> {
            asyncio::Timeout t = asyncio::timeout(std::chrono::minutes(1));
            co_await t.run([]() -> asyncio::Coroutine<> { co_await asyncio::sleep(std::chrono::hours(1)); }());
        }());
    });
}

// A wait_for around another task: both frames outlive the loop, the outer one holds the inner one.
TEST_F(TimeoutTest, RegressionTaskHandleOutlivingItsLoopWhileParkedInWaitForOfATask) {
    destroy_loop_then_task([](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([]() -> asyncio::Coroutine<> {
            asyncio::Task<> inner = asyncio::create_task(
                []() -> asyncio::Coroutine<> { co_await asyncio::sleep(std::chrono::hours(1)); }());
            co_await asyncio::wait_for(inner, std::chrono::minutes(1));
        }());
    });
}
}  // namespace

// Reliability issue #7 (4): cancellation passed down a chain of any depth costs constant stack
// (it recursed once per level: 100,000 levels overflowed 8 MiB in Release, 10,000 under ASan).
namespace {

TEST_F(TimeoutTest, RegressionCancellingAHundredThousandNestedWaitForsOverflowsTheStack) {
    asyncio::run(asyncio_test::cancel_outermost(100'000, [](asyncio::Task<> inner) -> asyncio::Coroutine<> {
                     co_await asyncio::wait_for(std::move(inner), std::chrono::hours(1));
                 }),
                 virtual_time());
}

}  // namespace

namespace {

static_assert(!std::is_base_of_v<std::exception, asyncio::CancelledError>,
              "catch (const std::exception&) must never swallow a cancellation");
static_assert(std::is_base_of_v<asyncio::BaseException, asyncio::CancelledError>);
static_assert(std::is_base_of_v<asyncio::BaseException, asyncio::GeneratorExit>);

// The body catches std::exception around an await (a common C++ habit). The timeout's
// cancellation must go through it: TimeoutError at 50 ms, not a normal return at 250 ms.
TEST_F(TimeoutTest, RegressionCatchingStdExceptionInsideWaitForDoesNotSwallowTheTimeout) {
    auto main_ = []() -> asyncio::Coroutine<> {
        const auto t0 = asyncio::get_running_loop().time();
        bool caught_as_std_exception = false;
        auto body = [](bool& caught) -> asyncio::Coroutine<int> {
            try {
                co_await asyncio::sleep(250ms);
            } catch (const std::exception&) {
                caught = true;
            }
            co_return 1;
        };
        EXPECT_THROW((void)co_await asyncio::wait_for(body(caught_as_std_exception), 50ms), asyncio::TimeoutError);
        EXPECT_FALSE(caught_as_std_exception);
        EXPECT_EQ(asyncio::get_running_loop().time() - t0, 50ms);
    };
    asyncio::run(main_(), virtual_time());
}

}  // namespace

namespace {

// Python's asyncio.timeout(None): no deadline (when() is None) until reschedule() sets one; then
// TimeoutError at that deadline (checked with CPython 3.13).
TEST_F(TimeoutTest, TimeoutWithNoDeadlineWaitsUntilRescheduled) {
    auto main_ = []() -> asyncio::Coroutine<> {
        asyncio::EventLoop& loop = asyncio::get_running_loop();
        const auto t0 = loop.time();
        asyncio::Timeout t = asyncio::timeout(std::nullopt);
        EXPECT_FALSE(t.when().has_value());
        auto body = [](asyncio::Timeout& t, asyncio::EventLoop& loop) -> asyncio::Coroutine<> {
            co_await asyncio::sleep(10ms);  // no deadline: never interrupted
            t.reschedule(loop.time() + 10ms);
            co_await asyncio::sleep(1s);
        };
        EXPECT_THROW(co_await t.run(body(t, loop)), asyncio::TimeoutError);
        EXPECT_TRUE(t.expired());
        EXPECT_EQ(loop.time() - t0, 20ms);
        asyncio::Timeout never = asyncio::timeout_at(std::nullopt);
        EXPECT_EQ(co_await never.run([]() -> asyncio::Coroutine<int> {
            co_await asyncio::sleep(std::chrono::hours(24 * 365));
            co_return 5;
        }()), 5);
    };
    asyncio::run(main_(), virtual_time());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Scenarios run on CPython 3.13 (tests/cpython_scenarios/): each test prints the same lines as its
// Python script and expects what CPython printed (the comment at the bottom of the script).

namespace {

class LikeCPython : public asyncio_test::LeakChecked {};

std::string py(bool b) { return b ? "True" : "False"; }

// s4_timeout_edges.py. As in the script, "the same iteration" is made by moving the virtual clock
// past every deadline at once (the script blocks the loop with time.sleep).
TEST_F(LikeCPython, S4TimeoutsAtTheEdges) {
    std::vector<std::string> lines;
    auto clock = virtual_time();
    asyncio::MockClock* const c = clock.get();
    auto main = [&]() -> asyncio::Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        auto run_body = [&](std::string name, asyncio::Coroutine<std::string> body,
                            asyncio::Timeout& t) -> asyncio::Coroutine<> {
            try {
                std::string r = co_await t.run(std::move(body));
                lines.push_back(name + ": returned '" + r + "'; expired()=" + py(t.expired()));
            } catch (const asyncio::TimeoutError&) {
                lines.push_back(name + ": TimeoutError; expired()=" + py(t.expired()));
            }
        };
        auto no_suspend = []() -> asyncio::Coroutine<std::string> { co_return "value"; };
        auto yields = []() -> asyncio::Coroutine<std::string> {
            co_await asyncio::sleep(0s);
            co_return "value";
        };
        auto sleeps = []() -> asyncio::Coroutine<std::string> {
            co_await asyncio::sleep(1s);
            co_return "value";
        };
        {
            asyncio::Timeout t = asyncio::timeout_at(loop.time() - 1s);
            co_await run_body("a) past deadline, body does not suspend", no_suspend(), t);
        }
        {
            asyncio::Timeout t = asyncio::timeout_at(loop.time() - 1s);
            co_await run_body("b) past deadline, body yields (sleep(0))", yields(), t);
        }
        {
            asyncio::Timeout t = asyncio::timeout_at(loop.time() - 1s);
            co_await run_body("c) past deadline, body sleeps", sleeps(), t);
        }
        {  // d)
            std::vector<std::string> seen;
            asyncio::Timeout t = asyncio::timeout(10ms);
            loop.call_later(5ms, [&] { seen.push_back("callback before: expired()=" + py(t.expired())); });
            loop.call_later(15ms, [&] { seen.push_back("callback after: expired()=" + py(t.expired())); });
            auto sleeps_and_reports = [&]() -> asyncio::Coroutine<std::string> {
                try {
                    asyncio::get_running_loop().call_soon([c] { c->advance(30ms); });
                    co_await asyncio::sleep(1s);
                } catch (const asyncio::CancelledError&) {
                    seen.push_back("body: CancelledError");
                    throw;
                }
                co_return "value";
            };
            co_await run_body("d) deadline between two callbacks", sleeps_and_reports(), t);
            std::string s;
            for (const auto& x : seen) s += (s.empty() ? "" : "; ") + x;
            lines.push_back("   " + s);
        }
        {  // e)
            asyncio::Event ev;
            asyncio::Timeout t = asyncio::timeout(10ms);
            loop.call_later(5ms, [&] { ev.set(); });
            auto waits_event = [&]() -> asyncio::Coroutine<std::string> {
                asyncio::get_running_loop().call_soon([c] { c->advance(30ms); });
                co_await ev.wait();
                co_return "event";
            };
            co_await run_body("e) event set just before the deadline, same iteration", waits_event(), t);
        }
        for (const bool blocks_after_set : {true, false}) {  // f), g)
            const std::string name =
                blocks_after_set
                    ? "f) wait_for: the task's last step runs in the deadline's iteration, before the "
                      "timeout's callback"
                    : "g) wait_for: the task is woken in the deadline's iteration, before the timeout's "
                      "callback";
            asyncio::Event ev;
            auto inner = [&]() -> asyncio::Coroutine<std::string> {
                co_await ev.wait();
                co_return "value";
            };
            Task<std::string> task = asyncio::create_task(inner());
            co_await asyncio::sleep(0s);
            loop.call_later(5ms, [&, blocks_after_set] {
                ev.set();  // the task's wake-up is scheduled for the next iteration
                if (blocks_after_set) c->advance(30ms);  // ... which is the deadline's iteration
            });
            if (!blocks_after_set) loop.call_soon([c] { c->advance(30ms); });
            try {
                std::string r = co_await asyncio::wait_for(task, 10ms);
                lines.push_back(name + ": returned '" + r + "'");
            } catch (const asyncio::TimeoutError&) {
                lines.push_back(name + ": TimeoutError; task.done()=" + py(task.done()) +
                                " cancelled()=" + py(task.cancelled()));
            }
        }
    };
    asyncio::run(main(), std::move(clock));
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "a) past deadline, body does not suspend: returned 'value'; expired()=False",
                         "b) past deadline, body yields (sleep(0)): TimeoutError; expired()=True",
                         "c) past deadline, body sleeps: TimeoutError; expired()=True",
                         "d) deadline between two callbacks: TimeoutError; expired()=True",
                         "   callback before: expired()=False; callback after: expired()=True; body: "
                         "CancelledError",
                         "e) event set just before the deadline, same iteration: TimeoutError; expired()=True",
                         "f) wait_for: the task's last step runs in the deadline's iteration, before the "
                         "timeout's callback: TimeoutError; task.done()=True cancelled()=False",
                         "g) wait_for: the task is woken in the deadline's iteration, before the timeout's "
                         "callback: TimeoutError; task.done()=True cancelled()=True",
                     }));
}

// s5_wait_for_zero.py: wait_for(aw, 0) never runs a coroutine (it becomes a task that is cancelled
// before its first step: TimeoutError, and a queue item stays in the queue); a pending task is
// cancelled and waited for (its value if it catches the cancellation and returns); a done task's
// result is returned without yielding.
TEST_F(LikeCPython, S5WaitForWithATimeoutOfZero) {
    std::vector<std::string> lines;
    auto main = [&]() -> asyncio::Coroutine<> {
        std::vector<std::string> log;
        auto sync_body = [&]() -> asyncio::Coroutine<std::string> {
            log.push_back("sync body ran");
            co_return "sync";
        };
        auto suspending_body = [&]() -> asyncio::Coroutine<std::string> {
            log.push_back("suspending body ran");
            co_await asyncio::sleep(1s);
            co_return "slept";
        };
        auto stubborn = []() -> asyncio::Coroutine<std::string> {
            try {
                co_await asyncio::sleep(1s);
            } catch (const asyncio::CancelledError&) {
                co_return "caught and returned";
            }
            co_return "slept";
        };
        long counter = 0;
        auto ticks = [](long& n) -> asyncio::Coroutine<> {
            for (;;) {
                co_await asyncio::sleep(0s);
                ++n;
            }
        };
        Task<> ticker = asyncio::create_task(ticks(counter));
        co_await asyncio::sleep(0s);

        auto attempt = [&](std::string name, auto aw) -> asyncio::Coroutine<> {
            log.clear();
            const long before = counter;
            std::string out;
            try {
                out = "returned '" + co_await asyncio::wait_for(std::move(aw), 0s) + "'";
            } catch (const asyncio::TimeoutError&) {
                out = "TimeoutError";
            }
            std::string body;
            for (const auto& x : log) body += (body.empty() ? "" : "; ") + x;
            lines.push_back(name + ": " + out + "; " + (body.empty() ? "no body ran here" : body) +
                            "; the caller yielded: " + py(counter > before));
        };

        Task<std::string> done_task = asyncio::create_task(sync_body());
        co_await asyncio::sleep(0s);
        co_await attempt("a) done task", done_task);
        co_await attempt("b) coroutine that completes at once", sync_body());
        co_await attempt("c) coroutine that would suspend", suspending_body());
        Task<std::string> t = asyncio::create_task(suspending_body());
        co_await asyncio::sleep(0s);
        co_await attempt("d) pending task", t);
        lines.push_back("   the task: cancelled()=" + py(t.cancelled()));
        t = asyncio::create_task(stubborn());
        co_await asyncio::sleep(0s);
        co_await attempt("d2) pending task that catches the cancellation and returns", t);
        asyncio::Queue<std::string> q;
        q.put_nowait("item");
        co_await attempt("e) queue.get() on a non-empty queue",
                         [](asyncio::Queue<std::string>& q) -> asyncio::Coroutine<std::string> {
                             co_return co_await q.get();
                         }(q));
        lines.push_back("   queue size after: " + std::to_string(q.qsize()));
        ticker.cancel();
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "a) done task: returned 'sync'; no body ran here; the caller yielded: False",
                         "b) coroutine that completes at once: TimeoutError; no body ran here; the caller "
                         "yielded: True",
                         "c) coroutine that would suspend: TimeoutError; no body ran here; the caller "
                         "yielded: True",
                         "d) pending task: TimeoutError; no body ran here; the caller yielded: True",
                         "   the task: cancelled()=True",
                         "d2) pending task that catches the cancellation and returns: returned 'caught and "
                         "returned'; no body ran here; the caller yielded: True",
                         "e) queue.get() on a non-empty queue: TimeoutError; no body ran here; the caller "
                         "yielded: True",
                         "   queue size after: 1",
                     }));
}

// s10_wait_for_zero_awaitables.py: wait_for(aw, 0) of an awaiter (an Event's wait, a Queue's get)
// never starts it: it becomes a task cancelled before its first step (TimeoutError, the caller
// yields, no item is taken); a pending future is cancelled; a done future gives its result
// without the caller yielding.
TEST_F(LikeCPython, S10WaitForZeroOfOtherAwaitables) {
    std::vector<std::string> lines;
    auto main = [&]() -> asyncio::Coroutine<> {
        long counter = 0;
        auto ticks = [](long& n) -> asyncio::Coroutine<> {
            for (;;) {
                co_await asyncio::sleep(0s);
                ++n;
            }
        };
        Task<> ticker = asyncio::create_task(ticks(counter));
        co_await asyncio::sleep(0s);
        auto attempt = [&](std::string name, auto aw) -> asyncio::Coroutine<> {
            const long before = counter;
            std::string out;
            try {
                if constexpr (std::is_void_v<asyncio::await_result_t<decltype(aw)>>) {
                    co_await asyncio::wait_for(std::move(aw), 0s);
                    out = "returned None";
                } else {
                    out = "returned " + std::to_string(co_await asyncio::wait_for(std::move(aw), 0s));
                }
            } catch (const asyncio::TimeoutError&) {
                out = "TimeoutError";
            }
            lines.push_back(name + ": " + out + "; the caller yielded: " + py(counter > before));
        };
        asyncio::Event set_event;
        set_event.set();
        co_await attempt("a) Event.wait() of a set event", set_event.wait());
        asyncio::Event ev;
        co_await attempt("b) Event.wait() of an unset event", ev.wait());
        asyncio::Queue<int> q;
        q.put_nowait(7);
        co_await attempt("c) Queue.get() of a non-empty queue", q.get());
        lines.push_back("   queue size after: " + std::to_string(q.qsize()));
        asyncio::Future<int> fut = asyncio::get_running_loop().create_future<int>();
        co_await attempt("d) pending future", fut);
        lines.push_back("   the future: cancelled()=" + py(fut.cancelled()));
        fut = asyncio::get_running_loop().create_future<int>();
        fut.set_result(5);
        co_await attempt("e) done future", fut);
        ticker.cancel();
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "a) Event.wait() of a set event: TimeoutError; the caller yielded: True",
                         "b) Event.wait() of an unset event: TimeoutError; the caller yielded: True",
                         "c) Queue.get() of a non-empty queue: TimeoutError; the caller yielded: True",
                         "   queue size after: 1",
                         "d) pending future: TimeoutError; the caller yielded: True",
                         "   the future: cancelled()=True",
                         "e) done future: returned 5; the caller yielded: False",
                     }));
}

// A Timeout entered past its deadline used to arm a due timer at the body's first suspension, which
// ran after the body's own sleep(0) wake-up: a body that only yields returned its value. As
// asyncio, the timeout is call_soon()ed on entry and the body times out at the sleep(0).
TEST_F(LikeCPython, RegressionATimeoutEnteredPastItsDeadlineTimesOutABodyThatOnlyYields) {
    auto main = []() -> asyncio::Coroutine<> {
        asyncio::Timeout t = asyncio::timeout_at(asyncio::get_running_loop().time());
        bool returned = false;
        auto yields = [](bool& returned) -> asyncio::Coroutine<> {
            co_await asyncio::sleep(0s);
            returned = true;
        };
        EXPECT_THROW(co_await t.run(yields(returned)), asyncio::TimeoutError);
        EXPECT_FALSE(returned);
        EXPECT_TRUE(t.expired());
        EXPECT_EQ(asyncio::current_task().cancelling(), 0);
    };
    asyncio::run(main(), virtual_time());
}

// wait_for(coro, 0) used to run the coroutine inline (a queue item was taken and returned); as
// asyncio, nothing is waited for: the coroutine never runs, TimeoutError.
TEST_F(LikeCPython, RegressionWaitForZeroNeverRunsACoroutine) {
    auto main = []() -> asyncio::Coroutine<> {
        asyncio::Queue<int> q;
        q.put_nowait(7);
        bool ran = false;
        auto get = [](asyncio::Queue<int>& q, bool& ran) -> asyncio::Coroutine<int> {
            ran = true;
            co_return co_await q.get();
        };
        EXPECT_THROW((void)co_await asyncio::wait_for(get(q, ran), 0s), asyncio::TimeoutError);
        EXPECT_THROW((void)co_await asyncio::wait_for(get(q, ran), -1ms), asyncio::TimeoutError);
        EXPECT_FALSE(ran);
        EXPECT_EQ(q.qsize(), 1u);
        EXPECT_EQ(asyncio::current_task().cancelling(), 0);
    };
    asyncio::run(main(), virtual_time());
}

// wait_for(pending task, 0) cancels the task and waits for it; a cancellation of the caller meanwhile
// raises CancelledError there and leaves the task to finish (asyncio's _cancel_and_wait).
TEST_F(LikeCPython, WaitForZeroOfAPendingTaskWhoseCallerIsCancelledMeanwhile) {
    auto main = []() -> asyncio::Coroutine<> {
        auto slow_to_stop = []() -> asyncio::Coroutine<int> {
            try {
                co_await asyncio::sleep(1h);
            } catch (const asyncio::CancelledError&) {
            }
            co_await asyncio::sleep(5ms);  // cleaning up
            co_return 9;
        };
        Task<int> inner = asyncio::create_task(slow_to_stop());
        co_await asyncio::sleep(0s);
        auto caller = [](Task<int> inner) -> asyncio::Coroutine<int> {
            co_return co_await asyncio::wait_for(inner, 0s);
        };
        Task<int> c = asyncio::create_task(caller(inner));
        co_await asyncio::sleep(1ms);
        EXPECT_FALSE(inner.done());
        c.cancel();
        EXPECT_THROW((void)co_await c, asyncio::CancelledError);
        EXPECT_FALSE(inner.done()) << "the caller did not wait for it any longer";
        EXPECT_EQ(co_await inner, 9);
        // Uncancelled, the same call returns the value the task ends with.
        inner = asyncio::create_task(slow_to_stop());
        co_await asyncio::sleep(0s);
        EXPECT_EQ(co_await asyncio::wait_for(inner, 0s), 9);
    };
    asyncio::run(main(), virtual_time());
}

}  // namespace
