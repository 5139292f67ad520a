// Any awaitable, everywhere: the Awaitable concept, ensure_future, and every combinator
// (create_task, ensure_future, wait_for, shield, gather, wait, as_completed, Timeout::run,
// TaskGroup::create_task) fed every kind of awaitable (our coroutines and tasks, the awaiters of
// sleep, Event, Queue, Lock, Condition, Semaphore, Barrier, a socket operation, a stream read, and
// types of the user's). create_task(f, args...) keeps f and its arguments alive in the task's
// frame. Where the order of events is observable, it is CPython 3.13's (scenarios in the comments).
#include "asyncio/awaitable.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "asyncio/asyncio.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using asyncio::Coroutine;
using asyncio::Task;
using asyncio_test::virtual_time;

namespace {

Coroutine<int> value_after(int v, asyncio::Duration d) {
    co_await asyncio::sleep(d);
    co_return v;
}

// ---- awaitables of the user's ----

/// A one-shot value that a test sets; whoever waits for it is resumed by the user's code, not by
/// the library: from a loop callback (call_soon) or, with `inline_resume`, right inside set().
struct Slot {
    std::optional<int> value;
    std::coroutine_handle<> waiter;
    bool inline_resume = false;

    void set(int v) {
        value = v;
        if (!waiter) return;
        auto h = std::exchange(waiter, {});
        if (inline_resume)
            h.resume();
        else
            asyncio::get_running_loop().call_soon([h] { h.resume(); });
    }
};

/// A user's awaiter: the three await_* members.
struct SlotAwaiter {
    Slot* slot;
    bool await_ready() const noexcept { return slot->value.has_value(); }
    bool await_suspend(std::coroutine_handle<> h) noexcept {
        slot->waiter = h;
        return true;
    }
    int await_resume() const { return *slot->value; }
};

/// A user's awaitable with a member operator co_await.
struct SlotAwaitable {
    Slot* slot;
    SlotAwaiter operator co_await() const noexcept { return SlotAwaiter{slot}; }
};

/// A user's awaitable with a free operator co_await (found by ADL).
struct FreeSlotAwaitable {
    Slot* slot;
};
SlotAwaiter operator co_await(FreeSlotAwaitable a) noexcept {
    return SlotAwaiter{a.slot};
}

/// An awaiter that cannot be moved: only create_task(f, args...) can start it later.
struct Pinned {
    Slot* slot;
    explicit Pinned(Slot* s) noexcept : slot(s) {}
    Pinned(Pinned&&) = delete;
    bool await_ready() const noexcept { return slot->value.has_value(); }
    void await_suspend(std::coroutine_handle<> h) noexcept { slot->waiter = h; }
    int await_resume() const { return *slot->value; }
};

struct NotAwaitable {};

// ---- the concept ----

static_assert(asyncio::Awaitable<Coroutine<int>>);
static_assert(asyncio::Awaitable<Task<int>&>);
static_assert(asyncio::Awaitable<decltype(asyncio::sleep(1s))>);
static_assert(asyncio::Awaitable<asyncio::Event::Awaiter>);
static_assert(asyncio::Awaitable<asyncio::Queue<int>::GetAwaiter>);
static_assert(asyncio::Awaitable<asyncio::Queue<int>::PutAwaiter>);
static_assert(asyncio::Awaitable<asyncio::Lock::Awaiter>);
static_assert(asyncio::Awaitable<asyncio::Condition::WaitAwaiter>);
static_assert(asyncio::Awaitable<asyncio::Semaphore::Awaiter>);
static_assert(asyncio::Awaitable<decltype(asyncio::sock_recv(std::declval<asyncio::Socket&>(), 1))>);
static_assert(asyncio::Awaitable<SlotAwaiter>);
static_assert(asyncio::Awaitable<SlotAwaitable>);
static_assert(asyncio::Awaitable<FreeSlotAwaitable>);
static_assert(asyncio::Awaitable<Pinned>);
static_assert(!asyncio::Awaitable<int>);
static_assert(!asyncio::Awaitable<NotAwaitable>);
static_assert(!asyncio::Awaitable<std::vector<Task<int>>>);

static_assert(std::is_same_v<asyncio::await_result_t<Coroutine<int>>, int>);
static_assert(std::is_same_v<asyncio::await_result_t<Task<std::string>&>, std::string>);
static_assert(std::is_void_v<asyncio::await_result_t<decltype(asyncio::sleep(1s))>>);
static_assert(std::is_same_v<asyncio::await_result_t<asyncio::Queue<int>::GetAwaiter>, int>);
static_assert(std::is_same_v<asyncio::await_result_t<FreeSlotAwaitable>, int>);
static_assert(
    std::is_same_v<asyncio::await_result_t<decltype(asyncio::gather(value_after(1, 1ms)))>,
                   std::tuple<int>>);

// Every awaiter the library returns can be kept by a combinator: movable until it is awaited.
static_assert(std::is_move_constructible_v<decltype(asyncio::sleep(1s))>);
static_assert(std::is_move_constructible_v<asyncio::Event::Awaiter>);
static_assert(std::is_move_constructible_v<asyncio::Queue<int>::GetAwaiter>);
static_assert(std::is_move_constructible_v<asyncio::Queue<int>::PutAwaiter>);
static_assert(std::is_move_constructible_v<asyncio::Queue<int>::JoinAwaiter>);
static_assert(std::is_move_constructible_v<asyncio::Lock::Awaiter>);
static_assert(std::is_move_constructible_v<asyncio::Lock::GuardAwaiter>);
static_assert(std::is_move_constructible_v<asyncio::Condition::WaitAwaiter>);
static_assert(std::is_move_constructible_v<asyncio::Semaphore::Awaiter>);
static_assert(std::is_move_constructible_v<asyncio::Semaphore::GuardAwaiter>);
static_assert(std::is_move_constructible_v<decltype(asyncio::sock_recv(std::declval<asyncio::Socket&>(), 1))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::sock_recv_into(std::declval<asyncio::Socket&>(), std::declval<asyncio::MutableBuffer>()))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::sock_send(std::declval<asyncio::Socket&>(), ""))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::sock_sendall(std::declval<asyncio::Socket&>(), ""))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::sock_accept(std::declval<asyncio::Socket&>()))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::sock_connect(std::declval<asyncio::Socket&>(), std::declval<const asyncio::Address&>()))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::sock_recvfrom(std::declval<asyncio::Socket&>(), 1))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::sock_recvfrom_into(std::declval<asyncio::Socket&>(), std::declval<asyncio::MutableBuffer>()))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::sock_sendto(std::declval<asyncio::Socket&>(), "", std::declval<const asyncio::Address&>()))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::wait_readable(0))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::gather(value_after(1, 1ms)))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::shield(value_after(1, 1ms)))>);
static_assert(std::is_move_constructible_v<decltype(asyncio::wait(std::vector<Task<int>>{}))>);
static_assert(std::is_move_constructible_v<asyncio::ExecutorFuture<int>>);

