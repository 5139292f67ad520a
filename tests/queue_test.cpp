// asyncio::Queue, PriorityQueue, LifoQueue: order, blocking put/get, the *_nowait errors,
// task_done/join, shutdown (3.13), move-only items, and the cancellation promises (a cancelled
// getter takes nothing, a cancelled putter inserts nothing, no wake-up is lost), checked over
// 10,000 seeded random schedules. Every loop runs on virtual time.
#include "asyncio/queue.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/debug.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "asyncio/timeout.hpp"
#include "test_support.hpp"

// ---- allocation counting (to show that waiting allocates nothing) ----
namespace {
std::int64_t g_allocations = 0;
}  // namespace

// The replacements pair malloc with free; GCC cannot see that and warns where they inline.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
    ++g_allocations;
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using asyncio::CancelledError;
using asyncio::Coroutine;
using asyncio::LifoQueue;
using asyncio::PriorityQueue;
using asyncio::Queue;
using asyncio::QueueEmpty;
using asyncio::QueueFull;
using asyncio::QueueShutDown;
using asyncio::Task;
using asyncio_test::Counted;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class AQueue : public asyncio_test::LeakChecked {};
class QueueBlocking : public asyncio_test::LeakChecked {};
class QueueJoin : public asyncio_test::LeakChecked {};
class QueueShutdown : public asyncio_test::LeakChecked {};
class QueueCancellation : public asyncio_test::LeakChecked {};
class QueueRandomSchedules : public asyncio_test::LeakChecked {};

/// asyncio::run on virtual time. A deadlock fails as a TimeoutError after an hour of virtual time
/// (an instant) instead of hanging the test.
template <class T>
Coroutine<T> with_watchdog(Coroutine<T> main) {
    co_return co_await asyncio::wait_for(std::move(main), 1h);
}
template <class T>
T run_virtual(Coroutine<T> main) {
    return asyncio::run(with_watchdog(std::move(main)), virtual_time());
}

using asyncio_test::elapsed;

/// Lets the loop run `n` iterations.
Coroutine<> ticks(int n) {
    for (int i = 0; i < n; ++i) co_await asyncio::sleep(0s);
}

template <class Q>
Coroutine<int> get_one(Q& q) {
    co_return co_await q.get();
}

template <class Q>
Coroutine<> put_one(Q& q, int v) {
    co_await q.put(v);
}

/// Gets one item and logs it.
Coroutine<> get_into(Queue<int>& q, std::vector<int>& log) { log.push_back(co_await q.get()); }

/// Puts one item and logs that it went in.
Coroutine<> put_logged(Queue<int>& q, int v, std::vector<int>& log) {
    co_await q.put(v);
    log.push_back(v);
}

// ---------------------------------------------------------------------------------------------
// Basics: sizes, order, the *_nowait errors

TEST_F(AQueue, ReportsItsSizeAndBounds) {
    Queue<int> unbounded;
    EXPECT_EQ(unbounded.maxsize(), 0u);
    EXPECT_TRUE(unbounded.empty());
    EXPECT_FALSE(unbounded.full());
    for (int i = 0; i < 1000; ++i) unbounded.put_nowait(i);
    EXPECT_EQ(unbounded.qsize(), 1000u);
    EXPECT_FALSE(unbounded.full());  // an unbounded queue is never full

    Queue<int> q(2);
    EXPECT_EQ(q.maxsize(), 2u);
    q.put_nowait(1);
    EXPECT_FALSE(q.empty());
    EXPECT_FALSE(q.full());
    q.put_nowait(2);
    EXPECT_TRUE(q.full());
    EXPECT_EQ(q.qsize(), 2u);
    EXPECT_FALSE(q.is_shutdown());
}

TEST_F(AQueue, CanBeAnAggregateMemberInitializedWithBraces) {
    struct Channels {
        Queue<int> jobs;
        PriorityQueue<int> urgent;
        LifoQueue<int> stack;
    };
    Channels c{};
    c.jobs.put_nowait(1);
    c.urgent.put_nowait(2);
    c.stack.put_nowait(3);
    EXPECT_EQ(c.jobs.qsize() + c.urgent.qsize() + c.stack.qsize(), 3u);
    EXPECT_EQ(c.jobs.maxsize(), 0u);
}

TEST_F(AQueue, IsFirstInFirstOut) {
    Queue<int> q;
    for (int i : {3, 1, 4, 1, 5, 9, 2, 6}) q.put_nowait(i);
    std::vector<int> out;
    while (!q.empty()) out.push_back(q.get_nowait());
    EXPECT_EQ(out, (std::vector<int>{3, 1, 4, 1, 5, 9, 2, 6}));
}

TEST_F(AQueue, KeepsFifoOrderWhileItsRingBufferWrapsAndGrows) {
    Queue<int> q;
    int next_in = 0, next_out = 0;
    std::mt19937 rng(7);
    for (int round = 0; round < 2000; ++round) {
        const int puts = static_cast<int>(rng() % 40), gets = static_cast<int>(rng() % 40);
        for (int i = 0; i < puts; ++i) q.put_nowait(next_in++);
        for (int i = 0; i < gets && !q.empty(); ++i) ASSERT_EQ(q.get_nowait(), next_out++);
        ASSERT_EQ(q.qsize(), static_cast<std::size_t>(next_in - next_out));
    }
}

TEST_F(AQueue, LifoQueueIsLastInFirstOut) {
    LifoQueue<int> q;
    for (int i : {1, 2, 3, 4}) q.put_nowait(i);
    std::vector<int> out;
    while (!q.empty()) out.push_back(q.get_nowait());
    EXPECT_EQ(out, (std::vector<int>{4, 3, 2, 1}));
}

