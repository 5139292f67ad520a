// shield(): the awaiting task's cancellation does not reach the inner work.
#include "asyncio/shield.hpp"

#include <gtest/gtest.h>

#include "asyncio/asyncio.hpp"
#include "asyncio/event.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using asyncio_test::virtual_time;

namespace {

class ShieldTest : public asyncio_test::LeakChecked {};

asyncio::Coroutine<int> value_after(int v, asyncio::Duration d) {
    co_await asyncio::sleep(d);
    co_return v;
}

TEST_F(ShieldTest, ReturnsTheInnerValue) {
    auto main_ = []() -> asyncio::Coroutine<int> { co_return co_await asyncio::shield(value_after(5, 1ms)); };
    EXPECT_EQ(asyncio::run(main_(), virtual_time()), 5);
}

TEST_F(ShieldTest, CancellingTheAwaiterLeavesTheInnerTaskRunning) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto inner = asyncio::create_task(value_after(3, 50ms));
        auto outer = asyncio::create_task(
            [](asyncio::Task<int> t) -> asyncio::Coroutine<int> { co_return co_await asyncio::shield(t); }(inner));
        co_await asyncio::sleep(10ms);
        EXPECT_TRUE(outer.cancel());
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(outer.cancelled());
        EXPECT_FALSE(inner.done());
        EXPECT_EQ(co_await inner, 3);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(ShieldTest, CancellingTheInnerTaskStillCancelsTheAwait) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto inner = asyncio::create_task(value_after(3, 50ms));
        auto outer = asyncio::create_task(
            [](asyncio::Task<int> t) -> asyncio::Coroutine<int> { co_return co_await asyncio::shield(t); }(inner));
        co_await asyncio::sleep(10ms);
        inner.cancel();
        EXPECT_THROW(co_await outer, asyncio::CancelledError);
    };
    asyncio::run(main_(), virtual_time());
}

// It used to be marked retrieved (not reported). As asyncio 3.11+
// (tests/cpython_scenarios/s6_shield_logging.py): nobody looks at the inner task's outcome once the
// shielded await was cancelled, so its exception is reported.
TEST_F(ShieldTest, RegressionAnExceptionOfAnAbandonedInnerTaskIsReportedAsNeverRetrieved) {
    asyncio::EventLoop loop(virtual_time());
    asyncio_test::Reports reports;
    reports.install(loop);
    auto main_ = []() -> asyncio::Coroutine<> {
        auto failing = []() -> asyncio::Coroutine<> {
            co_await asyncio::sleep(20ms);
            throw std::runtime_error("late");
        };
        auto outer = asyncio::create_task(
            [](asyncio::Coroutine<> c) -> asyncio::Coroutine<> { co_await asyncio::shield(std::move(c)); }(failing()));
        co_await asyncio::sleep(5ms);
        outer.cancel();
        co_await asyncio::sleep(50ms);
        EXPECT_TRUE(outer.cancelled());
    };
    loop.run_until_complete(main_());
    loop.close();
    EXPECT_EQ(reports.size(), 1u);
    EXPECT_EQ(reports.count("Task exception was never retrieved"), 1u);
    EXPECT_EQ(reports.what(0), "late");
}

// Cancelled while shielded, then uncancel()ed before it ran: it must still raise, not read the
// result of an inner task that is not done.
TEST_F(ShieldTest, RegressionCancelThenUncancelStillRaises) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto inner = asyncio::create_task(value_after(3, 50ms));
        auto outer = asyncio::create_task(
            [](asyncio::Task<int> t) -> asyncio::Coroutine<int> { co_return co_await asyncio::shield(t); }(inner));
        co_await asyncio::sleep(10ms);
        outer.cancel();
        outer.uncancel();
        EXPECT_THROW(co_await outer, asyncio::CancelledError);
        EXPECT_FALSE(inner.done());
        EXPECT_EQ(co_await inner, 3);
    };
    asyncio::run(main_(), virtual_time());
}

}  // namespace

// Reliability issue #7 (3): a task parked here, its loop destroyed, its last handle dropped
// afterwards: the frame's destruction must not touch the dead loop (ASan: heap-use-after-free).
namespace {
using asyncio_test::destroy_loop_then_task;

TEST_F(ShieldTest, RegressionTaskHandleOutlivingItsLoopWhileParkedInShield) {
    destroy_loop_then_task([](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([]() -> asyncio::Coroutine<> {
            co_await asyncio::shield([]() -> asyncio::Coroutine<> {
                co_await asyncio::wait_for(asyncio_test::sleep_a_day(), std::chrono::minutes(1));
            }());
        }());
    });
}
}  // namespace

// Reliability issue #7 (4): a shield stops the cancellation, so nothing recurses; a chain of them
// is still taken down by asyncio::run's shutdown, task by task.
namespace {

TEST_F(ShieldTest, AHundredThousandShieldsInAChainAreCancelledByRunsShutdown) {
    asyncio::Event never;
    asyncio::run([](asyncio::Event& e) -> asyncio::Coroutine<> {
        (void)asyncio_test::chain_of(100'000, e, [](asyncio::Task<> inner) -> asyncio::Coroutine<> {
            co_await asyncio::shield(std::move(inner));
        });
        co_await asyncio::sleep(std::chrono::seconds(0));
        co_await asyncio::sleep(std::chrono::seconds(0));
    }(never), virtual_time());
}