// ---- the matrix: each kind of awaitable through each combinator ----
//
// A Kind makes one awaitable (make(), in the driving task, after prepare()); trigger() (in another
// task, 1 ms of virtual time later) makes it complete; check() looks at the result (std::monostate
// for void) and finish() cleans up.

template <class R>
using Norm = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

/// Awaits aw and maps a void result to std::monostate.
template <class Aw>
Coroutine<Norm<asyncio::await_result_t<Aw>>> norm(Aw aw) {
    if constexpr (std::is_void_v<asyncio::await_result_t<Aw>>) {
        co_await std::move(aw);
        co_return std::monostate{};
    } else {
        co_return co_await std::move(aw);
    }
}

struct KindBase {
    Coroutine<> prepare() { co_return; }
    Coroutine<> trigger() { co_return; }
    Coroutine<> finish() { co_return; }
};

struct CoroutineKind : KindBase {
    auto make() { return value_after(7, 2ms); }
    void check(int r) { EXPECT_EQ(r, 7); }
};

struct TaskKind : KindBase {
    auto make() { return asyncio::create_task(value_after(8, 2ms)); }
    void check(int r) { EXPECT_EQ(r, 8); }
};

struct SleepKind : KindBase {
    asyncio::TimePoint start{};
    auto make() {
        start = asyncio::get_running_loop().time();
        return asyncio::sleep(5ms);
    }
    void check(std::monostate) { EXPECT_GE(asyncio::get_running_loop().time() - start, 5ms); }
};

struct SleepZeroKind : KindBase {
    auto make() { return asyncio::sleep(0s); }
    void check(std::monostate) {}
};

struct EventKind : KindBase {
    asyncio::Event ev;
    auto make() { return ev.wait(); }
    Coroutine<> trigger() {
        ev.set();
        co_return;
    }
    void check(std::monostate) { EXPECT_TRUE(ev.is_set()); }
};

struct QueueGetKind : KindBase {
    asyncio::Queue<int> q;
    auto make() { return q.get(); }
    Coroutine<> trigger() {
        q.put_nowait(42);
        co_return;
    }
    void check(int r) {
        EXPECT_EQ(r, 42);
        EXPECT_TRUE(q.empty());
    }
};

struct QueuePutKind : KindBase {
    asyncio::Queue<int> q{1};
    Coroutine<> prepare() {
        q.put_nowait(1);
        co_return;
    }
    auto make() { return q.put(2); }
    Coroutine<> trigger() {
        EXPECT_EQ(q.get_nowait(), 1);
        co_return;
    }
    void check(std::monostate) {
        EXPECT_EQ(q.qsize(), 1u);
        EXPECT_EQ(q.get_nowait(), 2);
    }
};

struct LockKind : KindBase {
    asyncio::Lock lock;
    Coroutine<> prepare() { co_await lock.acquire(); }
    auto make() { return lock.acquire(); }
    Coroutine<> trigger() {
        lock.release();  // handed to the waiting acquire
        co_return;
    }
    void check(std::monostate) { EXPECT_TRUE(lock.locked()); }
    Coroutine<> finish() {
        lock.release();
        co_return;
    }
};

