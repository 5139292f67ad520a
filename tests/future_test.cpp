// asyncio::Future<T>: states and CPython's texts, many awaiters, callbacks and their order,
// cancellation both ways, the unretrieved-exception report, loop binding, and a Task used as a
// Future. Expected orders come from CPython 3.13 (tests/cpython_scenarios/future_*.py).
#include "asyncio/future.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/shield.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "asyncio/wait.hpp"
#include "test_support.hpp"

namespace {

using asyncio::CancelledError;
using asyncio::Coroutine;
using asyncio::EventLoop;
using asyncio::Future;
using asyncio::InvalidStateError;
using asyncio::RuntimeError;
using asyncio::Task;
using asyncio_test::Counted;
using asyncio_test::Reports;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class AFuture : public asyncio_test::LeakChecked {};

template <class F>
std::string error_text(F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    } catch (const asyncio::BaseException& e) {
        return std::string("BaseException:") + e.what();
    }
    return "no error";
}

TEST_F(AFuture, PendingStateAndCPythonTexts) {
    EventLoop loop(virtual_time());
    Future<int> f = loop.create_future<int>();
    EXPECT_FALSE(f.done());
    EXPECT_FALSE(f.cancelled());
    EXPECT_EQ(&f.get_loop(), &loop);
    EXPECT_THROW((void)f.result(), InvalidStateError);
    EXPECT_EQ(error_text([&] { (void)f.result(); }), "Result is not set.");
    EXPECT_EQ(error_text([&] { (void)f.exception(); }), "Exception is not set.");
    f.set_result(1);
    EXPECT_TRUE(f.done());
    EXPECT_EQ(f.result(), 1);
    EXPECT_EQ(f.exception(), nullptr);
    EXPECT_EQ(error_text([&] { f.set_result(2); }), "invalid state");
    EXPECT_EQ(error_text([&] { f.set_exception(std::runtime_error("x")); }), "invalid state");
    EXPECT_FALSE(f.cancel());
    EXPECT_EQ(f.result(), 1);
}

TEST_F(AFuture, SetExceptionRethrowsAndMarksRetrieved) {
    EventLoop loop(virtual_time());
    Reports reports;
    reports.install(loop);
    {
        Future<int> f = loop.create_future<int>();
        f.set_exception(std::runtime_error("boom"));
        EXPECT_TRUE(f.done());
        EXPECT_FALSE(f.cancelled());
        EXPECT_THROW((void)f.result(), std::runtime_error);
    }
    EXPECT_EQ(reports.size(), 0u);
    EXPECT_THROW(loop.create_future<int>().set_exception(std::exception_ptr()), asyncio::TypeError);
}

TEST_F(AFuture, UnretrievedExceptionIsReportedAsCPythonDoes) {
    EventLoop loop(virtual_time());
    Reports reports;
    reports.install(loop);
    {
        Future<> f = loop.create_future();
        f.set_exception(std::make_exception_ptr(std::logic_error("x")));
    }
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_EQ(reports.entries()[0].message, "Future exception was never retrieved");
    EXPECT_EQ(reports.what(0), "x");
    { Future<Counted> pending = loop.create_future<Counted>(); }  // silently freed, as asyncio
    EXPECT_EQ(reports.size(), 1u);
}

TEST_F(AFuture, CancelCompletesAtOnceAndTheFirstMessageWins) {
    EventLoop loop(virtual_time());
    Future<int> h = loop.create_future<int>();
    EXPECT_TRUE(h.cancel("m1"));
    EXPECT_FALSE(h.cancel("m2"));
    EXPECT_TRUE(h.done());
    EXPECT_TRUE(h.cancelled());
    EXPECT_EQ(error_text([&] { (void)h.result(); }), "BaseException:m1");
    EXPECT_EQ(error_text([&] { (void)h.exception(); }), "BaseException:m1");
}