TEST_F(AQueue, PriorityQueueGivesTheSmallestFirstAsHeapq) {
    PriorityQueue<int> q;
    for (int i : {5, 1, 4, 1, 9, 2, 6, 5, 3}) q.put_nowait(i);
    std::vector<int> out;
    while (!q.empty()) out.push_back(q.get_nowait());
    EXPECT_EQ(out, (std::vector<int>{1, 1, 2, 3, 4, 5, 5, 6, 9}));

    PriorityQueue<std::pair<int, std::string>> jobs;  // (priority, data), as Python's tuples
    jobs.put_nowait({2, "write"});
    jobs.put_nowait({0, "read"});
    jobs.put_nowait({1, "parse"});
    EXPECT_EQ(jobs.get_nowait().second, "read");
    EXPECT_EQ(jobs.get_nowait().second, "parse");
    EXPECT_EQ(jobs.get_nowait().second, "write");
}

TEST_F(AQueue, PriorityQueueTakesACompare) {
    PriorityQueue<int, std::greater<int>> largest_first;
    for (int i : {5, 1, 4, 9, 2}) largest_first.put_nowait(i);
    std::vector<int> out;
    while (!largest_first.empty()) out.push_back(largest_first.get_nowait());
    EXPECT_EQ(out, (std::vector<int>{9, 5, 4, 2, 1}));

    auto by_abs = [](int a, int b) { return std::abs(a) < std::abs(b); };
    PriorityQueue<int, decltype(by_abs)> q(0, by_abs);
    for (int i : {-3, 2, -1}) q.put_nowait(i);
    EXPECT_EQ(q.get_nowait(), -1);
    EXPECT_EQ(q.get_nowait(), 2);
    EXPECT_EQ(q.get_nowait(), -3);
}

TEST_F(AQueue, PutNowaitOnAFullQueueRaisesQueueFullAndLeavesTheItem) {
    Queue<std::unique_ptr<int>> q(1);
    q.put_nowait(std::make_unique<int>(1));
    auto item = std::make_unique<int>(2);
    EXPECT_THROW(q.put_nowait(std::move(item)), QueueFull);
    ASSERT_NE(item, nullptr);  // NOLINT(bugprone-use-after-move): not taken on failure
    EXPECT_EQ(*item, 2);
    EXPECT_EQ(q.qsize(), 1u);
}

TEST_F(AQueue, GetNowaitOnAnEmptyQueueRaisesQueueEmpty) {
    Queue<int> q;
    EXPECT_THROW(q.get_nowait(), QueueEmpty);
    q.put_nowait(1);
    EXPECT_EQ(q.get_nowait(), 1);
    EXPECT_THROW(q.get_nowait(), QueueEmpty);
}

TEST_F(AQueue, MovesMoveOnlyItemsThroughEveryKindOfQueue) {
    auto main = []() -> Coroutine<> {
        Queue<std::unique_ptr<int>> fifo(2);
        co_await fifo.put(std::make_unique<int>(1));
        fifo.put_nowait(std::make_unique<int>(2));
        std::unique_ptr<int> a = co_await fifo.get();
        std::unique_ptr<int> b = fifo.get_nowait();
        EXPECT_EQ(*a, 1);
        EXPECT_EQ(*b, 2);

        LifoQueue<std::unique_ptr<int>> lifo;
        co_await lifo.put(std::make_unique<int>(1));
        co_await lifo.put(std::make_unique<int>(2));
        EXPECT_EQ(*co_await lifo.get(), 2);
        EXPECT_EQ(*lifo.get_nowait(), 1);

        auto by_value = [](const std::unique_ptr<int>& x, const std::unique_ptr<int>& y) {
            return *x < *y;
        };
        PriorityQueue<std::unique_ptr<int>, decltype(by_value)> prio(0, by_value);
        for (int i : {3, 1, 2}) co_await prio.put(std::make_unique<int>(i));
        EXPECT_EQ(*co_await prio.get(), 1);
        EXPECT_EQ(*co_await prio.get(), 2);
        EXPECT_EQ(*prio.get_nowait(), 3);
    };
    run_virtual(main());
}

TEST_F(AQueue, DestroysTheItemsItStillHolds) {
    {
        Queue<Counted> fifo;
        LifoQueue<Counted> lifo;
        PriorityQueue<int> prio;
        for (int i = 0; i < 100; ++i) {
            fifo.put_nowait(Counted(i));
            lifo.put_nowait(Counted(i));
        }
        for (int i = 0; i < 50; ++i) EXPECT_EQ(fifo.get_nowait().value(), i);
        EXPECT_EQ(Counted::live(), 150);
    }
    EXPECT_EQ(Counted::live(), 0);
}

TEST_F(AQueue, GivesABurstsMemoryBackAndStillWorks) {
    Queue<Counted> q;
    for (int round = 0; round < 3; ++round) {
        for (int i = 0; i < 5000; ++i) q.put_nowait(Counted(i));
        for (int i = 0; i < 5000; ++i) ASSERT_EQ(q.get_nowait().value(), i);
        EXPECT_EQ(Counted::live(), 0);
    }
}

TEST_F(AQueue, GetOnANonEmptyQueueDoesNotSuspend) {
    auto main = []() -> Coroutine<> {
        Queue<int> q(1);
        q.put_nowait(7);
        bool other_ran = false;
        asyncio::get_running_loop().call_soon([&] { other_ran = true; });
        EXPECT_EQ(co_await q.get(), 7);
        co_await q.put(8);  // not full: no suspension either
        EXPECT_EQ(co_await q.get(), 8);
        EXPECT_FALSE(other_ran);  // no loop iteration happened in between
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(other_ran);
    };
    run_virtual(main());
}

TEST_F(AQueue, AMillionGetsOfAFilledQueueInOneTaskRunInConstantStack) {
    constexpr int kN = 1'000'000;
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        for (int i = 0; i < kN; ++i) co_await q.put(i);
        std::int64_t sum = 0;
        for (int i = 0; i < kN; ++i) sum += co_await q.get();
        EXPECT_EQ(sum, std::int64_t{kN} * (kN - 1) / 2);
        EXPECT_TRUE(q.empty());
    };
    run_virtual(main());
}

asyncio_test::Eager get_outside_a_task(std::exception_ptr&, Queue<int>& q, int& got) {
    got = co_await q.get();
}