struct ConditionKind : KindBase {
    asyncio::Condition cond;
    Coroutine<> prepare() { co_await cond.acquire(); }  // wait() is awaited under the lock
    auto make() { return cond.wait(); }
    Coroutine<> trigger() {
        co_await cond.acquire();  // wait() released it
        cond.notify();
        cond.release();
    }
    void check(std::monostate) { EXPECT_TRUE(cond.locked()); }  // wait() took it back
    Coroutine<> finish() {
        cond.release();
        co_return;
    }
};

struct SemaphoreKind : KindBase {
    asyncio::Semaphore sem{0};
    auto make() { return sem.acquire(); }
    Coroutine<> trigger() {
        sem.release();
        co_return;
    }
    void check(std::monostate) { EXPECT_TRUE(sem.locked()); }
};

struct BarrierKind : KindBase {
    asyncio::Barrier barrier{2};
    auto make() { return barrier.wait(); }
    Coroutine<> trigger() { EXPECT_EQ(co_await barrier.wait(), 1u); }
    void check(std::size_t index) { EXPECT_EQ(index, 0u); }  // it arrived first
};

struct SockRecvKind : KindBase {
    std::pair<asyncio::Socket, asyncio::Socket> pair = asyncio::socketpair();
    auto make() { return asyncio::sock_recv(pair.first, 16); }
    Coroutine<> trigger() { co_await asyncio::sock_sendall(pair.second, std::string_view("hi")); }
    void check(const std::string& r) { EXPECT_EQ(r, "hi"); }
};

struct ReadlineKind : KindBase {
    std::pair<asyncio::Socket, asyncio::Socket> pair = asyncio::socketpair();
    std::pair<asyncio::StreamReader, asyncio::StreamWriter> streams =
        asyncio::open_connection(std::move(pair.first));
    auto make() { return streams.first.readline(); }
    Coroutine<> trigger() {
        co_await asyncio::sock_sendall(pair.second, std::string_view("line\nrest"));
    }
    void check(const std::string& r) {
        EXPECT_EQ(r, "line\n");
        EXPECT_EQ(streams.first.buffered(), 4u);
    }
};

struct UserCoAwaitKind : KindBase {
    Slot slot;
    auto make() { return SlotAwaitable{&slot}; }
    Coroutine<> trigger() {
        slot.set(5);
        co_return;
    }
    void check(int r) { EXPECT_EQ(r, 5); }
};

struct UserFreeCoAwaitKind : KindBase {
    Slot slot;
    auto make() { return FreeSlotAwaitable{&slot}; }
    Coroutine<> trigger() {
        slot.set(6);
        co_return;
    }
    void check(int r) { EXPECT_EQ(r, 6); }
};

struct UserAwaiterKind : KindBase {
    Slot slot{std::nullopt, {}, true};  // resumed inside the trigger task's step
    auto make() { return SlotAwaiter{&slot}; }
    Coroutine<> trigger() {
        slot.set(9);
        co_return;
    }
    void check(int r) { EXPECT_EQ(r, 9); }
};

template <class K>
using Made = decltype(std::declval<K&>().make());
template <class K>
using Out = Norm<asyncio::await_result_t<Made<K>>>;

/// Runs one case on virtual time: prepare, start the trigger, await `via(kind)`, check.
template <class K>
void run_case(Coroutine<Out<K>> (*via)(K&)) {
    asyncio::run(
        [](Coroutine<Out<K>> (*via)(K&)) -> Coroutine<> {
            K k;
            co_await k.prepare();
            // The callable form of create_task: k is passed by std::ref, the lambda is kept.
            Task<> trigger = asyncio::create_task(
                [](K& k) -> Coroutine<> {
                    co_await asyncio::sleep(1ms);
                    co_await k.trigger();
                },
                std::ref(k));
            Out<K> r = co_await via(k);
            co_await trigger;
            k.check(r);
            co_await k.finish();
        }(via),
        virtual_time());
}

