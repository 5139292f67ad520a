// asyncio::Event: set/clear/is_set, wait() at once when set, set() waking every waiter in FIFO
// order through the ready queue, and cancellation (in the queue, after set() woke it, pending,
// withdrawn). Virtual time; no frame may leak.
#include "asyncio/event.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <exception>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/debug.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

using asyncio::CancelledError;
using asyncio::Coroutine;
using asyncio::Event;
using asyncio::Task;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class AnEvent : public asyncio_test::LeakChecked {};
class EventCancellation : public asyncio_test::LeakChecked {};

using asyncio_test::run_virtual;

using asyncio_test::yields;

Coroutine<> waiter(Event& e, std::vector<int>& log, int id) {
    co_await e.wait();
    log.push_back(id);
}

asyncio_test::Eager wait_outside(std::exception_ptr&, Event& e, bool& returned) {
    co_await e.wait();
    returned = true;
}

// ---------------------------------------------------------------------------------------------
// Basics

TEST_F(AnEvent, StartsClearAndSetsAndClears) {
    Event e;
    EXPECT_FALSE(e.is_set());
    e.set();
    EXPECT_TRUE(e.is_set());
    e.set();  // idempotent
    EXPECT_TRUE(e.is_set());
    e.clear();
    EXPECT_FALSE(e.is_set());
    e.clear();
    EXPECT_FALSE(e.is_set());
}

TEST_F(AnEvent, WaitReturnsAtOnceWhenSet) {
    run_virtual([]() -> Coroutine<> {
        Event e;
        e.set();
        bool other_ran = false;
        Task<> other = asyncio::create_task([](bool& f) -> Coroutine<> {
            f = true;
            co_return;
        }(other_ran));
        co_await e.wait();
        co_await e.wait();
        EXPECT_FALSE(other_ran) << "waiting on a set event does not suspend";
        co_await other;
    }());
}

TEST_F(AnEvent, WaitOutsideATaskWorksOnlyWhenSet) {
    Event e;
    std::exception_ptr error;
    bool returned = false;
    wait_outside(error, e, returned);
    ASSERT_TRUE(error);
    EXPECT_THROW(std::rethrow_exception(error), asyncio::RuntimeError);
    EXPECT_FALSE(returned);
    error = nullptr;
    e.set();
    wait_outside(error, e, returned);
    EXPECT_FALSE(error);
    EXPECT_TRUE(returned);
}

TEST_F(AnEvent, SetWakesEveryWaiterInFifoOrderThroughTheReadyQueue) {
    run_virtual([]() -> Coroutine<> {
        Event e;
        std::vector<int> log;
        std::vector<Task<>> tasks;
        for (int i = 0; i < 50; ++i) tasks.push_back(asyncio::create_task(waiter(e, log, i)));
        co_await yields(3);
        EXPECT_TRUE(log.empty());
        e.set();
        EXPECT_TRUE(log.empty()) << "no waiter runs inside set()";
        co_await asyncio::sleep(0s);
        std::vector<int> expected;
        for (int i = 0; i < 50; ++i) expected.push_back(i);
        EXPECT_EQ(log, expected);
        for (auto& t : tasks) co_await t;
    }());
}

TEST_F(AnEvent, WaitersWokenBySetReturnEvenIfClearedBeforeTheyRun) {
    run_virtual([]() -> Coroutine<> {
        Event e;
        std::vector<int> log;
        Task<> a = asyncio::create_task(waiter(e, log, 1));
        Task<> b = asyncio::create_task(waiter(e, log, 2));
        co_await asyncio::sleep(0s);
        e.set();
        e.clear();
        co_await a;
        co_await b;
        EXPECT_EQ(log, (std::vector<int>{1, 2}));
        EXPECT_FALSE(e.is_set());
    }());
}

TEST_F(AnEvent, ClearMakesLaterWaitsWaitForTheNextSet) {
    run_virtual([]() -> Coroutine<> {
        Event e;
        std::vector<int> log;
        e.set();
        e.clear();
        Task<> a = asyncio::create_task(waiter(e, log, 1));
        co_await asyncio::sleep(1s);
        EXPECT_TRUE(log.empty());
        EXPECT_FALSE(a.done());
        e.set();
        co_await a;
        EXPECT_EQ(log, std::vector<int>{1});
    }());
}

TEST_F(AnEvent, CanBeReusedAcrossSetAndClearCycles) {
    run_virtual([]() -> Coroutine<> {
        Event e;
        std::vector<int> log;
        for (int round = 0; round < 5; ++round) {
            Task<> t = asyncio::create_task(waiter(e, log, round));
            co_await asyncio::sleep(0s);
            EXPECT_EQ(log.size(), static_cast<std::size_t>(round));
            e.set();
            co_await t;
            e.clear();
        }
        EXPECT_EQ(log, (std::vector<int>{0, 1, 2, 3, 4}));
    }());
}

// ---------------------------------------------------------------------------------------------
// Cancellation