TEST_F(AQueue, AwaitedOutsideATaskRaisesRuntimeErrorWhenItMustWait) {
    Queue<int> q;
    std::exception_ptr error;
    int got = 0;
    get_outside_a_task(error, q, got);
    ASSERT_NE(error, nullptr);
    EXPECT_THROW(std::rethrow_exception(error), asyncio::RuntimeError);
    // Without waiting, it works anywhere.
    q.put_nowait(3);
    error = nullptr;
    get_outside_a_task(error, q, got);
    EXPECT_EQ(error, nullptr);
    EXPECT_EQ(got, 3);
}

// ---------------------------------------------------------------------------------------------
// Blocking put and get

TEST_F(QueueBlocking, GetWaitsForAnItem) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        Task<int> getter = asyncio::create_task(get_one(q));
        co_await asyncio::sleep(1s);
        EXPECT_FALSE(getter.done());
        q.put_nowait(42);
        EXPECT_EQ(co_await getter, 42);
        EXPECT_EQ(elapsed(), 1s);
        EXPECT_TRUE(q.empty());
    };
    run_virtual(main());
}

TEST_F(QueueBlocking, AWokenGetterRunsThroughTheReadyQueue) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        std::vector<int> log;
        Task<> getter = asyncio::create_task(get_into(q, log));
        co_await asyncio::sleep(0s);
        q.put_nowait(1);
        EXPECT_TRUE(log.empty());  // woken, not run inside put_nowait
        EXPECT_EQ(q.qsize(), 1u);  // and the item is still in the queue until it runs
        co_await getter;
        EXPECT_EQ(log, (std::vector<int>{1}));
    };
    run_virtual(main());
}

TEST_F(QueueBlocking, GettersAreServedInTheOrderTheyStartedWaiting) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        std::vector<Task<int>> getters;
        for (int i = 0; i < 5; ++i) {
            getters.push_back(asyncio::create_task(get_one(q)));
            co_await asyncio::sleep(0s);
        }
        for (int i = 0; i < 5; ++i) q.put_nowait(i * 10);
        for (int i = 0; i < 5; ++i) EXPECT_EQ(co_await getters[static_cast<std::size_t>(i)], i * 10);
    };
    run_virtual(main());
}

TEST_F(QueueBlocking, PutWaitsForAFreeSlot) {
    auto main = []() -> Coroutine<> {
        Queue<int> q(1);
        co_await q.put(1);
        Task<> putter = asyncio::create_task(put_one(q, 2));
        co_await asyncio::sleep(1s);
        EXPECT_FALSE(putter.done());
        EXPECT_EQ(q.qsize(), 1u);
        EXPECT_EQ(co_await q.get(), 1);
        co_await putter;
        EXPECT_EQ(elapsed(), 1s);
        EXPECT_EQ(q.get_nowait(), 2);
    };
    run_virtual(main());
}

TEST_F(QueueBlocking, PuttersGetFreeSlotsInTheOrderTheyStartedWaiting) {
    auto main = []() -> Coroutine<> {
        Queue<int> q(1);
        q.put_nowait(0);
        std::vector<int> inserted;
        std::vector<Task<>> putters;
        for (int i = 1; i <= 4; ++i) {
            putters.push_back(asyncio::create_task(put_logged(q, i, inserted)));
            co_await asyncio::sleep(0s);
        }
        std::vector<int> got;
        for (int i = 0; i < 5; ++i) got.push_back(co_await q.get());
        EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4}));
        EXPECT_EQ(inserted, (std::vector<int>{1, 2, 3, 4}));
        for (auto& p : putters) co_await p;
    };
    run_virtual(main());
}

TEST_F(QueueBlocking, ProducersAndConsumersHandOffEveryItemOnce) {
    auto main = []() -> Coroutine<> {
        Queue<int> q(3);
        std::vector<int> got;
        auto producer = [&](int base) -> Coroutine<> {
            for (int i = 0; i < 100; ++i) {
                co_await q.put(base + i);
                if (i % 7 == 0) co_await asyncio::sleep(1ms);
            }
        };
        auto consumer = [&]() -> Coroutine<> {
            for (;;) {
                got.push_back(co_await q.get());
                q.task_done();
                if (got.size() % 5 == 0) co_await asyncio::sleep(2ms);
            }
        };
        std::vector<Task<>> consumers;
        for (int i = 0; i < 3; ++i) consumers.push_back(asyncio::create_task(consumer()));
        co_await asyncio::gather(producer(0), producer(1000), producer(2000));
        co_await q.join();
        EXPECT_TRUE(q.empty());
        for (auto& c : consumers) c.cancel();
        co_await asyncio::gather(asyncio::return_exceptions, std::move(consumers));
        std::multiset<int> all(got.begin(), got.end());
        EXPECT_EQ(all.size(), 300u);
        EXPECT_EQ(std::set<int>(got.begin(), got.end()).size(), 300u);
    };
    run_virtual(main());
}

TEST_F(QueueBlocking, AWokenGetterWhoseItemWasTakenWaitsAgainAtTheBack) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        Task<int> g1 = asyncio::create_task(get_one(q));
        Task<int> g2 = asyncio::create_task(get_one(q));
        Task<int> g3 = asyncio::create_task(get_one(q));
        co_await asyncio::sleep(0s);
        q.put_nowait(0);                // wakes g1 ...
        EXPECT_EQ(q.get_nowait(), 0);   // ... but someone else takes the item first
        co_await asyncio::sleep(0s);    // g1 finds the queue empty and queues up again, last
        EXPECT_FALSE(g1.done());
        q.put_nowait(1);
        q.put_nowait(2);
        q.put_nowait(3);
        EXPECT_EQ(co_await g2, 1);
        EXPECT_EQ(co_await g3, 2);
        EXPECT_EQ(co_await g1, 3);
    };
    run_virtual(main());
}

TEST_F(QueueBlocking, WaitingAllocatesNothing) {
    auto main = []() -> Coroutine<> {
        Queue<int> ping, pong(1);
        constexpr int kRounds = 1000;
        auto echo = [&]() -> Coroutine<> {
            for (int i = 0; i < 2 * kRounds; ++i) co_await pong.put(co_await ping.get() + 1);
        };
        Task<> t = asyncio::create_task(echo());
        for (int i = 0; i < kRounds; ++i) {  // warm up: the rings and the ready queue grow
            co_await ping.put(i);
            EXPECT_EQ(co_await pong.get(), i + 1);
        }
        const std::int64_t before = g_allocations;
        for (int i = 0; i < kRounds; ++i) {
            co_await ping.put(i);
            EXPECT_EQ(co_await pong.get(), i + 1);
        }
        EXPECT_EQ(g_allocations - before, 0);
        co_await t;
    };
    run_virtual(main());
}