template <class K>
Coroutine<Out<K>> via_create_task(K& k) {
    co_return co_await norm(asyncio::create_task(k.make()));
}
template <class K>
Coroutine<Out<K>> via_create_task_named(K& k) {
    Task<asyncio::await_result_t<Made<K>>> t = asyncio::create_task(k.make(), "made");
    EXPECT_EQ(t.get_name(), "made");
    co_return co_await norm(std::move(t));
}
template <class K>
Coroutine<Out<K>> via_create_task_callable(K& k) {
    co_return co_await norm(asyncio::create_task([&k] { return k.make(); }));
}
template <class K>
Coroutine<Out<K>> via_loop_create_task(K& k) {
    co_return co_await norm(asyncio::get_running_loop().create_task(k.make()));
}
template <class K>
Coroutine<Out<K>> via_ensure_future(K& k) {
    co_return co_await norm(asyncio::ensure_future(k.make()));
}
template <class K>
Coroutine<Out<K>> via_wait_for(K& k) {
    co_return co_await norm(asyncio::wait_for(k.make(), 1h));
}
template <class K>
Coroutine<Out<K>> via_timeout(K& k) {
    asyncio::Timeout t = asyncio::timeout(1h);
    Out<K> r = co_await norm(t.run(k.make()));
    EXPECT_FALSE(t.expired());
    co_return r;
}
template <class K>
Coroutine<Out<K>> via_shield(K& k) {
    co_return co_await norm(asyncio::shield(k.make()));
}
template <class K>
Coroutine<Out<K>> via_gather(K& k) {
    auto [r] = co_await asyncio::gather(k.make());
    co_return std::move(r);
}
template <class K>
Coroutine<Out<K>> via_gather_with_a_coroutine(K& k) {
    auto [r, other] =
        co_await asyncio::gather(asyncio::return_exceptions, k.make(), value_after(3, 1ms));
    EXPECT_EQ(std::get<0>(other), 3);
    co_return std::get<0>(std::move(r));
}
template <class K>
Coroutine<Out<K>> via_gather_vector(K& k) {
    std::vector<Made<K>> v;
    v.push_back(k.make());
    auto r = co_await asyncio::gather(std::move(v));
    EXPECT_EQ(r.size(), 1u);
    co_return std::move(r[0]);
}
template <class K>
Coroutine<Out<K>> via_wait(K& k) {
    std::vector<Made<K>> v;
    v.push_back(k.make());
    auto res = co_await asyncio::wait(std::move(v));
    EXPECT_EQ(res.done.size(), 1u);
    EXPECT_TRUE(res.pending.empty());
    co_return co_await norm(res.done[0]);
}
template <class K>
Coroutine<Out<K>> via_as_completed(K& k) {
    std::vector<Made<K>> v;
    v.push_back(k.make());
    std::optional<Out<K>> r;
    int n = 0;
    for (auto next : asyncio::as_completed(std::move(v), 1h)) {
        r.emplace(co_await norm(next));
        ++n;
    }
    EXPECT_EQ(n, 1);
    co_return std::move(*r);
}
template <class K>
Coroutine<Out<K>> via_task_group(K& k) {
    asyncio::TaskGroup tg;
    auto t = tg.create_task(k.make());
    co_await tg.wait();
    co_return co_await norm(std::move(t));
}
template <class K>
Coroutine<Out<K>> via_task_group_callable(K& k) {
    asyncio::TaskGroup tg;
    auto t = tg.create_task([](K& k) { return k.make(); }, std::ref(k));
    co_await tg.wait();
    co_return co_await norm(std::move(t));
}

template <class K>
class AnyAwaitable : public asyncio_test::LeakChecked {};

using Kinds = ::testing::Types<CoroutineKind, TaskKind, SleepKind, SleepZeroKind, EventKind,
                               QueueGetKind, QueuePutKind, LockKind, ConditionKind, SemaphoreKind,
                               BarrierKind, SockRecvKind, ReadlineKind, UserCoAwaitKind,
                               UserFreeCoAwaitKind, UserAwaiterKind>;
class KindNames {
  public:
    template <class K>
    static std::string GetName(int) {
        if (std::is_same_v<K, CoroutineKind>) return "Coroutine";
        if (std::is_same_v<K, TaskKind>) return "Task";
        if (std::is_same_v<K, SleepKind>) return "Sleep";
        if (std::is_same_v<K, SleepZeroKind>) return "SleepZero";
        if (std::is_same_v<K, EventKind>) return "EventWait";
        if (std::is_same_v<K, QueueGetKind>) return "QueueGet";
        if (std::is_same_v<K, QueuePutKind>) return "QueuePut";
        if (std::is_same_v<K, LockKind>) return "LockAcquire";
        if (std::is_same_v<K, ConditionKind>) return "ConditionWait";
        if (std::is_same_v<K, SemaphoreKind>) return "SemaphoreAcquire";
        if (std::is_same_v<K, BarrierKind>) return "BarrierWait";
        if (std::is_same_v<K, SockRecvKind>) return "SockRecv";
        if (std::is_same_v<K, ReadlineKind>) return "StreamReadline";
        if (std::is_same_v<K, UserCoAwaitKind>) return "UserOperatorCoAwait";
        if (std::is_same_v<K, UserFreeCoAwaitKind>) return "UserFreeOperatorCoAwait";
        if (std::is_same_v<K, UserAwaiterKind>) return "UserAwaiter";
        return "?";
    }
};
TYPED_TEST_SUITE(AnyAwaitable, Kinds, KindNames);

