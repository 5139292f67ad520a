// core_bench: the core runtime's costs, one machine-readable line per case:
//   case=NAME n=N ns_per_op=X bytes_per_task=Y
// Each case runs in a process of its own (without --case the binary re-runs itself once per case),
// so that peak RSS belongs to that case alone. bench/peers/core_bench.py runs the same workloads on
// Python asyncio/uvloop; bench/run_core_bench.sh runs both and prints the ratios.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asyncio/asyncio.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

long rss_bytes_now() {
    std::ifstream statm("/proc/self/statm");
    long pages = 0, resident = 0;
    statm >> pages >> resident;
    return resident * sysconf(_SC_PAGESIZE);
}

long peak_rss_bytes() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "core_bench: check failed: %s\n", what);
    std::exit(1);
}

void report(const char* name, long n, double ns_total, long base_rss, bool with_bytes) {
    const long bytes = with_bytes ? (peak_rss_bytes() - base_rss) / n : 0;
    std::printf("case=%s n=%ld ns_per_op=%.1f bytes_per_task=%ld\n", name, n, ns_total / n,
                bytes < 0 ? 0 : bytes);
    std::fflush(stdout);
}

double since(Clock::time_point t0) {
    return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
}

// ---- spawn: n tasks returning their index, gathered, sum checked ----
asyncio::Coroutine<long> index_of(long i) { co_return i; }

asyncio::Coroutine<> spawn_main(long n) {
    std::vector<asyncio::Task<long>> tasks;
    tasks.reserve(n);
    for (long i = 0; i < n; ++i) tasks.push_back(asyncio::create_task(index_of(i)));
    std::vector<long> results = co_await asyncio::gather(std::move(tasks));
    long sum = 0;
    for (long v : results) sum += v;
    if (sum != n * (n - 1) / 2) fail("spawn sum");
}

// ---- sleepers: n tasks sleeping 100 ms at once ----
asyncio::Coroutine<> sleeper() { co_await asyncio::sleep(100ms); }

asyncio::Coroutine<> sleepers_main(long n) {
    std::vector<asyncio::Task<>> tasks;
    tasks.reserve(n);
    for (long i = 0; i < n; ++i) tasks.push_back(asyncio::create_task(sleeper()));
    auto done = co_await asyncio::gather(std::move(tasks));
    if (static_cast<long>(done.size()) != n) fail("sleepers count");
}

// ---- pingpong: two tasks hand an int back and forth through Events ----
struct PingPong {
    asyncio::Event to_a, to_b;
    long value = 0;
};

asyncio::Coroutine<> ping(PingPong& s, long n) {
    for (long i = 0; i < n; ++i) {
        ++s.value;
        s.to_b.set();
        co_await s.to_a.wait();
        s.to_a.clear();
    }
}

asyncio::Coroutine<> pong(PingPong& s, long n) {
    for (long i = 0; i < n; ++i) {
        co_await s.to_b.wait();
        s.to_b.clear();
        ++s.value;
        s.to_a.set();
    }
}

asyncio::Coroutine<> pingpong_main(long n) {
    PingPong s;
    co_await asyncio::gather(ping(s, n), pong(s, n));
    if (s.value != 2 * n) fail("pingpong count");
}

// ---- future_roundtrip: a request and a reply through two fresh Futures per round trip (each
// side awaits a future the other sets: create_future, set_result, wake, resume, twice) ----
struct FutureRoundTrip {
    asyncio::Future<long> request, reply;
};

asyncio::Coroutine<> future_server(FutureRoundTrip& s, long n) {
    asyncio::EventLoop& loop = asyncio::get_running_loop();
    for (long i = 0; i < n; ++i) {
        s.request = loop.create_future<long>();
        const long v = co_await asyncio::Future<long>(s.request);
        s.reply.set_result(v + 1);
    }
}

asyncio::Coroutine<> future_client(FutureRoundTrip& s, long n) {
    asyncio::EventLoop& loop = asyncio::get_running_loop();
    long v = 0;
    for (long i = 0; i < n; ++i) {
        s.reply = loop.create_future<long>();
        s.request.set_result(v);
        v = co_await asyncio::Future<long>(s.reply);
    }
    if (v != n) fail("future roundtrip value");
}

asyncio::Coroutine<> future_roundtrip_main(long n) {
    FutureRoundTrip s;
    co_await asyncio::gather(future_server(s, n), future_client(s, n));
}

// ---- queue_pingpong: the same hand-off through two Queues ----
asyncio::Coroutine<> queue_ping(asyncio::Queue<long>& to_b, asyncio::Queue<long>& to_a, long n) {
    long v = 0;
    for (long i = 0; i < n; ++i) {
        co_await to_b.put(v + 1);
        v = co_await to_a.get();
    }
    if (v != 2 * n) fail("queue pingpong value");
}