TEST_F(AFuture, ManyAwaitersGetTheValueThenCallbacksRunInOrder) {
    // CPython: [(0, 7), (1, 7), (2, 7), 'cb'], then 'late' one iteration after it is added.
    asyncio::run([]() -> Coroutine<> {
        EventLoop& loop = asyncio::get_running_loop();
        Future<Counted> m = loop.create_future<Counted>();
        std::vector<std::string> order;
        auto waiter = [](Future<Counted> f, int i, std::vector<std::string>& out) -> Coroutine<> {
            Counted v = co_await f;
            out.push_back(std::to_string(i) + ":" + std::to_string(v.value()));
        };
        std::vector<Task<>> tasks;
        for (int i = 0; i < 3; ++i) tasks.push_back(asyncio::create_task(waiter(m, i, order)));
        co_await asyncio::sleep(0s);
        m.add_done_callback([&order](Future<Counted>&) { order.push_back("cb"); });
        m.set_result(Counted(7));
        co_await asyncio::sleep(0s);
        EXPECT_EQ(order, (std::vector<std::string>{"0:7", "1:7", "2:7", "cb"}));
        m.add_done_callback([&order](Future<Counted>&) { order.push_back("late"); });
        EXPECT_EQ(order.size(), 4u);
        co_await asyncio::sleep(0s);
        EXPECT_EQ(order.back(), "late");
        EXPECT_EQ(m.result().value(), 7);  // still there after copies went to each awaiter
    }(), virtual_time());
}

TEST_F(AFuture, AwaitingADoneFutureTwiceGivesTheValueTwice) {
    int sum = asyncio::run([]() -> Coroutine<int> {
        Future<int> r = asyncio::get_running_loop().create_future<int>();
        r.set_result(5);
        int a = co_await r;
        int b = co_await r;
        co_return a + b;
    }(), virtual_time());
    EXPECT_EQ(sum, 10);
}

TEST_F(AFuture, RemoveDoneCallbackRemovesOnlyThatOne) {
    asyncio::run([]() -> Coroutine<> {
        Future<> n = asyncio::get_running_loop().create_future();
        int calls = 0;
        auto id1 = n.add_done_callback([&calls](Future<>&) { calls += 1; });
        n.add_done_callback([&calls](Future<>&) { calls += 10; });
        EXPECT_EQ(n.remove_done_callback(id1), 1u);
        EXPECT_EQ(n.remove_done_callback(id1), 0u);
        n.set_result();
        co_await asyncio::sleep(0s);
        EXPECT_EQ(calls, 10);
    }(), virtual_time());
}

TEST_F(AFuture, CancellingTheAwaitingTaskCancelsTheFuture) {
    // CPython: t.cancel("bye") -> one iteration later the future is cancelled and t is done.
    asyncio::run([]() -> Coroutine<> {
        Future<int> k = asyncio::get_running_loop().create_future<int>();
        Task<int> t = asyncio::create_task([](Future<int> f) -> Coroutine<int> { co_return co_await f; }(k));
        co_await asyncio::sleep(0s);
        t.cancel("bye");
        EXPECT_TRUE(k.cancelled());  // at once: the cancellation went on to the future
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(t.done());
        EXPECT_TRUE(t.cancelled());
        EXPECT_EQ(error_text([&] { (void)t.result(); }), "BaseException:bye");
    }(), virtual_time());
}

TEST_F(AFuture, CancellingTheFutureRaisesInEveryAwaiter) {
    asyncio::run([]() -> Coroutine<> {
        Future<int> k = asyncio::get_running_loop().create_future<int>();
        auto waiter = [](Future<int> f) -> Coroutine<int> { co_return co_await f; };
        Task<int> a = asyncio::create_task(waiter(k));
        Task<int> b = asyncio::create_task(waiter(k));
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(k.cancel("stop"));
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(a.cancelled());
        EXPECT_TRUE(b.cancelled());
        EXPECT_EQ(error_text([&] { (void)b.result(); }), "BaseException:stop");
    }(), virtual_time());
}

