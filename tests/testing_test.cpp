// asyncio::testing: virtual time, seeded permutations of what asyncio leaves unordered (replayable
// from the seed), promised orders never permuted, injected stream faults that leave streams
// byte-exact, and the failing seed printed.
#include "asyncio/testing.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/future.hpp"
#include "asyncio/lock.hpp"
#include "asyncio/queue.hpp"
#include "asyncio/run.hpp"
#include "asyncio/server.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/sock_ops.hpp"
#include "asyncio/socket.hpp"
#include "asyncio/streams.hpp"
#include "asyncio/task.hpp"
#include "asyncio/testing_gtest.hpp"
#include "stream_test_support.hpp"
#include "test_support.hpp"

ASYNCIO_TESTING_PRINT_SEED_ON_FAILURE();

namespace {

using asyncio::Coroutine;
using asyncio::Socket;
using asyncio::Task;
using asyncio::testing::Chaos;
using asyncio::testing::Faults;
using namespace std::chrono_literals;
using stream_test::first_difference;
using stream_test::pattern;

class Testing : public asyncio_test::LeakChecked {};

/// Sets an environment variable for the scope, restoring what was there.
class ScopedEnv {
public:
    ScopedEnv(const char* name, const char* value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        if (value != nullptr)
            ::setenv(name, value, 1);
        else
            ::unsetenv(name);
    }
    ~ScopedEnv() {
        if (old_)
            ::setenv(name_, old_->c_str(), 1);
        else
            ::unsetenv(name_);
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
    const char* name_;
    std::optional<std::string> old_;
};

asyncio::RunOptions chaos_options(std::uint64_t seed, Faults faults = {}) {
    asyncio::RunOptions o;
    o.clock = asyncio::testing::virtual_clock();
    o.chaos = Chaos{seed, faults};
    return o;
}

// ---- virtual time ----

TEST_F(Testing, VirtualTimeJumpsToTheNextDeadlineWhenEveryTaskIsBlocked) {
    const auto wall = std::chrono::steady_clock::now();
    asyncio::run([]() -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        const auto t0 = loop.time();
        co_await asyncio::sleep(3600s);
        EXPECT_EQ(loop.time() - t0, 3600s);  // exactly: nothing else moved the clock
        co_await asyncio::sleep(250ms);
        EXPECT_EQ(loop.time() - t0, 3600s + 250ms);
    }(), {.clock = asyncio::testing::virtual_clock()});
    EXPECT_LT(std::chrono::steady_clock::now() - wall, 30s);  // an hour of loop time, no wait
}

// ---- the same seed replays, another seed permutes ----

Coroutine<> sleeper(int i, std::vector<std::string>& trace) {
    co_await asyncio::sleep(10ms);  // all with the same deadline (virtual time does not move)
    trace.push_back("t" + std::to_string(i));
}

Coroutine<> receiver(Socket& s, int i, std::vector<std::string>& trace) {
    std::string got = co_await asyncio::sock_recv(s, 16);
    trace.push_back("r" + std::to_string(i) + got);
}

/// Equal-deadline timers and I/O completions that one poll reports together; the trace is the
/// order in which their tasks ran.
std::vector<std::string> traced_run(std::optional<std::uint64_t> seed) {
    constexpr int kN = 6;
    std::vector<std::string> trace;
    asyncio::RunOptions options;
    options.clock = asyncio::testing::virtual_clock();
    if (seed) options.chaos = Chaos{*seed, {}};
    asyncio::run([](std::vector<std::string>& trace) -> Coroutine<> {
        std::vector<std::pair<Socket, Socket>> pairs;
        for (int i = 0; i < kN; ++i) pairs.push_back(asyncio::socketpair());
        std::vector<Task<>> tasks;
        for (int i = 0; i < kN; ++i) tasks.push_back(asyncio::create_task(sleeper(i, trace)));
        for (int i = 0; i < kN; ++i) tasks.push_back(asyncio::create_task(receiver(pairs[i].second, i, trace)));
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);  // every receive is waiting
        for (int i = 0; i < kN; ++i) EXPECT_EQ(::send(pairs[i].first.fileno(), "x", 1, 0), 1);
        for (auto& t : tasks) co_await t;
    }(trace), std::move(options));
    return trace;
}

