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