// ---------------------------------------------------------------------------------------------
// task_done and join

TEST_F(QueueJoin, ReturnsAtOnceWhenNothingIsUnfinished) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        bool other_ran = false;
        asyncio::get_running_loop().call_soon([&] { other_ran = true; });
        co_await q.join();
        q.put_nowait(1);
        (void)q.get_nowait();
        q.task_done();
        co_await q.join();
        EXPECT_FALSE(other_ran);
    };
    run_virtual(main());
}

TEST_F(QueueJoin, WaitsUntilEveryPutItemIsMarkedDone) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        for (int i = 0; i < 3; ++i) q.put_nowait(i);
        std::vector<std::string> log;
        auto joiner = [&](std::string name) -> Coroutine<> {
            co_await q.join();
            log.push_back(name);
        };
        Task<> j1 = asyncio::create_task(joiner("j1"));
        Task<> j2 = asyncio::create_task(joiner("j2"));
        co_await asyncio::sleep(1s);
        for (int i = 0; i < 3; ++i) (void)q.get_nowait();
        co_await asyncio::sleep(1s);
        EXPECT_TRUE(log.empty());  // gotten is not done
        q.task_done();
        q.task_done();
        co_await asyncio::sleep(1s);
        EXPECT_TRUE(log.empty());
        q.task_done();
        co_await j1;
        co_await j2;
        EXPECT_EQ(log, (std::vector<std::string>{"j1", "j2"}));
        EXPECT_EQ(elapsed(), 3s);
    };
    run_virtual(main());
}

TEST_F(QueueJoin, TooManyTaskDoneCallsRaiseValueError) {
    Queue<int> q;
    try {
        q.task_done();
        ADD_FAILURE() << "no ValueError";
    } catch (const asyncio::ValueError& e) {
        EXPECT_STREQ(e.what(), "task_done() called too many times");
    }
    q.put_nowait(1);
    q.task_done();  // allowed before the item is even gotten, as in Python
    EXPECT_THROW(q.task_done(), asyncio::ValueError);
}

TEST_F(QueueJoin, AJoinerReleasedReturnsEvenIfNewItemsArriveBeforeItRuns) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        q.put_nowait(1);
        Task<> j = asyncio::create_task([](Queue<int>& q) -> Coroutine<> { co_await q.join(); }(q));
        co_await asyncio::sleep(0s);
        (void)q.get_nowait();
        q.task_done();    // releases the joiner (Python sets an Event) ...
        q.put_nowait(2);  // ... which returns although an item is unfinished again
        co_await j;
        EXPECT_EQ(q.qsize(), 1u);
    };
    run_virtual(main());
}

TEST_F(QueueJoin, ACancelledJoinerRaisesAndTheOthersStillWait) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        q.put_nowait(1);
        auto joiner = [&]() -> Coroutine<> { co_await q.join(); };
        Task<> j1 = asyncio::create_task(joiner());
        Task<> j2 = asyncio::create_task(joiner());
        co_await asyncio::sleep(1s);
        j1.cancel();
        EXPECT_THROW(co_await j1, CancelledError);
        EXPECT_FALSE(j2.done());
        (void)q.get_nowait();
        q.task_done();
        co_await j2;
    };
    run_virtual(main());
}

// ---------------------------------------------------------------------------------------------
// shutdown (Python 3.13)

TEST_F(QueueShutdown, PutRaisesQueueShutDownAfterwards) {
    auto main = []() -> Coroutine<> {
        Queue<int> q(5);
        q.put_nowait(1);
        q.shutdown();
        EXPECT_TRUE(q.is_shutdown());
        EXPECT_THROW(q.put_nowait(2), QueueShutDown);
        EXPECT_THROW(co_await q.put(2), QueueShutDown);
        EXPECT_EQ(q.qsize(), 1u);
    };
    run_virtual(main());
}

TEST_F(QueueShutdown, GetDrainsWhatIsLeftThenRaisesQueueShutDown) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        q.put_nowait(1);
        q.put_nowait(2);
        q.shutdown();
        EXPECT_EQ(co_await q.get(), 1);
        EXPECT_EQ(q.get_nowait(), 2);
        EXPECT_THROW(co_await q.get(), QueueShutDown);
        EXPECT_THROW(q.get_nowait(), QueueShutDown);
    };
    run_virtual(main());
}

TEST_F(QueueShutdown, WakesBlockedGettersWhichRaiseQueueShutDown) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        Task<int> g1 = asyncio::create_task(get_one(q));
        Task<int> g2 = asyncio::create_task(get_one(q));
        co_await asyncio::sleep(1s);
        q.shutdown();
        EXPECT_THROW(co_await g1, QueueShutDown);
        EXPECT_THROW(co_await g2, QueueShutDown);
        EXPECT_EQ(elapsed(), 1s);
    };
    run_virtual(main());
}

TEST_F(QueueShutdown, WokenGettersStillTakeTheItemsLeft) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        Task<int> g1 = asyncio::create_task(get_one(q));
        Task<int> g2 = asyncio::create_task(get_one(q));
        co_await asyncio::sleep(0s);
        q.put_nowait(5);  // wakes g1
        q.shutdown();     // wakes g2 too
        EXPECT_EQ(co_await g1, 5);
        EXPECT_THROW(co_await g2, QueueShutDown);
    };
    run_virtual(main());
}

TEST_F(QueueShutdown, WakesBlockedPuttersWhichRaiseWithoutInserting) {
    auto main = []() -> Coroutine<> {
        Queue<Counted> q(1);
        q.put_nowait(Counted(0));
        auto putter = [&](int v) -> Coroutine<> { co_await q.put(Counted(v)); };
        Task<> p1 = asyncio::create_task(putter(1));
        Task<> p2 = asyncio::create_task(putter(2));
        co_await asyncio::sleep(1s);
        q.shutdown();
        (void)q.get_nowait();  // a free slot now: they must still not insert
        EXPECT_THROW(co_await p1, QueueShutDown);
        EXPECT_THROW(co_await p2, QueueShutDown);
        EXPECT_TRUE(q.empty());
        EXPECT_EQ(Counted::live(), 0);
    };
    run_virtual(main());
}