TEST_F(Testing, TheSameSeedReplaysTheSameOrder) {
    const auto a = traced_run(12345);
    const auto b = traced_run(12345);
    ASSERT_EQ(a.size(), 12u);
    EXPECT_EQ(a, b);
    EXPECT_EQ(traced_run(7), traced_run(7));
}

TEST_F(Testing, DifferentSeedsPermuteEqualTimersAndOnePollsCompletions) {
    const auto plain = traced_run(std::nullopt);
    // Without chaos: the documented order (equal timers FIFO) and the backend's own order.
    EXPECT_EQ(std::vector<std::string>(plain.end() - 6, plain.end()),
              (std::vector<std::string>{"t0", "t1", "t2", "t3", "t4", "t5"}));
    const auto first = traced_run(1);
    bool timers_differ = false;
    bool io_differ = false;
    for (std::uint64_t seed = 2; seed <= 20; ++seed) {
        const auto other = traced_run(seed);
        ASSERT_EQ(other.size(), first.size());
        // Receivers first (their bytes came before the timers' deadline), then the sleepers.
        if (!std::equal(first.begin(), first.begin() + 6, other.begin())) io_differ = true;
        if (!std::equal(first.begin() + 6, first.end(), other.begin() + 6)) timers_differ = true;
        auto sorted = other;
        std::sort(sorted.begin(), sorted.end());
        auto expected = plain;
        std::sort(expected.begin(), expected.end());
        EXPECT_EQ(sorted, expected) << "seed " << seed;  // a permutation: nothing lost or doubled
    }
    EXPECT_TRUE(timers_differ);
    EXPECT_TRUE(io_differ);
}

// ---- what asyncio promises is never permuted ----

Coroutine<> locker(asyncio::Lock& lock, int i, std::vector<int>& order) {
    co_await lock.acquire();
    order.push_back(i);
    co_await asyncio::sleep(0s);
    lock.release();
}

Coroutine<> getter(asyncio::Queue<int>& q, int i, std::vector<std::pair<int, int>>& got) {
    const int item = co_await q.get();
    got.emplace_back(i, item);
}

TEST_F(Testing, PromisedOrdersHoldUnderFiftySeeds) {
    for (std::uint64_t seed = 1; seed <= 50; ++seed) {
        asyncio::run([](std::uint64_t seed) -> Coroutine<> {
            auto& loop = asyncio::get_running_loop();
            // call_soon: FIFO.
            std::vector<int> soon;
            for (int i = 0; i < 100; ++i) loop.call_soon([&soon, i] { soon.push_back(i); });
            co_await asyncio::sleep(0s);
            std::vector<int> expected(100);
            for (int i = 0; i < 100; ++i) expected[i] = i;
            EXPECT_EQ(soon, expected) << "call_soon, seed " << seed;

            // Lock: waiters acquire FIFO.
            asyncio::Lock lock;
            co_await lock.acquire();
            std::vector<int> order;
            std::vector<Task<>> tasks;
            for (int i = 0; i < 10; ++i) tasks.push_back(asyncio::create_task(locker(lock, i, order)));
            co_await asyncio::sleep(1ms);
            lock.release();
            for (auto& t : tasks) co_await t;
            EXPECT_EQ(order, std::vector<int>(expected.begin(), expected.begin() + 10)) << "Lock, seed " << seed;

            // Queue: getters served FIFO.
            asyncio::Queue<int> q;
            std::vector<std::pair<int, int>> got;
            std::vector<Task<>> getters;
            for (int i = 0; i < 10; ++i) getters.push_back(asyncio::create_task(getter(q, i, got)));
            co_await asyncio::sleep(0s);
            for (int i = 0; i < 10; ++i) q.put_nowait(100 + i);
            for (auto& t : getters) co_await t;
            for (int i = 0; i < 10; ++i) EXPECT_EQ(got[i], std::make_pair(i, 100 + i)) << "Queue, seed " << seed;

            // A future's done callbacks: in the order they were added.
            auto f = loop.create_future<int>();
            std::vector<int> calls;
            for (int i = 0; i < 10; ++i) f.add_done_callback([&calls, i](asyncio::Future<int>&) { calls.push_back(i); });
            f.set_result(1);
            co_await asyncio::sleep(0s);
            EXPECT_EQ(calls, std::vector<int>(expected.begin(), expected.begin() + 10)) << "callbacks, seed " << seed;
        }(seed), chaos_options(seed, Faults::all()));
    }
}