asyncio::Coroutine<> queue_pong(asyncio::Queue<long>& to_b, asyncio::Queue<long>& to_a, long n) {
    for (long i = 0; i < n; ++i) {
        const long v = co_await to_b.get();
        co_await to_a.put(v + 1);
    }
}

asyncio::Coroutine<> queue_pingpong_main(long n) {
    asyncio::Queue<long> to_a, to_b;
    co_await asyncio::gather(queue_ping(to_b, to_a, n), queue_pong(to_b, to_a, n));
}

// ---- lock_handoff: two tasks take turns on one Lock (every acquire waits for the other) ----
asyncio::Coroutine<> lock_worker(asyncio::Lock& lock, long& turns, long n) {
    for (long i = 0; i < n; ++i) {
        co_await lock.acquire();
        ++turns;
        co_await asyncio::sleep(0s);  // hold it across a yield: the other task queues up
        lock.release();
    }
}

asyncio::Coroutine<> lock_handoff_main(long n) {
    asyncio::Lock lock;
    long turns = 0;
    co_await asyncio::gather(lock_worker(lock, turns, n / 2), lock_worker(lock, turns, n / 2));
    if (turns != n / 2 * 2) fail("lock turns");
}

// ---- lock_uncontended: acquire + release with nobody else ----
asyncio::Coroutine<> lock_uncontended_main(long n, double* ns) {
    asyncio::Lock lock;
    long turns = 0;
    const auto t0 = Clock::now();
    for (long i = 0; i < n; ++i) {
        co_await lock.acquire();
        ++turns;
        lock.release();
    }
    *ns = since(t0);
    if (turns != n) fail("lock turns");
}

// ---- generator_send: n sends into a consumer generator ----
asyncio::Generator<long, long> consumer() {
    long r = 0;
    for (;;) {
        auto v = co_yield r;
        r = *v + 1;
    }
}

// ---- timer_cancel: n call_later timers created, then cancelled ----
asyncio::Coroutine<> timer_cancel_main(long n, double* ns) {
    auto& loop = asyncio::get_running_loop();
    std::vector<asyncio::TimerHandle> handles;
    handles.reserve(n);
    long fired = 0;
    const auto t0 = Clock::now();
    for (long i = 0; i < n; ++i) handles.push_back(loop.call_later(10s, [&fired] { ++fired; }));
    for (auto& h : handles) h.cancel();
    *ns = since(t0);
    co_await asyncio::sleep(0s);
    if (fired != 0) fail("timer fired");
}

// ---- wait_for_ready: wait_for around a coroutine whose value is ready at once ----
asyncio::Coroutine<long> ready_value(long i) { co_return i; }

asyncio::Coroutine<> wait_for_ready_main(long n) {
    long sum = 0;
    for (long i = 0; i < n; ++i) sum += co_await asyncio::wait_for(ready_value(i), 1s);
    if (sum != n * (n - 1) / 2) fail("wait_for sum");
}

// ---- taskgroup: n tasks in one TaskGroup ----
asyncio::Coroutine<> add_to(long& sum, long i) {
    sum += i;
    co_return;
}

asyncio::Coroutine<> taskgroup_main(long n) {
    long sum = 0;
    asyncio::TaskGroup tg;
    for (long i = 0; i < n; ++i) tg.create_task(add_to(sum, i));
    co_await tg.wait();
    if (sum != n * (n - 1) / 2) fail("taskgroup sum");
}

// ---- threadsafe_post: n callbacks posted with call_soon_threadsafe from other threads ----
// `producers` threads post n / producers callbacks each to a loop that has nothing else to do; the
// last callback to run ends the case. One op = one post, from the producers' start to the last
// callback run (the loop's drain and run of it included).
asyncio::Coroutine<> threadsafe_post_main(long per_producer, int producers) {
    auto& loop = asyncio::get_running_loop();
    asyncio::Event done;
    long ran = 0;
    const long total = per_producer * producers;
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(producers));
    for (int t = 0; t < producers; ++t) {
        threads.emplace_back([&loop, &ran, &done, per_producer, total] {
            for (long i = 0; i < per_producer; ++i) {
                loop.call_soon_threadsafe([&ran, &done, total] {
                    if (++ran == total) done.set();
                });
            }
        });
    }
    co_await done.wait();
    for (auto& t : threads) t.join();
    if (ran != total) fail("threadsafe_post count");
}