TYPED_TEST(AnyAwaitable, CreateTask) {
    run_case<TypeParam>(&via_create_task<TypeParam>);
}
TYPED_TEST(AnyAwaitable, CreateTaskNamed) {
    run_case<TypeParam>(&via_create_task_named<TypeParam>);
}
TYPED_TEST(AnyAwaitable, CreateTaskOfACallable) {
    run_case<TypeParam>(&via_create_task_callable<TypeParam>);
}
TYPED_TEST(AnyAwaitable, LoopCreateTask) {
    run_case<TypeParam>(&via_loop_create_task<TypeParam>);
}
TYPED_TEST(AnyAwaitable, EnsureFuture) {
    run_case<TypeParam>(&via_ensure_future<TypeParam>);
}
TYPED_TEST(AnyAwaitable, WaitFor) {
    run_case<TypeParam>(&via_wait_for<TypeParam>);
}
TYPED_TEST(AnyAwaitable, TimeoutRun) {
    run_case<TypeParam>(&via_timeout<TypeParam>);
}
TYPED_TEST(AnyAwaitable, Shield) {
    run_case<TypeParam>(&via_shield<TypeParam>);
}
TYPED_TEST(AnyAwaitable, Gather) {
    run_case<TypeParam>(&via_gather<TypeParam>);
}
TYPED_TEST(AnyAwaitable, GatherWithACoroutine) {
    run_case<TypeParam>(&via_gather_with_a_coroutine<TypeParam>);
}
TYPED_TEST(AnyAwaitable, GatherOfAVector) {
    run_case<TypeParam>(&via_gather_vector<TypeParam>);
}
TYPED_TEST(AnyAwaitable, Wait) {
    run_case<TypeParam>(&via_wait<TypeParam>);
}
TYPED_TEST(AnyAwaitable, AsCompletedRange) {
    run_case<TypeParam>(&via_as_completed<TypeParam>);
}
TYPED_TEST(AnyAwaitable, TaskGroupCreateTask) {
    run_case<TypeParam>(&via_task_group<TypeParam>);
}
TYPED_TEST(AnyAwaitable, TaskGroupCreateTaskOfACallable) {
    run_case<TypeParam>(&via_task_group_callable<TypeParam>);
}

// ---- ordering and cleanup, against CPython 3.13 ----

class AwaitableCombinator : public asyncio_test::LeakChecked {};

Coroutine<std::string> logged(std::vector<std::string>& log, std::string name,
                              asyncio::Duration d) {
    log.push_back(name + " start");
    co_await asyncio::sleep(d);
    log.push_back(name + " end");
    co_return name;
}

// r = await asyncio.gather(asyncio.sleep(0.002), f(log, "a", 0.001), f(log, "b", 0))
// -> [None, 'a', 'b'], log ['a start', 'b start', 'b end', 'a end']
TEST_F(AwaitableCombinator, GatherOfASleepAndCoroutinesKeepsArgumentOrder) {
    asyncio::run(
        []() -> Coroutine<> {
            std::vector<std::string> log;
            auto [s, a, b] = co_await asyncio::gather(asyncio::sleep(2ms), logged(log, "a", 1ms),
                                                      logged(log, "b", 0s));
            EXPECT_EQ(s, std::monostate{});
            EXPECT_EQ(a, "a");
            EXPECT_EQ(b, "b");
            EXPECT_EQ(log, (std::vector<std::string>{"a start", "b start", "b end", "a end"}));
        }(),
        virtual_time());
}

// await asyncio.wait_for(ev.wait(), 1) -> TimeoutError after 1.0, len(ev._waiters) == 0
TEST_F(AwaitableCombinator, WaitForAnEventTimesOutAndLeavesNoWaiter) {
    asyncio::run(
        []() -> Coroutine<> {
            asyncio::Event ev;
            auto& loop = asyncio::get_running_loop();
            const auto t0 = loop.time();
            EXPECT_THROW(co_await asyncio::wait_for(ev.wait(), 1s), asyncio::TimeoutError);
            EXPECT_EQ(loop.time() - t0, 1s);
            // The timed-out wait's node (in a freed frame) is no longer in the list: set() touches
            // only the new waiter (ASan would see a use of the freed frame).
            Task<> waiter = asyncio::create_task(ev.wait());
            co_await asyncio::sleep(0s);
            ev.set();
            co_await waiter;
        }(),
        virtual_time());
}

// q = asyncio.Queue(); loop.call_at(when, q.put_nowait, 1)
// async with asyncio.timeout_at(when): await q.get()   -> TimeoutError, q.qsize() == 1
TEST_F(AwaitableCombinator, QueueGetTimingOutInTheIterationOfAPutLosesNoItem) {
    asyncio::run(
        []() -> Coroutine<> {
            asyncio::Queue<int> q;
            auto& loop = asyncio::get_running_loop();
            const auto when = loop.time() + 1s;
            loop.call_at(when, [&q] { q.put_nowait(1); });
            asyncio::Timeout t = asyncio::timeout_at(when);
            EXPECT_THROW(co_await t.run(q.get()), asyncio::TimeoutError);
            EXPECT_TRUE(t.expired());
            EXPECT_EQ(q.qsize(), 1u);
            EXPECT_EQ(q.get_nowait(), 1);
        }(),
        virtual_time());
}