TEST_F(Testing, ThreadsafeCallbacksKeepEachThreadsOrder) {
    for (std::uint64_t seed = 1; seed <= 10; ++seed) {
        std::vector<std::pair<int, int>> seen;
        asyncio::run([](std::vector<std::pair<int, int>>& seen) -> Coroutine<> {
            auto& loop = asyncio::get_running_loop();
            std::vector<std::thread> threads;
            for (int t = 0; t < 3; ++t) {
                threads.emplace_back([&loop, &seen, t] {
                    for (int i = 0; i < 300; ++i) loop.call_soon_threadsafe([&seen, t, i] { seen.emplace_back(t, i); });
                });
            }
            while (seen.size() < 900) co_await asyncio::sleep(1ms);
            for (auto& th : threads) th.join();
        }(seen), {.chaos = Chaos{seed, {}}});
        ASSERT_EQ(seen.size(), 900u);
        int next[3] = {0, 0, 0};
        for (const auto& [t, i] : seen) {
            EXPECT_EQ(i, next[t]) << "thread " << t << ", seed " << seed;
            next[t] = i + 1;
        }
    }
}

TEST_F(Testing, RegressionACallbackWhoseMovePostsAgainDoesNotDeadlockTheDrain) {
    // Under chaos the drain takes posted callbacks out of a mutex-guarded list; moving one runs
    // its move constructor (user code), which may post again: never with that mutex held.
    struct Poster {
        asyncio::EventLoop* loop;
        int* ran;
        bool armed;
        Poster(asyncio::EventLoop* l, int* r, bool a) : loop(l), ran(r), armed(a) {}
        Poster(Poster&& o) noexcept : loop(o.loop), ran(o.ran), armed(std::exchange(o.armed, false)) {
            if (armed && asyncio::testing::chaos_of(*loop) && loop->is_running()) {
                armed = false;
                loop->call_soon_threadsafe(Poster(loop, ran, false));
            }
        }
        Poster& operator=(Poster&&) = delete;
        void operator()() { ++*ran; }
    };
    int ran = 0;
    asyncio::run([](int& ran) -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        std::thread([&loop, &ran] { loop.call_soon_threadsafe(Poster(&loop, &ran, true)); }).join();
        for (int i = 0; i < 100 && ran < 2; ++i) co_await asyncio::sleep(1ms);
    }(ran), {.chaos = Chaos{8, {}}});
    EXPECT_EQ(ran, 2);
}

// ---- faults ----

TEST_F(Testing, ShortReadsReallyReturnSingleBytesAndLoseNone) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        int single = 0;
        int reads = 0;
        for (int m = 0; m < 20; ++m) {
            const std::string payload = pattern(4000, static_cast<std::uint32_t>(m));
            EXPECT_EQ(::send(a.fileno(), payload.data(), payload.size(), 0), 4000);
            std::string got;
            while (got.size() < payload.size()) {
                std::string part = co_await asyncio::sock_recv(b, payload.size() - got.size());
                CO_ASSERT(!part.empty());
                ++reads;
                if (part.size() == 1 && got.size() + 1 < payload.size()) ++single;
                got += part;
            }
            EXPECT_EQ(got, payload);
        }
        EXPECT_GT(single, 5);  // 4000 bytes were there each time: only the fault makes a 1-byte read
        EXPECT_GT(reads, 40);
        EXPECT_GT(asyncio::testing::fault_counts(asyncio::get_running_loop()).short_reads, 0u);
    }(), chaos_options(3, {.short_reads = true}));
}