TEST_F(ShieldTest, CancellingTheOutermostOfAShieldChainLeavesTheRestRunning) {
    auto main = []() -> asyncio::Coroutine<> {
        asyncio::Event never;
        std::vector<asyncio::Task<>> all;
        asyncio::Task<> outer = asyncio_test::chain_of(1000, never, [&](asyncio::Task<> inner) -> asyncio::Coroutine<> {
            all.push_back(inner);
            return [](asyncio::Task<> t) -> asyncio::Coroutine<> { co_await asyncio::shield(std::move(t)); }(std::move(inner));
        });
        co_await asyncio::sleep(std::chrono::seconds(0));
        EXPECT_TRUE(outer.cancel());
        EXPECT_THROW(co_await outer, asyncio::CancelledError);
        for (auto& t : all) EXPECT_FALSE(t.done());
        never.set();
        for (auto& t : all) co_await t;  // each finished normally
    };
    asyncio::run(main(), virtual_time());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Scenarios run on CPython 3.13 (tests/cpython_scenarios/): each test prints the same lines as its
// Python script and expects what CPython printed (the comment at the bottom of the script).

namespace {

class LikeCPython : public asyncio_test::LeakChecked {};

// s6_shield_logging.py: an inner task that fails after the shielded await was cancelled is not
// looked at by anyone (shield's done callback is removed with the outer future), so its exception
// is reported as never retrieved, unless the caller kept the task and looked at it.
TEST_F(LikeCPython, S6WhatShieldReportsWhenTheInnerTaskFailsAfterTheAwaitWasCancelled) {
    std::vector<std::string> lines;
    asyncio::EventLoop loop(virtual_time());
    std::vector<std::string> reports;
    loop.set_exception_handler([&](asyncio::EventLoop&, const asyncio::ExceptionContext& c) {
        std::string what;
        try {
            std::rethrow_exception(c.exception);
        } catch (const std::invalid_argument& e) {
            what = std::string("ValueError: ") + e.what();
        } catch (...) {
            what = "?";
        }
        reports.push_back(c.message + " (" + what + ")");
    });
    auto take_reports = [&] {
        std::string s;
        for (const auto& r : reports) s += (s.empty() ? "['" : "', '") + r;
        reports.clear();
        return s.empty() ? std::string("none") : s + "']";
    };
    auto main_ = [&]() -> asyncio::Coroutine<> {
        auto fails_later = []() -> asyncio::Coroutine<> {
            co_await asyncio::sleep(10ms);
            throw std::invalid_argument("inner failed");
        };
        auto outer = [](asyncio::Task<> inner) -> asyncio::Coroutine<std::string> {
            try {
                co_await asyncio::shield(std::move(inner));
            } catch (const asyncio::CancelledError&) {
                co_return "outer cancelled";
            }
            co_return "outer returned";
        };
        // a)
        auto t = asyncio::create_task(outer(asyncio::create_task(fails_later())));
        co_await asyncio::sleep(0s);
        t.cancel();
        lines.push_back("a) outer: " + co_await t);
        co_await asyncio::sleep(50ms);
        lines.push_back("   reports: " + take_reports());
        // b)
        asyncio::Task<> inner = asyncio::create_task(fails_later());
        t = asyncio::create_task(outer(inner));
        co_await asyncio::sleep(0s);
        t.cancel();
        lines.push_back("b) outer: " + co_await t);
        co_await asyncio::sleep(50ms);
        std::string exc;
        try {
            std::rethrow_exception(inner.exception());
        } catch (const std::invalid_argument& e) {
            exc = std::string("ValueError('") + e.what() + "')";
        }
        lines.push_back(std::string("   inner: done()=") + (inner.done() ? "True" : "False") +
                        " exception()=" + exc);
        inner = asyncio::Task<>();
        co_await asyncio::sleep(0s);
        lines.push_back("   reports: " + take_reports());
        // c)
        try {
            co_await asyncio::shield(fails_later());
        } catch (const std::invalid_argument& e) {
            lines.push_back(std::string("c) awaiter gets: ValueError('") + e.what() + "')");
        }
        co_await asyncio::sleep(0s);
        lines.push_back("   reports: " + take_reports());
    };
    loop.run_until_complete(main_());
    loop.close();
    EXPECT_EQ(lines, (std::vector<std::string>{
                         "a) outer: outer cancelled",
                         "   reports: ['Task exception was never retrieved (ValueError: inner failed)']",
                         "b) outer: outer cancelled",
                         "   inner: done()=True exception()=ValueError('inner failed')",
                         "   reports: none",
                         "c) awaiter gets: ValueError('inner failed')",
                         "   reports: none",
                     }));
}

}  // namespace