TEST_F(AwaitableCombinator, WaitForQueueGetTimingOutInTheIterationOfAPutLosesNoItem) {
    asyncio::run(
        []() -> Coroutine<> {
            asyncio::Queue<int> q;
            auto& loop = asyncio::get_running_loop();
            loop.call_later(1s,
                            [&q] { q.put_nowait(1); });  // due with wait_for's deadline, before it
            EXPECT_THROW(co_await asyncio::wait_for(q.get(), 1s), asyncio::TimeoutError);
            EXPECT_EQ(q.qsize(), 1u);
            // A getter waiting next gets it: the cancelled get passed nothing on wrongly.
            EXPECT_EQ(co_await asyncio::wait_for(q.get(), 1s), 1);
        }(),
        virtual_time());
}

// loop.call_later(0.5, q.put_nowait, 7); await asyncio.wait_for(q.get(), 1) -> 7
TEST_F(AwaitableCombinator, WaitForQueueGetReturnsTheItem) {
    asyncio::run(
        []() -> Coroutine<> {
            asyncio::Queue<int> q;
            asyncio::get_running_loop().call_later(500ms, [&q] { q.put_nowait(7); });
            EXPECT_EQ(co_await asyncio::wait_for(q.get(), 1s), 7);
            EXPECT_EQ(q.qsize(), 0u);
        }(),
        virtual_time());
}

// for nxt in asyncio.as_completed([v(3, .03), v(1, .01), v(2, .02)]): out.append(await nxt) -> [1,
// 2, 3]
TEST_F(AwaitableCombinator, AsCompletedIteratesResultsInCompletionOrder) {
    asyncio::run(
        []() -> Coroutine<> {
            std::vector<Coroutine<int>> cs;
            cs.push_back(value_after(3, 30ms));
            cs.push_back(value_after(1, 10ms));
            cs.push_back(value_after(2, 20ms));
            std::vector<int> out;
            for (auto next : asyncio::as_completed(std::move(cs))) out.push_back(co_await next);
            EXPECT_EQ(out, (std::vector<int>{1, 2, 3}));
        }(),
        virtual_time());
}

TEST_F(AwaitableCombinator, AsCompletedRangeRaisesTheTasksExceptionAndTimeoutError) {
    asyncio::run(
        []() -> Coroutine<> {
            std::vector<Coroutine<int>> cs;
            cs.push_back([]() -> Coroutine<int> {
                co_await asyncio::sleep(1ms);
                throw std::runtime_error("boom");
            }());
            cs.push_back(value_after(2, 1h));
            auto ac = asyncio::as_completed(std::move(cs), 1s);
            int i = 0;
            for (auto next : ac) {
                if (i++ == 0)
                    EXPECT_THROW(co_await next, std::runtime_error);
                else
                    EXPECT_THROW(co_await next, asyncio::TimeoutError);
            }
            EXPECT_EQ(i, 2);
        }(),
        virtual_time());
}

// The existing API keeps working over the same object: next() hands out the tasks themselves.
TEST_F(AwaitableCombinator, AsCompletedNextStillYieldsTasks) {
    asyncio::run(
        []() -> Coroutine<> {
            std::vector<decltype(asyncio::sleep(1s))> sleeps;
            sleeps.push_back(asyncio::sleep(2ms));
            sleeps.push_back(asyncio::sleep(1ms));
            auto ac = asyncio::as_completed(std::move(sleeps));
            int n = 0;
            while (ac.has_next()) {
                Task<> t = co_await ac.next();
                EXPECT_TRUE(t.done());
                ++n;
            }
            EXPECT_EQ(n, 2);
        }(),
        virtual_time());
}

// Two tasks that sleep(0) in turn interleave: a0 b0 a1 b1 a2 b2.
TEST_F(AwaitableCombinator, SleepZeroIsAPlainYield) {
    asyncio::run(
        []() -> Coroutine<> {
            std::vector<std::string> log;
            auto w = [](std::vector<std::string>& log, std::string name) -> Coroutine<> {
                for (int i = 0; i < 3; ++i) {
                    log.push_back(name + std::to_string(i));
                    co_await asyncio::sleep(0s);
                }
            };
            co_await asyncio::gather(w(log, "a"), w(log, "b"));
            EXPECT_EQ(log, (std::vector<std::string>{"a0", "b0", "a1", "b1", "a2", "b2"}));
            const auto t0 = asyncio::get_running_loop().time();
            co_await asyncio::sleep(0s);
            EXPECT_EQ(asyncio::get_running_loop().time(), t0);
        }(),
        virtual_time());
}

// asyncio.ensure_future(t) is t
TEST_F(AwaitableCombinator, EnsureFutureOfATaskIsTheSameTask) {
    asyncio::run(
        []() -> Coroutine<> {
            Task<int> t = asyncio::create_task(value_after(1, 1ms));
            Task<int> same = asyncio::ensure_future(t);
            EXPECT_TRUE(same == t);
            EXPECT_EQ(co_await same, 1);
        }(),
        virtual_time());
}

// create_task(task) makes a new task that awaits it (CPython raises TypeError); cancelling the new
// one cancels the one it awaits.
TEST_F(AwaitableCombinator, CreateTaskOfATaskAwaitsItInANewTask) {
    asyncio::run(
        []() -> Coroutine<> {
            Task<int> inner = asyncio::create_task(value_after(1, 1h));
            Task<int> outer = asyncio::create_task(inner);
            EXPECT_FALSE(outer == inner);
            co_await asyncio::sleep(1ms);
            outer.cancel();
            EXPECT_THROW(co_await outer, asyncio::CancelledError);
            EXPECT_TRUE(inner.cancelled());
        }(),
        virtual_time());
}