Coroutine<> self_cancel_then_wait(Event& e, std::vector<int>& log) {
    asyncio::current_task().cancel();
    co_await e.wait();  // returns at once if set (no suspension), raises at once if not
    log.push_back(1);
    co_await asyncio::sleep(0s);  // the pending cancellation is raised here
    log.push_back(2);
}

TEST_F(EventCancellation, APendingCancelRaisesAtOnceOnAnUnsetEventOnly) {
    run_virtual([]() -> Coroutine<> {
        Event e;
        std::vector<int> log;
        Task<> a = asyncio::create_task(self_cancel_then_wait(e, log));
        EXPECT_THROW(co_await a, CancelledError);
        EXPECT_TRUE(log.empty());
        e.set();
        Task<> b = asyncio::create_task(self_cancel_then_wait(e, log));
        EXPECT_THROW(co_await b, CancelledError);
        EXPECT_EQ(log, std::vector<int>{1});
    }());
}

}  // namespace

namespace {
// An Event destroyed (a bug in the program) while a task still waits on it: asyncio::run's
// cleanup cancels the task, and its cancellation must not touch the dead Event (ASan: no
// heap-use-after-free).
TEST(EventLifetime, RegressionCancellingAWaiterOfADestroyedEventIsSafe) {
    const auto frames = asyncio::debug::live_frames();
    auto main_ = []() -> asyncio::Coroutine<> {
        auto ev = std::make_unique<asyncio::Event>();
        auto waiter = [](asyncio::Event& e) -> asyncio::Coroutine<> { co_await e.wait(); };
        asyncio::create_task(waiter(*ev));
        co_await asyncio::sleep(std::chrono::seconds(0));
        ev.reset();  // the waiter is still suspended on it
    };
    asyncio::run(main_(), std::make_unique<asyncio::MockClock>());
    EXPECT_EQ(asyncio::debug::live_frames(), frames);
}
}  // namespace

// Reliability issue #7 (3): a task parked here, its loop destroyed, its last handle dropped
// afterwards: the frame's destruction must not touch the dead loop (ASan: heap-use-after-free).
namespace {
using asyncio_test::destroy_loop_then_task;

TEST_F(AnEvent, RegressionTaskHandleOutlivingItsLoopWhileParkedInEventWait) {
    Event event;  // outlives both
    destroy_loop_then_task([&](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([](Event& e) -> asyncio::Coroutine<> { co_await e.wait(); }(event));
    });
    EXPECT_FALSE(event.is_set());
}
}  // namespace

namespace {

// A task left waiting on an Event when its loop closed (abandoned: a Task handle keeps its frame),
// then the Event is set with no loop running, or from another loop: the abandoned task must not
// be scheduled anywhere (it never runs again), and nothing may crash.
TEST_F(AnEvent, RegressionSettingAnEventAfterItsWaitersLoopClosedSchedulesNothing) {
    asyncio::Event ev;
    asyncio::Task<> parked;
    {
        asyncio::EventLoop loop(asyncio_test::virtual_time());
        loop.set_exception_handler([](asyncio::EventLoop&, const asyncio::ExceptionContext&) {});
        parked = loop.create_task([](asyncio::Event& ev) -> asyncio::Coroutine<> { co_await ev.wait(); }(ev));
        loop.run_until_complete([]() -> asyncio::Coroutine<> { co_await asyncio::sleep(asyncio::Duration::zero()); }());
        EXPECT_FALSE(parked.done());
        loop.close();
        ev.set();  // no loop runs on this thread now
        ev.clear();
    }
    ev.set();  // and the loop is gone
    {
        asyncio::EventLoop other(asyncio_test::virtual_time());
        int ran = 0;
        other.run_until_complete([](asyncio::Event& ev, int& ran) -> asyncio::Coroutine<> {
            ev.clear();
            ev.set();  // from another loop's task
            co_await asyncio::sleep(asyncio::Duration::zero());
            ++ran;
        }(ev, ran));
        EXPECT_EQ(ran, 1);
    }
    EXPECT_FALSE(parked.done());
    parked = asyncio::Task<>();
}

TEST_F(AnEvent, RegressionSetFromAnotherThreadCrashes) {
    // Issue #8: Event::set() from a plain thread while the loop ran crashed (SIGSEGV). Now it
    // raises RuntimeError and changes nothing; set() on the loop's thread then works.
    std::string text;
    asyncio::run([](std::string& out) -> Coroutine<> {
        Event ev;
        Task<> waiter = asyncio::create_task([](Event& e) -> Coroutine<> { co_await e.wait(); }(ev));
        co_await asyncio::sleep(0s);
        std::thread other([&] {
            try {
                ev.set();
            } catch (const asyncio::RuntimeError& e) {
                out = e.what();
            }
        });
        other.join();
        EXPECT_FALSE(ev.is_set());
        ev.set();
        co_await waiter;
    }(text));
    EXPECT_EQ(text, "Event.set(): Non-thread-safe operation invoked on an event loop other than the current one");
}

}  // namespace