TEST_F(QueueShutdown, ANormalShutdownLeavesJoinWaitingForTaskDone) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        q.put_nowait(1);
        Task<> j = asyncio::create_task([](Queue<int>& q) -> Coroutine<> { co_await q.join(); }(q));
        co_await asyncio::sleep(0s);
        q.shutdown();
        co_await asyncio::sleep(1s);
        EXPECT_FALSE(j.done());
        EXPECT_EQ(co_await q.get(), 1);
        q.task_done();
        co_await j;
    };
    run_virtual(main());
}

TEST_F(QueueShutdown, ImmediateDropsTheItemsAndCountsThemDone) {
    auto main = []() -> Coroutine<> {
        Queue<Counted> q;
        for (int i = 0; i < 3; ++i) q.put_nowait(Counted(i));
        (void)q.get_nowait();  // gotten, not done: join must still wait for it
        Task<> j = asyncio::create_task([](Queue<Counted>& q) -> Coroutine<> { co_await q.join(); }(q));
        Task<int> g = asyncio::create_task([](Queue<Counted>& q) -> Coroutine<int> {
            co_await q.join();
            co_return (co_await q.get()).value();
        }(q));
        co_await asyncio::sleep(1s);
        q.shutdown(true);
        EXPECT_TRUE(q.empty());
        EXPECT_EQ(Counted::live(), 0);  // the two left were destroyed
        co_await asyncio::sleep(1s);
        EXPECT_FALSE(j.done());  // one unfinished item remains
        q.task_done();
        co_await j;
        EXPECT_THROW(co_await g, QueueShutDown);
        EXPECT_THROW(q.task_done(), asyncio::ValueError);
    };
    run_virtual(main());
}

TEST_F(QueueShutdown, ImmediateReleasesJoinWhenEveryUnfinishedItemWasDropped) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        for (int i = 0; i < 3; ++i) q.put_nowait(i);
        Task<> j = asyncio::create_task([](Queue<int>& q) -> Coroutine<> { co_await q.join(); }(q));
        Task<int> g = asyncio::create_task([](Queue<int>& q) -> Coroutine<int> {
            co_await asyncio::sleep(2s);
            co_return co_await q.get();
        }(q));
        co_await asyncio::sleep(1s);
        q.shutdown(true);
        co_await j;
        EXPECT_EQ(elapsed(), 1s);
        EXPECT_THROW(co_await g, QueueShutDown);
    };
    run_virtual(main());
}

TEST_F(QueueShutdown, ImmediateWakesBlockedGettersAndPutters) {
    auto main = []() -> Coroutine<> {
        Queue<int> empty;
        Queue<int> full(1);
        full.put_nowait(0);
        Task<int> g = asyncio::create_task(get_one(empty));
        Task<> p = asyncio::create_task(put_one(full, 1));
        co_await asyncio::sleep(1s);
        empty.shutdown(true);
        full.shutdown(true);
        EXPECT_TRUE(full.empty());
        EXPECT_THROW(co_await g, QueueShutDown);
        EXPECT_THROW(co_await p, QueueShutDown);
        EXPECT_TRUE(full.empty());
    };
    run_virtual(main());
}

TEST_F(QueueShutdown, IsIdempotentAndAnImmediateOneAfterANormalOneStillDrains) {
    Queue<int> q;
    for (int i = 0; i < 3; ++i) q.put_nowait(i);
    EXPECT_EQ(q.get_nowait(), 0);  // three unfinished
    q.shutdown();
    q.shutdown();
    EXPECT_EQ(q.qsize(), 2u);
    q.shutdown(true);
    EXPECT_EQ(q.qsize(), 0u);
    q.task_done();  // the two dropped were counted done: one unfinished is left
    EXPECT_THROW(q.task_done(), asyncio::ValueError);
}

// ---------------------------------------------------------------------------------------------
// Cancellation