int run_case(const std::string& name, long n) {
    const long base = rss_bytes_now();
    if (name == "spawn") {
        if (n <= 0) n = 1'000'000;
        const auto t0 = Clock::now();
        asyncio::run(spawn_main(n));
        report("spawn", n, since(t0), base, true);
    } else if (name == "sleepers") {
        if (n <= 0) n = 1'000'000;
        const auto t0 = Clock::now();
        asyncio::run(sleepers_main(n));
        report("sleepers", n, since(t0) - 100e6, base, true);
    } else if (name == "pingpong") {
        if (n <= 0) n = 1'000'000;
        const auto t0 = Clock::now();
        asyncio::run(pingpong_main(n));
        report("pingpong", n, since(t0), base, false);
    } else if (name == "generator_send") {
        if (n <= 0) n = 10'000'000;
        auto gen = consumer();
        gen.next();
        long r = 0;
        const auto t0 = Clock::now();
        for (long i = 0; i < n; ++i) r = gen.send(i);
        const double ns = since(t0);
        if (r != n) fail("generator result");
        report("generator_send", n, ns, base, false);
    } else if (name == "timer_cancel") {
        if (n <= 0) n = 1'000'000;
        double ns = 0;
        asyncio::run(timer_cancel_main(n, &ns));
        report("timer_cancel", n, ns, base, true);
    } else if (name == "future_roundtrip") {
        if (n <= 0) n = 1'000'000;
        const auto t0 = Clock::now();
        asyncio::run(future_roundtrip_main(n));
        report("future_roundtrip", n, since(t0), base, false);
    } else if (name == "queue_pingpong") {
        if (n <= 0) n = 1'000'000;
        const auto t0 = Clock::now();
        asyncio::run(queue_pingpong_main(n));
        report("queue_pingpong", n, since(t0), base, false);
    } else if (name == "lock_handoff") {
        if (n <= 0) n = 1'000'000;
        const auto t0 = Clock::now();
        asyncio::run(lock_handoff_main(n));
        report("lock_handoff", n, since(t0), base, false);
    } else if (name == "lock_uncontended") {
        if (n <= 0) n = 10'000'000;
        double ns = 0;
        asyncio::run(lock_uncontended_main(n, &ns));
        report("lock_uncontended", n, ns, base, false);
    } else if (name == "wait_for_ready") {
        if (n <= 0) n = 1'000'000;
        const auto t0 = Clock::now();
        asyncio::run(wait_for_ready_main(n));
        report("wait_for_ready", n, since(t0), base, false);
    } else if (name == "taskgroup") {
        if (n <= 0) n = 1'000'000;
        const auto t0 = Clock::now();
        asyncio::run(taskgroup_main(n));
        report("taskgroup", n, since(t0), base, true);
    } else if (name == "threadsafe_post" || name == "threadsafe_post2") {
        // threadsafe_post: one producer thread; threadsafe_post2: two at once (n in all).
        if (n <= 0) n = 1'000'000;
        const int producers = name == "threadsafe_post" ? 1 : 2;
        n = n / producers * producers;
        const auto t0 = Clock::now();
        asyncio::run(threadsafe_post_main(n / producers, producers));
        report(name.c_str(), n, since(t0), base, false);
    } else {
        std::fprintf(stderr, "core_bench: unknown case '%s'\n", name.c_str());
        return 2;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string only;
    long n = 0;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--case") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (std::strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
            n = std::atol(argv[++i]);
        } else {
            std::fprintf(stderr,
                         "usage: core_bench [--case spawn|sleepers|pingpong|generator_send|"
                         "timer_cancel|wait_for_ready|taskgroup|queue_pingpong|lock_handoff|"
                         "lock_uncontended|future_roundtrip|threadsafe_post|threadsafe_post2] "
                         "[--n N]\n");
            return 2;
        }
    }
    if (!only.empty()) return run_case(only, n);

    struct Run {
        const char* name;
        long n;
    };
    const Run all[] = {{"spawn", 1'000'000},         {"sleepers", 100'000},
                       {"sleepers", 1'000'000},      {"pingpong", 1'000'000},
                       {"generator_send", 10'000'000}, {"timer_cancel", 1'000'000},
                       {"wait_for_ready", 1'000'000}, {"taskgroup", 1'000'000},
                       {"queue_pingpong", 1'000'000}, {"lock_handoff", 1'000'000},
                       {"lock_uncontended", 10'000'000}, {"future_roundtrip", 1'000'000},
                       {"threadsafe_post", 1'000'000},   {"threadsafe_post2", 1'000'000}};
    int rc = 0;
    for (const Run& r : all) {
        const pid_t pid = fork();
        if (pid == 0) _exit(run_case(r.name, r.n));
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
    }
    return rc;
}