// ev = Event(); inner = ensure_future(ev.wait()); outer awaits shield(inner); outer.cancel()
// -> outer cancelled, inner not done; ev.set() -> inner done
TEST_F(AwaitableCombinator, ShieldOfAnEventWaitOutlivesTheCancelledAwaiter) {
    asyncio::run(
        []() -> Coroutine<> {
            asyncio::Event ev;
            Task<> inner = asyncio::ensure_future(ev.wait());
            Task<> outer = asyncio::create_task(
                [](Task<> t) -> Coroutine<> { co_await asyncio::shield(t); }, inner);
            co_await asyncio::sleep(0s);
            outer.cancel();
            EXPECT_THROW(co_await outer, asyncio::CancelledError);
            EXPECT_FALSE(inner.done());
            ev.set();
            co_await inner;
            EXPECT_TRUE(inner.done());
        }(),
        virtual_time());
}

// wait_for(shield(gather(...)), d): combinators nest (their awaiters are kept by the next one).
TEST_F(AwaitableCombinator, CombinatorsNest) {
    asyncio::run(
        []() -> Coroutine<> {
            auto [a, b] = co_await asyncio::wait_for(
                asyncio::shield(asyncio::gather(value_after(1, 1ms), asyncio::sleep(2ms))), 1s);
            EXPECT_EQ(a, 1);
            EXPECT_EQ(b, std::monostate{});
            Task<std::tuple<int>> t = asyncio::create_task(asyncio::gather(value_after(2, 1ms)));
            EXPECT_EQ(std::get<0>(co_await t), 2);
            std::vector<Coroutine<int>> cs;
            cs.push_back(value_after(3, 1ms));
            auto w = co_await asyncio::wait_for(asyncio::wait(std::move(cs)), 1s);
            EXPECT_EQ(w.done.size(), 1u);
            EXPECT_EQ(w.done[0].result(), 3);
        }(),
        virtual_time());
}

// wait() takes coroutines (CPython 3.11+ raises TypeError: done/pending hold the tasks made of
// them).
TEST_F(AwaitableCombinator, WaitTakesCoroutines) {
    asyncio::run(
        []() -> Coroutine<> {
            std::vector<Coroutine<int>> cs;
            cs.push_back(value_after(1, 1ms));
            cs.push_back(value_after(2, 1h));
            auto [done, pending] = co_await asyncio::wait(std::move(cs), asyncio::FIRST_COMPLETED);
            EXPECT_EQ(done.size(), 1u);
            EXPECT_EQ(done[0].result(), 1);
            EXPECT_EQ(pending.size(), 1u);
            pending[0].cancel();
        }(),
        virtual_time());
}

// A user's awaiter may resume its coroutine from inside another task's step (here: set() calls
// h.resume()); the awaiting task then goes on in its own step, one hop later, not inside the other.
TEST_F(AwaitableCombinator, AForeignAwaiterResumedInsideAnotherTaskContinuesInItsOwnTask) {
    asyncio::run(
        []() -> Coroutine<> {
            Slot slot{std::nullopt, {}, true};
            Task<int> t = asyncio::create_task(SlotAwaiter{&slot});
            co_await asyncio::sleep(0s);
            slot.set(3);             // resumes t's frame right here, inside this task
            EXPECT_FALSE(t.done());  // ... which hands it back to its own task
            EXPECT_TRUE(asyncio::current_task().base() != t.base());
            co_await asyncio::sleep(0s);
            EXPECT_TRUE(t.done());
            EXPECT_EQ(t.result(), 3);
        }(),
        virtual_time());
}

// The same from a loop callback (no task is current there): after wait_for, the awaiting task is
// the current task again, so it can go on awaiting the library's primitives.
TEST_F(AwaitableCombinator, AForeignAwaiterResumedFromALoopCallbackContinuesInItsTask) {
    asyncio::run(
        []() -> Coroutine<> {
            Slot slot;
            asyncio::get_running_loop().call_later(1ms, [&slot] { slot.set(4); });
            EXPECT_EQ(co_await asyncio::wait_for(SlotAwaitable{&slot}, 1s), 4);
            EXPECT_TRUE(asyncio::current_task());
            co_await asyncio::sleep(1ms);
            auto [v] = co_await asyncio::gather(FreeSlotAwaitable{&slot});  // ready at once
            EXPECT_EQ(v, 4);
        }(),
        virtual_time());
}

// An awaiter that cannot be moved cannot be handed over, but a callable that makes it can.
TEST_F(AwaitableCombinator, ANonMovableAwaiterStartsThroughACallable) {
    asyncio::run(
        []() -> Coroutine<> {
            Slot slot;
            Task<int> t = asyncio::create_task([](Slot* s) { return Pinned(s); }, &slot);
            co_await asyncio::sleep(0s);
            slot.set(4);
            EXPECT_EQ(co_await t, 4);
        }(),
        virtual_time());
}