TEST_F(AFuture, AnAwaiterCancelledElsewhereLeavesTheFutureForTheOthers) {
    asyncio::run([]() -> Coroutine<> {
        Future<int> k = asyncio::get_running_loop().create_future<int>();
        auto waiter = [](Future<int> f) -> Coroutine<int> { co_return co_await f; };
        Task<int> a = asyncio::create_task(waiter(k));
        co_await asyncio::sleep(0s);
        k.set_result(3);  // a is scheduled with the value...
        a.cancel();       // ...and then cancelled: as asyncio, a raises CancelledError
        Task<int> b = asyncio::create_task(waiter(k));
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(a.cancelled());
        EXPECT_EQ(b.result(), 3);
    }(), virtual_time());
}

TEST_F(AFuture, ATaskIsAFutureThatRefusesSetResult) {
    asyncio::run([]() -> Coroutine<> {
        Task<int> t = asyncio::create_task([]() -> Coroutine<int> { co_return 4; }());
        Future<int> as_future = t;
        EXPECT_EQ(error_text([&] { as_future.set_result(1); }), "Task does not support set_result operation");
        EXPECT_EQ(error_text([&] { as_future.set_exception(std::runtime_error("x")); }),
                  "Task does not support set_exception operation");
        EXPECT_EQ(co_await as_future, 4);
        EXPECT_EQ(&t.get_loop(), &asyncio::get_running_loop());
    }(), virtual_time());
}

TEST_F(AFuture, SetResultBetweenRunsWakesTheAwaiterOnTheNextRun) {
    EventLoop loop(virtual_time());
    Future<int> f = loop.create_future<int>();
    Task<int> t = loop.create_task([](Future<int> fut) -> Coroutine<int> { co_return co_await fut + 1; }(f));
    loop.run_until_complete([]() -> Coroutine<> { co_await asyncio::sleep(0s); }());
    EXPECT_FALSE(t.done());
    f.set_result(41);  // no loop running: the waiter goes on f's loop's ready queue
    EXPECT_EQ(loop.run_until_complete(t), 42);
}

TEST_F(AFuture, AwaitingAFutureOfAnotherLoopIsARuntimeError) {
    EventLoop other(virtual_time());
    Future<int> foreign = other.create_future<int>();
    std::string text = asyncio::run([](Future<int> f) -> Coroutine<std::string> {
        try {
            co_await f;
        } catch (const RuntimeError& e) {
            co_return e.what();
        }
        co_return "no error";
    }(foreign), virtual_time());
    EXPECT_EQ(text, "Task got Future attached to a different loop");
}

TEST_F(AFuture, CompletingFromAnotherThreadWhileItsLoopRunsIsARuntimeError) {
    std::string text;
    asyncio::run([](std::string& out) -> Coroutine<> {
        Future<int> f = asyncio::get_running_loop().create_future<int>();
        std::thread other([&] { out = error_text([&] { f.set_result(1); }); });
        other.join();
        EXPECT_FALSE(f.done());
        co_return;
    }(text));
    EXPECT_EQ(text, "set_result: Non-thread-safe operation invoked on an event loop other than the current one");
}

TEST_F(AFuture, ThreadsCompleteItThroughCallSoonThreadsafe) {
    int v = asyncio::run([]() -> Coroutine<int> {
        EventLoop& loop = asyncio::get_running_loop();
        Future<int> f = loop.create_future<int>();
        // A handle's copies share a count the loop thread owns: the worker moves its copy into the
        // callback, so every copy and release happens on the loop thread.
        std::thread worker([&loop, f]() mutable {
            loop.call_soon_threadsafe([f = std::move(f)]() mutable { f.set_result(9); });
        });
        int r = co_await f;
        worker.join();
        co_return r;
    }());
    EXPECT_EQ(v, 9);
}

