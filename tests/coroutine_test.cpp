// asyncio::Coroutine<T>: lazy, awaited once, value or exception, every kind of T, frame ownership,
// and symmetric transfer (no stack growth across synchronous completions).
#include "asyncio/coroutine.hpp"

#include <gtest/gtest.h>
#include <pthread.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "asyncio/event_loop.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::Coroutine;
using asyncio_test::Counted;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class ACoroutine : public asyncio_test::LeakChecked {};

Coroutine<int> answer() { co_return 42; }

Coroutine<int> record_and_answer(bool& ran) {
    ran = true;
    co_return 42;
}

Coroutine<int> fails(std::string what) {
    throw std::runtime_error(what);
    co_return 0;
}

using asyncio_test::sets;

int g_global = 7;
Coroutine<int&> global_ref() { co_return g_global; }
Coroutine<const std::string&> const_ref(const std::string& s) { co_return s; }

Coroutine<std::unique_ptr<int>> make_unique_int(int v) { co_return std::make_unique<int>(v); }

Coroutine<Counted> make_counted(int v) { co_return Counted(v); }

Coroutine<int> takes_counted(Counted c) { co_return c.value(); }

Coroutine<int> holds_counted_local_across_sleep() {
    Counted local(5);
    co_await asyncio::sleep(1s);
    co_return local.value();
}

Coroutine<int> one() { co_return 1; }

Coroutine<int> nested(int depth) {
    if (depth == 0) co_return 0;
    co_return 1 + co_await nested(depth - 1);
}

TEST_F(ACoroutine, DoesNotRunUntilAwaited) {
    bool ran = false;
    auto main = [&]() -> Coroutine<int> {
        Coroutine<int> c = record_and_answer(ran);
        EXPECT_FALSE(ran);
        EXPECT_FALSE(c.started());
        EXPECT_FALSE(c.done());
        co_await asyncio::sleep(0s);  // the loop running other things does not start it either
        EXPECT_FALSE(ran);
        int v = co_await c;
        EXPECT_TRUE(ran);
        EXPECT_TRUE(c.done());
        co_return v;
    };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), 42);
}

TEST_F(ACoroutine, CreatedButNeverAwaitedNeverRuns) {
    bool ran = false;
    { auto c = record_and_answer(ran); }
    EXPECT_FALSE(ran);
}

TEST_F(ACoroutine, AwaitYieldsTheReturnedValue) {
    auto main = []() -> Coroutine<int> { co_return co_await answer() + 1; };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), 43);
}

TEST_F(ACoroutine, AwaitRethrowsTheException) {
    auto main = []() -> Coroutine<std::string> {
        try {
            co_await fails("boom");
        } catch (const std::runtime_error& e) {
            co_return e.what();
        }
        co_return "not thrown";
    };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), "boom");
}

TEST_F(ACoroutine, OfVoidRunsItsBodyWhenAwaited) {
    bool flag = false;
    auto main = [&]() -> Coroutine<> {
        co_await sets(flag);
        EXPECT_TRUE(flag);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_TRUE(flag);
}

TEST_F(ACoroutine, OfReferenceYieldsTheSameObject) {
    auto main = []() -> Coroutine<> {
        int& r = co_await global_ref();
        EXPECT_EQ(&r, &g_global);
        r = 8;
        const std::string s = "text";
        const std::string& cr = co_await const_ref(s);
        EXPECT_EQ(&cr, &s);
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(g_global, 8);
    g_global = 7;
}

TEST_F(ACoroutine, OfMoveOnlyTypeMovesTheResultOut) {
    auto main = []() -> Coroutine<int> {
        std::unique_ptr<int> p = co_await make_unique_int(9);
        co_return p ? *p : -1;
    };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), 9);
}

TEST_F(ACoroutine, ResultObjectIsDestroyedWithTheFrame) {
    auto main = []() -> Coroutine<int> {
        Counted c = co_await make_counted(3);
        co_return c.value();
    };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), 3);
}

TEST_F(ACoroutine, AwaitedTwiceRaisesRuntimeError) {
    auto main = []() -> Coroutine<> {
        Coroutine<int> c = answer();
        EXPECT_EQ(co_await c, 42);
        EXPECT_TRUE(c.started());
        EXPECT_THROW(co_await c, asyncio::RuntimeError);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ACoroutine, AwaitingAnEmptyOneRaisesRuntimeError) {
    auto main = []() -> Coroutine<> {
        Coroutine<int> empty;
        EXPECT_FALSE(empty.valid());
        EXPECT_THROW(co_await empty, asyncio::RuntimeError);
        Coroutine<int> c = answer();
        Coroutine<int> taken = std::move(c);
        EXPECT_FALSE(c.valid());  // NOLINT(bugprone-use-after-move): testing the moved-from state
        EXPECT_THROW(co_await c, asyncio::RuntimeError);
        EXPECT_EQ(co_await taken, 42);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ACoroutine, NeverAwaitedDestroysItsParametersExactlyOnce) {
    {
        Coroutine<int> c = takes_counted(Counted(1));
        EXPECT_GE(Counted::live(), 1);  // the frame holds its copy of the parameter
    }
    EXPECT_EQ(Counted::live(), 0);
}

TEST_F(ACoroutine, MovedIntoAnotherDestroysItsFrameOnce) {
    {
        Coroutine<int> a = takes_counted(Counted(1));
        Coroutine<int> b = takes_counted(Counted(2));
        a = std::move(b);  // a's first frame is freed here
        EXPECT_EQ(Counted::live(), 1);
    }
    EXPECT_EQ(Counted::live(), 0);
}

TEST_F(ACoroutine, AwaitedToTheEndDestroysItsParametersExactlyOnce) {
    auto main = []() -> Coroutine<int> { co_return co_await takes_counted(Counted(4)); };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), 4);
}