// ---- create_task(f, args...): f and args live in the task's frame ----

class CreateTaskOfACallable : public asyncio_test::LeakChecked {};

// Before: create_task([s]() -> Coroutine<...> {...}()) read `s` from a lambda object that died at
// the end of the full expression (its string's buffer freed: ASan reports it). The callable form
// keeps the lambda in the task's frame.
TEST_F(CreateTaskOfACallable, RegressionACapturingLambdaIsSafe) {
    asyncio::run(
        []() -> Coroutine<> {
            std::string s = "captured, long enough to live on the heap";
            Task<std::string> t = asyncio::create_task([s]() -> Coroutine<std::string> {
                co_await asyncio::sleep(1ms);
                co_return s;  // reads the capture: the lambda object lives in the task's frame
            });
            s.assign(64, 'x');
            EXPECT_EQ(co_await t, "captured, long enough to live on the heap");
        }(),
        virtual_time());
}

Coroutine<std::string> copy_later(const std::string& s) {
    co_await asyncio::sleep(1ms);
    co_return s;
}

// Before: create_task(copy_later(std::string("temp..."))) bound s to a temporary that died at the
// end of the full expression (ASan: use of its freed buffer). create_task(f, args...) keeps the
// argument in the frame; a const char* argument's conversion lives as long as the call's await.
TEST_F(CreateTaskOfACallable, RegressionAConstRefParameterBoundToATemporaryIsSafe) {
    asyncio::run(
        []() -> Coroutine<> {
            Task<std::string> t = asyncio::create_task(
                copy_later, std::string("temporary, long enough for the heap"));
            Task<std::string> u =
                asyncio::create_task(&copy_later, "a C string becomes a std::string on the heap");
            EXPECT_EQ(co_await t, "temporary, long enough for the heap");
            EXPECT_EQ(co_await u, "a C string becomes a std::string on the heap");
        }(),
        virtual_time());
}

// The callable and the arguments live exactly as long as the task's frame.
TEST_F(CreateTaskOfACallable, KeepsTheCallableAndArgumentsUntilTheTaskIsFreed) {
    using asyncio_test::Counted;
    asyncio::run(
        []() -> Coroutine<> {
            const int before = Counted::live();
            Counted captured(5);
            Task<int> t = asyncio::create_task(
                [captured](Counted arg) -> Coroutine<int> {
                    co_await asyncio::sleep(1ms);
                    co_return captured.value() + arg.value();
                },
                Counted(6));
            EXPECT_GE(Counted::live(), before + 3);  // ours, the lambda's copy, the argument's copy
            EXPECT_EQ(co_await t, 11);
            t = Task<int>();  // the last handle: the frame goes, and with it the lambda and arg
            EXPECT_EQ(Counted::live(), before + 1);
        }(),
        virtual_time());
}

TEST_F(CreateTaskOfACallable, TaskGroupKeepsCapturesAlive) {
    asyncio::run(
        []() -> Coroutine<> {
            std::vector<int> out;
            asyncio::TaskGroup tg;
            for (int i = 0; i < 3; ++i) {
                std::string label =
                    "task " + std::to_string(i) + " with a label long enough for the heap";
                tg.create_task([&out, i, label]() -> Coroutine<> {
                    co_await asyncio::sleep(std::chrono::milliseconds(3 - i));
                    EXPECT_EQ(label, "task " + std::to_string(i) +
                                         " with a label long enough for the heap");
                    out.push_back(i);
                });
            }
            co_await tg.wait();
            EXPECT_EQ(out, (std::vector<int>{2, 1, 0}));
        }(),
        virtual_time());
}

TEST_F(CreateTaskOfACallable, ArgumentsArePassedAsRvaluesAndStdRefPassesAReference) {
    asyncio::run(
        []() -> Coroutine<> {
            int counter = 0;
            auto bump = [](int& c, std::string&& s) -> Coroutine<std::string> {
                ++c;
                co_return std::move(s);
            };
            Task<std::string> t =
                asyncio::create_task(bump, std::ref(counter), std::string("moved"));
            EXPECT_EQ(co_await t, "moved");
            EXPECT_EQ(counter, 1);
        }(),
        virtual_time());
}

TEST_F(CreateTaskOfACallable, ACoroutineWithANameIsStillNamed) {
    asyncio::run(
        []() -> Coroutine<> {
            Task<int> t = asyncio::create_task(value_after(1, 1ms), std::string("worker"));
            EXPECT_EQ(t.get_name(), "worker");
            EXPECT_EQ(co_await t, 1);
        }(),
        virtual_time());
}

TEST_F(CreateTaskOfACallable, NeedsARunningLoop) {
    EXPECT_THROW(asyncio::create_task([]() -> Coroutine<> { co_return; }), asyncio::RuntimeError);
    EXPECT_THROW((void)asyncio::ensure_future(asyncio::sleep(1s)), asyncio::RuntimeError);
}

}  // namespace