TEST_F(Testing, PartialWritesReallyHappenAndSendallStillSendsEverything) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        const std::string payload = pattern(2000);
        int partial = 0;
        for (int i = 0; i < 20; ++i) {
            const std::size_t n = co_await asyncio::sock_send(a, asyncio::ConstBuffer(payload));
            if (n < payload.size()) ++partial;
            std::string sink(n, '\0');
            EXPECT_EQ(::recv(b.fileno(), sink.data(), n, MSG_WAITALL), static_cast<ssize_t>(n));
            EXPECT_EQ(sink, payload.substr(0, n));
        }
        EXPECT_GT(partial, 0);
        co_await asyncio::sock_sendall(a, asyncio::ConstBuffer(payload));
        std::string sink(payload.size(), '\0');
        EXPECT_EQ(::recv(b.fileno(), sink.data(), sink.size(), MSG_WAITALL), 2000);
        EXPECT_EQ(sink, payload);
        EXPECT_GT(asyncio::testing::fault_counts(asyncio::get_running_loop()).partial_writes, 0u);
    }(), chaos_options(5, {.partial_writes = true}));
}

Coroutine<> write_payload(asyncio::StreamWriter w, std::string payload) {
    w.write(payload);
    w.write(std::string("the end\n"));
    co_await w.drain();
    w.close();
    co_await w.wait_closed();
}

TEST_F(Testing, StreamsStayByteExactUnderShortReadsAndPartialWrites) {
    for (std::uint64_t seed = 1; seed <= 4; ++seed) {
        asyncio::run([](std::uint64_t seed) -> Coroutine<> {
            auto [a, b] = asyncio::socketpair();
            auto [ar, aw] = asyncio::open_connection(std::move(a));
            auto [br, bw] = asyncio::open_connection(std::move(b));
            const std::string payload = pattern(100'000, static_cast<std::uint32_t>(seed));
            Task<> writer = asyncio::create_task(write_payload(std::move(aw), payload));
            const std::string got = co_await br.readexactly(payload.size());
            EXPECT_EQ(got, payload) << "first difference at " << first_difference(got, payload);
            EXPECT_EQ(co_await br.readline(), "the end\n");
            EXPECT_EQ(co_await br.read(), "");
            co_await writer;
            bw.close();
            co_await bw.wait_closed();
            const auto counts = asyncio::testing::fault_counts(asyncio::get_running_loop());
            EXPECT_GT(counts.short_reads, 0u);
            EXPECT_GT(counts.partial_writes, 0u);
            EXPECT_GT(counts.eagain, 0u);
        }(seed), chaos_options(seed, {.short_reads = true, .partial_writes = true, .eagain = true}));
    }
}

Coroutine<> echo(asyncio::StreamReader r, asyncio::StreamWriter w) {
    for (;;) {
        std::string data = co_await r.read(65536);
        if (data.empty()) break;
        w.write(data);
        co_await w.drain();
    }
    w.close();
    co_await w.wait_closed();
}

TEST_F(Testing, TcpEchoIsByteExactWithEveryFaultIncludingSlowConnects) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::Server server = co_await asyncio::start_server(echo, "127.0.0.1", 0);
        const auto port = server.sockets()[0].getsockname().port();
        const std::string payload = pattern(100'000, 9);
        for (int c = 0; c < 3; ++c) {
            auto [r, w] = co_await asyncio::open_connection("127.0.0.1", port);
            w.write(payload);
            co_await w.drain();
            EXPECT_EQ(co_await r.readexactly(payload.size()), payload);
            w.close();
            co_await w.wait_closed();
        }
        server.close();
        co_await server.wait_closed();
        EXPECT_GT(asyncio::testing::fault_counts(asyncio::get_running_loop()).slow_connects, 0u);
    }(), {.chaos = Chaos{11, Faults::all()}});
}

TEST_F(Testing, DatagramsAreNeverCut) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair(AF_UNIX, SOCK_DGRAM);
        for (int i = 0; i < 20; ++i) {
            const std::string msg = pattern(500, static_cast<std::uint32_t>(i));
            EXPECT_EQ(co_await asyncio::sock_send(a, asyncio::ConstBuffer(msg)), msg.size());
            EXPECT_EQ(co_await asyncio::sock_recv(b, 1000), msg);
        }
    }(), chaos_options(2, Faults::all()));
}

// ---- the seed is printed when a run fails ----

Coroutine<> fails() {
    co_await asyncio::sleep(1ms);
    throw asyncio::ValueError("boom");
}