TEST_F(AFuture, PendingAtLoopCloseItsWaitersAndCallbacksAreFreed) {
    Future<Counted> survivor;
    {
        EventLoop loop(virtual_time());
        survivor = loop.create_future<Counted>();
        Task<Counted> t = loop.create_task([](Future<Counted> f) -> Coroutine<Counted> { co_return co_await f; }(survivor));
        survivor.add_done_callback([keep = Counted(1)](Future<Counted>&) {});
        loop.run_until_complete([]() -> Coroutine<> { co_await asyncio::sleep(0s); }());
        loop.close();
        EXPECT_FALSE(survivor.done());  // pending, as asyncio leaves it
        EXPECT_THROW(survivor.add_done_callback([](Future<Counted>&) {}), RuntimeError);
        survivor.set_result(Counted(2));  // nobody left to wake
        EXPECT_EQ(survivor.result().value(), 2);
    }
    EXPECT_THROW((void)survivor.get_loop(), RuntimeError);
    survivor = Future<Counted>();
}

TEST_F(AFuture, OutlivingItsLoopIsSafe) {
    Future<int> f;
    {
        EventLoop loop(virtual_time());
        f = loop.create_future<int>();
    }
    EXPECT_FALSE(f.done());
    f.set_result(1);  // no loop: completes, wakes nobody
    EXPECT_EQ(f.result(), 1);
    EXPECT_FALSE(f.cancel());
}

TEST_F(AFuture, AwaitingAnEmptyFutureIsInvalidState) {
    std::string text = asyncio::run([]() -> Coroutine<std::string> {
        Future<int> empty;
        try {
            co_await empty;
        } catch (const InvalidStateError& e) {
            co_return e.what();
        }
        co_return "no error";
    }(), virtual_time());
    EXPECT_EQ(text, "cannot await an empty Task or Future");
}

// As CPython 3.13: ensure_future(f) is f; wait() over
// futures gives those futures; cancelling a gather cancels the futures it holds, at once; shield(f)
// leaves f pending when the outer await is cancelled.
TEST_F(AFuture, EnsureFutureWaitGatherAndShieldUseTheFutureItself) {
    asyncio::run([]() -> Coroutine<> {
        EventLoop& loop = asyncio::get_running_loop();
        Future<int> f = loop.create_future<int>();
        Future<int> same = asyncio::ensure_future(f);
        EXPECT_TRUE(same == f);

        Future<int> f1 = loop.create_future<int>();
        Future<int> f2 = loop.create_future<int>();
        loop.call_soon([f2]() mutable { f2.set_result(2); });
        std::vector<Future<int>> both{f1, f2};
        auto [done, pending] = co_await asyncio::wait(both, asyncio::FIRST_COMPLETED);
        EXPECT_EQ(done.size(), 1u);
        EXPECT_EQ(pending.size(), 1u);
        EXPECT_TRUE(done.at(0) == f2);
        EXPECT_TRUE(pending.at(0) == f1);

        Future<int> other = loop.create_future<int>();
        Task<> g = asyncio::create_task(asyncio::gather(f1, other));
        co_await asyncio::sleep(0s);
        g.cancel();
        bool gather_cancelled = false;
        try {
            co_await g;
        } catch (const CancelledError&) {
            gather_cancelled = true;
        }
        EXPECT_TRUE(gather_cancelled);
        EXPECT_TRUE(f1.cancelled());
        EXPECT_TRUE(other.cancelled());

        Future<int> f3 = loop.create_future<int>();
        Task<int> outer = asyncio::create_task([](Future<int> inner) -> Coroutine<int> {
            co_return co_await asyncio::shield(inner);
        }(f3));
        co_await asyncio::sleep(0s);
        outer.cancel();
        EXPECT_THROW(co_await outer, CancelledError);
        EXPECT_FALSE(f3.done());
        f3.set_result(3);
        EXPECT_EQ(f3.result(), 3);

        // as_completed over futures hands out the futures themselves, in the order they finish.
        Future<int> a = loop.create_future<int>();
        Future<int> b = loop.create_future<int>();
        loop.call_soon([b]() mutable { b.set_result(20); });
        loop.call_soon([a]() mutable { a.set_result(10); });
        std::vector<Future<int>> ab{a, b};
        auto it = asyncio::as_completed(ab);
        Future<int> first = co_await it.next();
        Future<int> second = co_await it.next();
        EXPECT_TRUE(first == b);
        EXPECT_TRUE(second == a);
    }());
}

}  // namespace