TEST_F(ACoroutine, SuspendedInsideATaskThatIsDestroyedFreesItsLocals) {
    // The loop is closed while the task is suspended inside the coroutine: both frames go.
    asyncio::EventLoop loop(virtual_time());
    asyncio_test::Reports reports;
    reports.install(loop);
    auto outer = []() -> Coroutine<int> { co_return co_await holds_counted_local_across_sleep(); };
    loop.create_task(outer());
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();  // one iteration: the task starts and suspends in the sleep
    EXPECT_EQ(Counted::live(), 1);
    loop.close();
    EXPECT_EQ(Counted::live(), 0);
    EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), 1u);
}

TEST_F(ACoroutine, CanBeMadeATaskOnlyIfNeverAwaited) {
    auto main = []() -> Coroutine<> {
        Coroutine<int> c = answer();
        EXPECT_EQ(co_await c, 42);
        EXPECT_THROW(asyncio::create_task(std::move(c)), asyncio::RuntimeError);
        EXPECT_THROW(asyncio::create_task(Coroutine<int>()), asyncio::InvalidStateError);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(ACoroutine, MillionSynchronousAwaitsInATaskDoNotGrowTheStack) {
    auto main = []() -> Coroutine<long> {
        long sum = 0;
        for (int i = 0; i < 1'000'000; ++i) sum += co_await one();
        co_return sum;
    };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), 1'000'000);
}

TEST_F(ACoroutine, DeeplyNestedSynchronousAwaitsComplete) {
    // 10,000 frames awaiting each other. (With Clang, symmetric transfer makes this use no stack;
    // with GCC each level of nesting uses a little, as a nested call would.)
    auto main = []() -> Coroutine<int> { co_return co_await nested(10'000); };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), 10'000);
}

using asyncio_test::run_on_small_stack;

TEST_F(ACoroutine, RegressionSynchronousAwaitsGrowTheStackWithoutTailCalls) {
    // GCC (before 15) turns symmetric transfer into a tail call only when it optimizes sibling
    // calls: at -O0/-O1/-Og and under ASan every synchronous completion used stack. On a 256 KiB
    // stack, 200,000 of them in a row overflowed.
    long sum = -1;
    const bool started = run_on_small_stack(256 * 1024, [&] {
        auto main = []() -> Coroutine<long> {
            long s = 0;
            for (int i = 0; i < 200'000; ++i) s += co_await one();
            co_return s;
        };
        sum = asyncio::run(main(), virtual_time());
    });
    ASSERT_TRUE(started);
    EXPECT_EQ(sum, 200'000);
}

// "coroutine 'NAME' was never awaited (defined at FILE:LINE)", through the loop's exception
// handler, as Python's RuntimeWarning; in debug mode also where it was made (Python's "Coroutine
// created at (most recent call last)"), outermost call first. `answer` is defined in this file.
std::vector<std::string> never_awaited_reports(bool debug) {
    asyncio::EventLoop loop(virtual_time());
    asyncio_test::Reports reports;
    reports.install(loop);
    loop.set_debug(debug);
    loop.run_until_complete([]() -> Coroutine<> {
        { Coroutine<int> forgotten = answer(); }
        co_return;
    }());
    loop.close();
    std::vector<std::string> out;
    for (const auto& e : reports.entries()) out.push_back(e.message);
    return out;
}

TEST_F(ACoroutine, DroppedWithoutBeingAwaitedIsReportedWithItsNameAndDefinition) {
    const std::vector<std::string> r = never_awaited_reports(false);
    ASSERT_EQ(r.size(), 1u);
    const std::string head = "coroutine 'answer' was never awaited (defined at ";
    EXPECT_EQ(r[0].substr(0, head.size()), head) << r[0];
    EXPECT_NE(r[0].find("coroutine_test.cpp:"), std::string::npos) << r[0];
    EXPECT_EQ(r[0].find("Coroutine created at"), std::string::npos) << r[0];
}

TEST_F(ACoroutine, InDebugModeTheNeverAwaitedReportSaysWhereItWasCreated) {
    const std::vector<std::string> r = never_awaited_reports(true);
    ASSERT_EQ(r.size(), 1u);
    const std::size_t at = r[0].find("\nCoroutine created at (most recent call last):\n  ");
    ASSERT_NE(at, std::string::npos) << r[0];
    // The frames are in this test binary (and libc's start-up code, outermost).
    EXPECT_NE(r[0].find("coroutine_test(+0x", at), std::string::npos) << r[0];
}

TEST_F(ACoroutine, InDebugModeAPendingTaskDestroyedSaysWhereItsCoroutineWasCreated) {
    asyncio::EventLoop loop(virtual_time());
    asyncio_test::Reports reports;
    reports.install(loop);
    loop.set_debug(true);
    loop.run_until_complete([]() -> Coroutine<> {
        asyncio::create_task(holds_counted_local_across_sleep());
        co_return;
    }());
    loop.close();  // the sleeping task is destroyed pending
    ASSERT_EQ(reports.size(), 1u);
    const std::string& m = reports.entries()[0].message;
    EXPECT_EQ(m.substr(0, m.find('\n')), "Task was destroyed but it is pending!");
    EXPECT_NE(m.find("\nCoroutine created at (most recent call last):\n  "), std::string::npos) << m;
}

}  // namespace