TEST_F(Testing, AFailingRunPrintsItsSeed) {
    ::testing::internal::CaptureStderr();
    EXPECT_THROW(asyncio::run(fails(), chaos_options(4242)), asyncio::ValueError);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("asyncio::testing: seed 4242 (rerun with ASYNCIO_SEED=4242)\n"), std::string::npos) << err;
    EXPECT_EQ(asyncio::testing::last_seed(), std::optional<std::uint64_t>(4242));
}

TEST_F(Testing, ASucceedingRunPrintsNothing) {
    ::testing::internal::CaptureStderr();
    asyncio::run([]() -> Coroutine<> { co_await asyncio::sleep(1ms); }(), chaos_options(17));
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST_F(Testing, AnErrorReportedByTheLoopPrintsTheSeedOnce) {
    ::testing::internal::CaptureStderr();
    asyncio::run([]() -> Coroutine<> {
        auto& loop = asyncio::get_running_loop();
        loop.call_soon([] { throw asyncio::ValueError("first"); });
        loop.call_soon([] { throw asyncio::ValueError("second"); });
        co_await asyncio::sleep(0s);
    }(), chaos_options(99));
    const std::string err = ::testing::internal::GetCapturedStderr();
    const std::string line = "asyncio::testing: seed 99 (rerun with ASYNCIO_SEED=99)";
    const auto at = err.find(line);
    EXPECT_NE(at, std::string::npos) << err;
    EXPECT_EQ(err.find(line, at + 1), std::string::npos) << err;
}

// ---- switching it on ----

TEST_F(Testing, TheEnvironmentTurnsChaosOnForEveryNewLoop) {
    {
        ScopedEnv seed("ASYNCIO_SEED", "18446744073709551615");
        ScopedEnv faults("ASYNCIO_FAULTS", "short_reads, eagain");
        asyncio::EventLoop loop;
        const auto chaos = asyncio::testing::chaos_of(loop);
        ASSERT_TRUE(chaos.has_value());
        EXPECT_EQ(chaos->seed, 18446744073709551615ull);
        EXPECT_TRUE(chaos->faults.short_reads);
        EXPECT_TRUE(chaos->faults.eagain);
        EXPECT_FALSE(chaos->faults.partial_writes);
        EXPECT_FALSE(chaos->faults.slow_connect);
    }
    {
        ScopedEnv seed("ASYNCIO_SEED", nullptr);
        ScopedEnv faults("ASYNCIO_FAULTS", nullptr);
        asyncio::EventLoop loop;
        EXPECT_FALSE(asyncio::testing::chaos_of(loop).has_value());
        // An option wins over the environment.
        asyncio::testing::enable_chaos(loop, Chaos{3, Faults::all()});
        EXPECT_EQ(asyncio::testing::chaos_of(loop)->seed, 3u);
        asyncio::testing::enable_chaos(loop, std::nullopt);
        EXPECT_FALSE(asyncio::testing::chaos_of(loop).has_value());
    }
}

TEST_F(Testing, MalformedSettingsRaiseValueError) {
    {
        ScopedEnv seed("ASYNCIO_SEED", "12x");
        EXPECT_THROW(asyncio::EventLoop(), asyncio::ValueError);
    }
    {
        ScopedEnv seed("ASYNCIO_SEED", "-1");
        EXPECT_THROW(asyncio::EventLoop(), asyncio::ValueError);
    }
    {
        ScopedEnv seed("ASYNCIO_SEED", nullptr);
        ScopedEnv faults("ASYNCIO_FAULTS", "short_reads,lost_packets");
        EXPECT_THROW(asyncio::EventLoop(), asyncio::ValueError);
    }
    EXPECT_TRUE(Faults::parse("all").slow_connect);
    EXPECT_FALSE(Faults::parse("none").any());
}

TEST_F(Testing, ChaosCannotChangeWhileTheLoopRuns) {
    asyncio::run([]() -> Coroutine<> {
        EXPECT_THROW(asyncio::testing::enable_chaos(asyncio::get_running_loop(), Chaos{1, {}}),
                     asyncio::RuntimeError);
        co_return;
    }());
}

}  // namespace