TEST_F(QueueCancellation, AGetterCancelledAfterBeingWokenLeavesTheItemInTheQueue) {
    // bpo-23812 / python/cpython#108042: put_nowait wakes the getter, which is cancelled in the
    // same iteration, before it runs. The item must not go down with it.
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        Task<int> g = asyncio::create_task(get_one(q));
        co_await asyncio::sleep(0s);
        q.put_nowait(42);
        g.cancel();
        EXPECT_EQ(q.get_nowait(), 42);  // still there, right away
        EXPECT_THROW(co_await g, CancelledError);
        EXPECT_TRUE(q.empty());
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, AGetterCancelledAfterBeingWokenForAnItemAlreadyTakenWakesNobody) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        Task<int> g1 = asyncio::create_task(get_one(q));
        Task<int> g2 = asyncio::create_task(get_one(q));
        co_await asyncio::sleep(0s);
        q.put_nowait(1);
        g1.cancel();
        EXPECT_EQ(q.get_nowait(), 1);
        EXPECT_THROW(co_await g1, CancelledError);
        co_await ticks(3);
        EXPECT_FALSE(g2.done());  // still waiting, still first in line
        q.put_nowait(2);
        EXPECT_EQ(co_await g2, 2);
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, AWokenGetterThatCatchesTheCancellationCanGetAgain) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        auto defiant = [&]() -> Coroutine<int> {
            try {
                co_return co_await q.get();
            } catch (const CancelledError&) {
                asyncio::current_task().uncancel();
            }
            co_return co_await q.get() + 100;
        };
        Task<int> g = asyncio::create_task(defiant());
        co_await asyncio::sleep(0s);
        q.put_nowait(1);
        g.cancel();
        EXPECT_EQ(co_await g, 101);  // the item was still there for its second get()
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, APendingCancellationIsRaisedByAGetThatMustWaitWithoutTakingAnything) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        auto self_cancelling = [&]() -> Coroutine<int> {
            asyncio::current_task().cancel();
            co_return co_await q.get();
        };
        Task<int> g = asyncio::create_task(self_cancelling());
        EXPECT_THROW(co_await g, CancelledError);
        q.put_nowait(1);
        co_await asyncio::sleep(0s);
        EXPECT_EQ(q.qsize(), 1u);  // it never registered as a getter
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, AGetThatNeedNotWaitIsNotACancellationPoint) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        q.put_nowait(5);
        int got = 0;
        auto self_cancelling = [&]() -> Coroutine<> {
            asyncio::current_task().cancel();
            got = co_await q.get();      // as Python: no suspension, no CancelledError here
            co_await asyncio::sleep(0s);  // raised at the next suspension
            got = -1;
        };
        Task<> t = asyncio::create_task(self_cancelling());
        EXPECT_THROW(co_await t, CancelledError);
        EXPECT_EQ(got, 5);
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, ACancelledPutterNeverInsertsItsItem) {
    auto main = []() -> Coroutine<> {
        Queue<Counted> q(1);
        q.put_nowait(Counted(0));
        auto putter = [&](int v) -> Coroutine<> { co_await q.put(Counted(v)); };
        Task<> p1 = asyncio::create_task(putter(1));
        co_await asyncio::sleep(1s);
        p1.cancel();
        EXPECT_THROW(co_await p1, CancelledError);
        EXPECT_EQ(q.get_nowait().value(), 0);
        co_await ticks(3);
        EXPECT_TRUE(q.empty());
        EXPECT_EQ(Counted::live(), 0);  // the item went down with the putter
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, APutterCancelledAfterBeingWokenPassesItsSlotToTheNextPutter) {
    auto main = []() -> Coroutine<> {
        Queue<Counted> q(1);
        q.put_nowait(Counted(0));
        auto putter = [&](int v) -> Coroutine<> { co_await q.put(Counted(v)); };
        Task<> p1 = asyncio::create_task(putter(1));
        Task<> p2 = asyncio::create_task(putter(2));
        co_await asyncio::sleep(1s);
        EXPECT_EQ(q.get_nowait().value(), 0);  // frees the slot: wakes p1
        p1.cancel();                           // before p1 runs
        EXPECT_THROW(co_await p1, CancelledError);
        co_await p2;
        EXPECT_EQ(q.qsize(), 1u);
        EXPECT_EQ(q.get_nowait().value(), 2);  // p1's item never went in
        EXPECT_EQ(Counted::live(), 0);
        EXPECT_EQ(elapsed(), 1s);
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, APendingCancellationIsRaisedByAPutThatMustWaitWithoutInserting) {
    auto main = []() -> Coroutine<> {
        Queue<int> q(1);
        q.put_nowait(0);
        auto self_cancelling = [&]() -> Coroutine<> {
            asyncio::current_task().cancel();
            co_await q.put(1);
        };
        Task<> p = asyncio::create_task(self_cancelling());
        EXPECT_THROW(co_await p, CancelledError);
        EXPECT_EQ(q.get_nowait(), 0);
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(q.empty());
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, GetUnderWaitForTimesOutWithoutTakingAnything) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        EXPECT_THROW(co_await asyncio::wait_for(get_one(q), 1s), asyncio::TimeoutError);
        EXPECT_EQ(elapsed(), 1s);
        q.put_nowait(1);
        co_await asyncio::sleep(0s);
        EXPECT_EQ(q.qsize(), 1u);
        EXPECT_EQ(co_await asyncio::wait_for(get_one(q), 1s), 1);
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, ATaskLeftWaitingOnADestroyedQueueIsCancelledCleanlyByRun) {
    // main's queue dies with main's frame; asyncio::run() then cancels the leftover waiters.
    auto main = []() -> Coroutine<> {
        Queue<int> q(1);
        asyncio::create_task(get_one(q));    // waits in get()
        Queue<int> full(1);
        full.put_nowait(0);
        asyncio::create_task(put_one(full, 1));  // waits in put()
        co_await asyncio::sleep(0s);
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, AWokenTaskWhoseQueueWasDestroyedIsCancelledCleanlyByRun) {
    auto main = []() -> Coroutine<> {
        Queue<int> q;
        asyncio::create_task(get_one(q));
        co_await asyncio::sleep(0s);
        q.put_nowait(1);  // wakes the getter; main returns before it runs
    };
    run_virtual(main());
}

TEST_F(QueueCancellation, AWaiterWhoseFrameIsDestroyedByLoopCloseLeavesTheQueueUsable) {
    Queue<int> q;  // outlives the loop
    Queue<int> full(1);
    full.put_nowait(0);
    asyncio_test::Reports reports;
    {
        asyncio::EventLoop loop(virtual_time());
        reports.install(loop);
        Task<int> g = loop.create_task(get_one(q));
        Task<> p = loop.create_task(put_one(full, 1));
        loop.run_until_complete(ticks(2));
        g = Task<int>();
        p = Task<>();
        loop.close();  // destroys the pending frames, and the awaiters in them
    }
    EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), 2u);
    q.put_nowait(1);  // must not touch the destroyed waiter
    EXPECT_EQ(q.get_nowait(), 1);
    EXPECT_EQ(full.get_nowait(), 0);
    full.shutdown(true);
}

TEST_F(QueueCancellation, ReleasesEveryFrame) {
    const std::int64_t frames = asyncio::debug::live_frames();
    auto main = []() -> Coroutine<> {
        Queue<Counted> q(1);
        std::vector<Task<>> tasks;
        auto getter = [&]() -> Coroutine<> { (void)co_await q.get(); };
        auto putter = [&](int v) -> Coroutine<> { co_await q.put(Counted(v)); };
        auto joiner = [&]() -> Coroutine<> { co_await q.join(); };
        for (int i = 0; i < 10; ++i) tasks.push_back(asyncio::create_task(getter()));
        co_await asyncio::sleep(0s);
        q.put_nowait(Counted(0));
        for (int i = 0; i < 10; ++i) tasks.push_back(asyncio::create_task(putter(i)));
        for (int i = 0; i < 10; ++i) tasks.push_back(asyncio::create_task(joiner()));
        co_await asyncio::sleep(0s);
        for (auto& t : tasks) t.cancel();
        co_await asyncio::gather(asyncio::return_exceptions, tasks);
    };
    run_virtual(main());
    EXPECT_EQ(asyncio::debug::live_frames(), frames);
}

// ---------------------------------------------------------------------------------------------
// Random schedules of put/get/cancel/timeout

/// One seeded run: producers and consumers doing random put/put_nowait/get/get_nowait with random
/// timeouts, a chaos task cancelling them at random, on a queue of random size. Returns "" or the
/// first broken promise.
std::string run_schedule(std::uint32_t seed) {
    struct World {
        std::mt19937 rng;
        Queue<int> q;
        std::set<int> inserted;      // went into the queue (put returned, put_nowait succeeded)
        std::multiset<int> removed;  // came out (get returned, get_nowait succeeded)
        std::vector<Task<>> workers;
        int consumers_in_get = 0;
        int producers_in_put = 0;
        bool stop = false;
        std::string error;
        World(std::uint32_t seed, std::size_t maxsize) : rng(seed), q(maxsize) {}
        int rand(int n) { return static_cast<int>(rng() % static_cast<std::uint32_t>(n)); }
        void fail(const std::string& what) {
            if (error.empty()) error = what;
        }
    };
    std::mt19937 pick(seed);
    World w(seed, pick() % 4);  // maxsize 0 (unbounded) to 3

    // A timeout, as wait_for does it: cancel the task when the deadline passes (whole ms only,
    // so that the checker's half-ms wake-ups always find the loop at rest).
    auto with_timeout = [](World& w) -> asyncio::TimerHandle {
        Task<> self = asyncio::current_task();
        return asyncio::get_running_loop().call_later(std::chrono::milliseconds(1 + w.rand(4)),
                                                      [self]() mutable { self.cancel(); });
    };
    auto producer = [&with_timeout](World& w, int id) -> Coroutine<> {
        for (int seq = 0; !w.stop; ++seq) {
            const int item = id * 1'000'000 + seq;
            const int op = w.rand(10);
            try {
                if (op < 5) {
                    std::optional<asyncio::TimerHandle> timer;
                    if (w.rand(2) == 0) timer = with_timeout(w);
                    ++w.producers_in_put;
                    try {
                        co_await w.q.put(item);
                    } catch (...) {
                        --w.producers_in_put;
                        if (timer) timer->cancel();
                        throw;
                    }
                    --w.producers_in_put;
                    if (timer) timer->cancel();
                    w.inserted.insert(item);
                } else if (op < 7) {
                    // Mostly look before leaping: exceptions are slow under ASan.
                    if (w.q.full() && w.rand(8) != 0) continue;
                    try {
                        w.q.put_nowait(item);
                        w.inserted.insert(item);
                    } catch (const QueueFull&) {
                        if (!w.q.full()) w.fail("QueueFull from a queue that is not full");
                    }
                } else {
                    co_await asyncio::sleep(std::chrono::milliseconds(w.rand(3)));
                }
            } catch (const CancelledError&) {
                asyncio::current_task().uncancel();
                if (w.stop) co_return;
            }
        }
    };
    auto consumer = [&with_timeout](World& w) -> Coroutine<> {
        while (!w.stop) {
            const int op = w.rand(10);
            try {
                if (op < 5) {
                    std::optional<asyncio::TimerHandle> timer;
                    if (w.rand(2) == 0) timer = with_timeout(w);
                    ++w.consumers_in_get;
                    int item;
                    try {
                        item = co_await w.q.get();
                    } catch (...) {
                        --w.consumers_in_get;
                        if (timer) timer->cancel();
                        throw;
                    }
                    --w.consumers_in_get;
                    if (timer) timer->cancel();
                    w.removed.insert(item);
                    w.q.task_done();
                } else if (op < 7) {
                    if (w.q.empty() && w.rand(8) != 0) continue;
                    try {
                        w.removed.insert(w.q.get_nowait());
                        w.q.task_done();
                    } catch (const QueueEmpty&) {
                        if (!w.q.empty()) w.fail("QueueEmpty from a queue that is not empty");
                    }
                } else {
                    co_await asyncio::sleep(std::chrono::milliseconds(w.rand(3)));
                }
            } catch (const CancelledError&) {
                asyncio::current_task().uncancel();
                if (w.stop) co_return;
            }
        }
    };
    // Cancels random workers at whole-ms times, sometimes several in the same iteration.
    auto chaos = [](World& w) -> Coroutine<> {
        while (!w.stop) {
            co_await asyncio::sleep(std::chrono::milliseconds(w.rand(3)));
            for (int n = w.rand(3); n > 0 && !w.stop; --n)
                w.workers[static_cast<std::size_t>(w.rand(static_cast<int>(w.workers.size())))].cancel();
        }
    };
    // At half-ms times the loop is at rest (every timer is on a whole ms): any woken waiter has
    // run. A getter still waiting while items are queued, or a putter while a slot is free, missed
    // its wake-up.
    auto checker = [](World& w) -> Coroutine<> {
        co_await asyncio::sleep(500us);
        while (!w.stop) {
            if (w.consumers_in_get > 0 && !w.q.empty())
                w.fail("a getter waits while " + std::to_string(w.q.qsize()) + " items are queued");
            if (w.producers_in_put > 0 && !w.q.full())
                w.fail("a putter waits while the queue has a free slot");
            co_await asyncio::sleep(1ms);
        }
    };
    auto main = [&]() -> Coroutine<> {
        const int producers = 1 + w.rand(3), consumers = 1 + w.rand(3);
        for (int i = 0; i < producers; ++i) w.workers.push_back(asyncio::create_task(producer(w, i + 1)));
        for (int i = 0; i < consumers; ++i) w.workers.push_back(asyncio::create_task(consumer(w)));
        Task<> chaos_task = asyncio::create_task(chaos(w));
        Task<> checker_task = asyncio::create_task(checker(w));
        co_await asyncio::sleep(std::chrono::milliseconds(2 + w.rand(8)) + 250us);
        w.stop = true;
        for (auto& t : w.workers) t.cancel();
        co_await asyncio::gather(asyncio::return_exceptions, w.workers);
        co_await chaos_task;
        co_await checker_task;
        for (auto& t : w.workers) {
            if (!t.done()) {
                w.fail("a worker did not finish");
            } else if (!t.cancelled() && t.exception() != nullptr) {
                try {
                    std::rethrow_exception(t.exception());
                } catch (const std::exception& e) {
                    w.fail(std::string("a worker raised ") + e.what());
                }
            }
        }
        // Whatever is still queued is the difference.
        std::multiset<int> left;
        while (!w.q.empty()) {
            left.insert(w.q.get_nowait());
            w.q.task_done();
        }
        for (int x : w.removed)
            if (w.removed.count(x) != 1) w.fail("item " + std::to_string(x) + " came out twice");
        std::multiset<int> out = w.removed;
        out.insert(left.begin(), left.end());
        if (std::multiset<int>(w.inserted.begin(), w.inserted.end()) != out) {
            std::ostringstream s;
            s << "items put (" << w.inserted.size() << ") != items got (" << w.removed.size()
              << ") + items left (" << left.size() << ")";
            w.fail(s.str());
        }
        if (!w.q.join().await_ready()) w.fail("unfinished tasks left after every item was done");
    };
    try {
        run_virtual(main());
    } catch (const std::exception& e) {
        w.fail(std::string("the schedule raised ") + e.what());
    }
    return w.error;
}

TEST_F(QueueRandomSchedules, KeepEveryItemExactlyOnceAndLoseNoWakeUp) {
    constexpr std::uint32_t kSchedules = 10'000;
    const std::int64_t frames = asyncio::debug::live_frames();
    for (std::uint32_t seed = 1; seed <= kSchedules; ++seed) {
        const std::string error = run_schedule(seed);
        ASSERT_TRUE(error.empty()) << "seed " << seed << ": " << error;
        ASSERT_EQ(asyncio::debug::live_frames(), frames) << "frames leaked, seed " << seed;
    }
}

}  // namespace

