// wait() and as_completed().
#include "asyncio/wait.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>
#include <vector>

#include "asyncio/asyncio.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using asyncio_test::virtual_time;

namespace {

class WaitTest : public asyncio_test::LeakChecked {};

asyncio::Coroutine<int> value_after(int v, asyncio::Duration d) {
    co_await asyncio::sleep(d);
    co_return v;
}
asyncio::Coroutine<int> fail_after(asyncio::Duration d) {
    co_await asyncio::sleep(d);
    throw std::runtime_error("fail");
}

std::vector<asyncio::Task<int>> three() {
    std::vector<asyncio::Task<int>> ts;
    ts.push_back(asyncio::create_task(value_after(1, 30ms)));
    ts.push_back(asyncio::create_task(value_after(2, 10ms)));
    ts.push_back(asyncio::create_task(value_after(3, 20ms)));
    return ts;
}

asyncio::Duration since(asyncio::TimePoint t0) { return asyncio::get_running_loop().time() - t0; }

TEST_F(WaitTest, AllCompletedWaitsForEveryTask) {
    auto main_ = []() -> asyncio::Coroutine<> {
        const auto t0 = asyncio::get_running_loop().time();
        auto r = co_await asyncio::wait(three());
        EXPECT_EQ(r.done.size(), 3u);
        EXPECT_TRUE(r.pending.empty());
        EXPECT_EQ(since(t0), 30ms);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(WaitTest, FirstCompletedReturnsAtTheFirstAndCancelsNothing) {
    auto main_ = []() -> asyncio::Coroutine<> {
        const auto t0 = asyncio::get_running_loop().time();
        auto ts = three();
        auto [done, pending] = co_await asyncio::wait(ts, asyncio::FIRST_COMPLETED);
        EXPECT_EQ(since(t0), 10ms);
        CO_ASSERT(done.size() == 1u);
        EXPECT_EQ(done[0].result(), 2);
        EXPECT_EQ(pending.size(), 2u);
        for (auto& t : pending) EXPECT_FALSE(t.done());
        co_await asyncio::wait(pending);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(WaitTest, FirstExceptionReturnsAtTheFirstFailure) {
    auto main_ = []() -> asyncio::Coroutine<> {
        const auto t0 = asyncio::get_running_loop().time();
        std::vector<asyncio::Task<int>> ts;
        ts.push_back(asyncio::create_task(value_after(1, 5ms)));
        ts.push_back(asyncio::create_task(fail_after(15ms)));
        ts.push_back(asyncio::create_task(value_after(3, 1h)));
        auto r = co_await asyncio::wait(ts, asyncio::FIRST_EXCEPTION);
        EXPECT_EQ(since(t0), 15ms);
        EXPECT_EQ(r.done.size(), 2u);
        EXPECT_EQ(r.pending.size(), 1u);
        EXPECT_THROW(ts[1].result(), std::runtime_error);
        ts[2].cancel();
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(WaitTest, ATimeoutReturnsWhatIsDoneWithoutRaising) {
    auto main_ = []() -> asyncio::Coroutine<> {
        const auto t0 = asyncio::get_running_loop().time();
        auto ts = three();
        auto r = co_await asyncio::wait(ts, asyncio::ALL_COMPLETED, 15ms);
        EXPECT_EQ(since(t0), 15ms);
        EXPECT_EQ(r.done.size(), 1u);
        EXPECT_EQ(r.pending.size(), 2u);
        co_await asyncio::wait(ts);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(WaitTest, AnEmptySetIsAValueError) {
    auto main_ = []() -> asyncio::Coroutine<> {
        EXPECT_THROW((void)asyncio::wait(std::vector<asyncio::Task<int>>{}), asyncio::ValueError);
        co_return;
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(WaitTest, CancellingTheWaiterLeavesTheTasksRunning) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto ts = three();
        auto waiter = asyncio::create_task([](std::vector<asyncio::Task<int>> ts) -> asyncio::Coroutine<> {
            co_await asyncio::wait(std::move(ts));
        }(ts));
        co_await asyncio::sleep(1ms);
        waiter.cancel();
        EXPECT_THROW(co_await waiter, asyncio::CancelledError);
        for (auto& t : ts) EXPECT_FALSE(t.done());
        co_await asyncio::wait(ts);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(WaitTest, AsCompletedYieldsInCompletionOrder) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto ac = asyncio::as_completed(three());
        std::vector<int> order;
        while (ac.has_next()) order.push_back((co_await ac.next()).result());
        EXPECT_EQ(order, (std::vector<int>{2, 3, 1}));
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(WaitTest, AsCompletedRaisesTimeoutErrorOnceTheTimeoutPasses) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto ts = three();
        auto ac = asyncio::as_completed(ts, 15ms);
        EXPECT_EQ((co_await ac.next()).result(), 2);
        EXPECT_THROW(co_await ac.next(), asyncio::TimeoutError);
        co_await asyncio::wait(ts);
    };
    asyncio::run(main_(), virtual_time());
}

TEST_F(WaitTest, AsCompletedSeesTasksThatFinishBetweenCalls) {
    auto main_ = []() -> asyncio::Coroutine<> {
        auto ac = asyncio::as_completed(three());
        co_await asyncio::sleep(1h);  // all done while nobody waits
        int sum = 0;
        while (ac.has_next()) sum += (co_await ac.next()).result();
        EXPECT_EQ(sum, 6);
    };
    asyncio::run(main_(), virtual_time());
}

// Regression (issue #7, item 5): a timeout in any unit goes through the saturating deadline
// helper; 1000 years used to overflow into the past (or not compile into Duration at all).
TEST_F(WaitTest, RegressionWaitAndAsCompletedWithATimeoutOfAThousandYearsDoNotReturnAtOnce) {
    auto main_ = []() -> asyncio::Coroutine<> {
        const auto t0 = asyncio::get_running_loop().time();
        auto [done, pending] = co_await asyncio::wait(three(), asyncio::ALL_COMPLETED,
                                                      std::chrono::years(1000));
        EXPECT_EQ(done.size(), 3u);
        EXPECT_TRUE(pending.empty());
        EXPECT_EQ(since(t0), 30ms);
        auto ac = asyncio::as_completed(three(), std::chrono::seconds::max());
        int sum = 0;
        while (ac.has_next()) sum += (co_await ac.next()).result();
        EXPECT_EQ(sum, 6);
        EXPECT_EQ(since(t0), 60ms);
    };
    asyncio::run(main_(), virtual_time());
}

}  // namespace

// Reliability issue #7 (3): a task parked here, its loop destroyed, its last handle dropped
// afterwards: the frame's destruction must not touch the dead loop (ASan: heap-use-after-free).
namespace {
using asyncio_test::destroy_loop_then_task;

TEST_F(WaitTest, RegressionTaskHandleOutlivingItsLoopWhileParkedInWaitWithATimeout) {
    destroy_loop_then_task([](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([]() -> asyncio::Coroutine<> {
            std::vector<asyncio::Task<>> tasks;
            tasks.push_back(asyncio::create_task(
                []() -> asyncio::Coroutine<> { co_await asyncio::sleep(std::chrono::hours(1)); }()));
            (void)co_await asyncio::wait(tasks, asyncio::ALL_COMPLETED, std::chrono::minutes(1));
        }());
    });
}

TEST_F(WaitTest, RegressionTaskHandleOutlivingItsLoopWhileParkedInAsCompletedWithATimeout) {
    destroy_loop_then_task([](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([]() -> asyncio::Coroutine<> {
            std::vector<asyncio::Task<>> tasks;
            tasks.push_back(asyncio::create_task(
                []() -> asyncio::Coroutine<> { co_await asyncio::sleep(std::chrono::hours(1)); }()));
            auto it = asyncio::as_completed(tasks, std::chrono::minutes(1));
            (void)co_await it.next();
        }());
    });
}
}  // namespace

namespace {

// As CPython 3.13 (checked): wait(FIRST_EXCEPTION) looks at the exception of the task that fails
// while others still run, so only a later failure is reported as never retrieved; with
// ALL_COMPLETED and FIRST_COMPLETED wait() looks at none, and both are reported.
std::size_t never_retrieved_after_wait(asyncio::ReturnWhen when) {
    asyncio::EventLoop loop(virtual_time());
    asyncio_test::Reports reports;
    reports.install(loop);
    loop.run_until_complete([](asyncio::ReturnWhen when) -> asyncio::Coroutine<> {
        std::vector<asyncio::Task<int>> ts;
        ts.push_back(asyncio::create_task(fail_after(0ms)));
        ts.push_back(asyncio::create_task(fail_after(10ms)));
        auto r = co_await asyncio::wait(ts, when);
        (void)r;
        co_await asyncio::sleep(50ms);  // both have failed now; every handle goes at the end
    }(when));
    loop.close();
    return reports.count("Task exception was never retrieved");
}

TEST_F(WaitTest, RegressionWaitFirstExceptionRetrievesTheExceptionThatEndedTheWait) {
    EXPECT_EQ(never_retrieved_after_wait(asyncio::FIRST_EXCEPTION), 1u);
    EXPECT_EQ(never_retrieved_after_wait(asyncio::ALL_COMPLETED), 2u);
    EXPECT_EQ(never_retrieved_after_wait(asyncio::FIRST_COMPLETED), 2u);
}

}  // namespace