// Reliability issue #7 (3): a task parked here, its loop destroyed, its last handle dropped
// afterwards: the frame's destruction must not touch the dead loop (ASan: heap-use-after-free).
namespace {
using asyncio_test::destroy_loop_then_task;

TEST_F(AQueue, RegressionTaskHandleOutlivingItsLoopWhileParkedInQueueGet) {
    asyncio::Queue<int> q;  // outlives both
    destroy_loop_then_task([&](asyncio::EventLoop& loop) -> asyncio::Task<> {
        return loop.create_task([](asyncio::Queue<int>& queue) -> asyncio::Coroutine<> {
            (void)co_await queue.get();
        }(q));
    });
    q.put_nowait(1);  // nobody is woken: the waiter unlinked itself
    EXPECT_EQ(q.qsize(), 1u);
}
}  // namespace

namespace {

// A getter left waiting when its loop closed (its frame kept by a Task handle) no longer waits:
// an item put afterwards stays in the queue for the next get(), on any loop.
TEST_F(AQueue, RegressionAGetterOfAClosedLoopDoesNotSwallowALaterItem) {
    asyncio::Queue<int> q;
    asyncio::Task<int> parked;
    {
        asyncio::EventLoop loop(asyncio_test::virtual_time());
        loop.set_exception_handler([](asyncio::EventLoop&, const asyncio::ExceptionContext&) {});
        parked = loop.create_task([](asyncio::Queue<int>& q) -> asyncio::Coroutine<int> { co_return co_await q.get(); }(q));
        loop.run_until_complete([]() -> asyncio::Coroutine<> { co_await asyncio::sleep(asyncio::Duration::zero()); }());
        EXPECT_FALSE(parked.done());
        loop.close();
    }
    q.put_nowait(42);  // no loop runs
    EXPECT_EQ(q.qsize(), 1u);
    asyncio::EventLoop other(asyncio_test::virtual_time());
    EXPECT_EQ(other.run_until_complete([](asyncio::Queue<int>& q) -> asyncio::Coroutine<int> { co_return co_await q.get(); }(q)), 42);
    EXPECT_FALSE(parked.done());
    parked = asyncio::Task<int>();
}

TEST_F(AQueue, PutNowaitFromAnotherThreadWhileAGetterWaitsIsARuntimeErrorAndAddsNothing) {
    // Issue #8, item 1: waking the getter from a plain thread would race with its loop. Before
    // anything changes: the item is not added (nothing lost, nothing half-done); likewise
    // get_nowait() with a putter waiting.
    std::string put_text;
    std::string get_text;
    asyncio::run([](std::string& put_out, std::string& get_out) -> Coroutine<> {
        Queue<int> q;
        Task<int> getter = asyncio::create_task([](Queue<int>& queue) -> Coroutine<int> { co_return co_await queue.get(); }(q));
        co_await asyncio::sleep(0s);
        std::thread([&] {
            try {
                q.put_nowait(1);
            } catch (const asyncio::RuntimeError& e) {
                put_out = e.what();
            }
        }).join();
        EXPECT_EQ(q.qsize(), 0u);
        q.put_nowait(2);
        EXPECT_EQ(co_await getter, 2);

        Queue<int> full(1);
        full.put_nowait(7);
        Task<> putter = asyncio::create_task([](Queue<int>& queue) -> Coroutine<> { co_await queue.put(8); }(full));
        co_await asyncio::sleep(0s);
        std::thread([&] {
            try {
                (void)full.get_nowait();
            } catch (const asyncio::RuntimeError& e) {
                get_out = e.what();
            }
        }).join();
        EXPECT_EQ(full.qsize(), 1u);
        EXPECT_EQ(full.get_nowait(), 7);
        co_await putter;
        EXPECT_EQ(full.get_nowait(), 8);
    }(put_text, get_text));
    EXPECT_EQ(put_text, "Queue::put_nowait(): Non-thread-safe operation invoked on an event loop other than the current one");
    EXPECT_EQ(get_text, "Queue::get_nowait(): Non-thread-safe operation invoked on an event loop other than the current one");
}

}  // namespace
