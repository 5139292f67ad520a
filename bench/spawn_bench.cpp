// Spawn-and-wait and pipe throughput of subprocesses, against a blocking reference in the same
// binary. One machine-readable line per case (see bench/README.md, "Subprocesses").
//
//   spawn_bench --impl ours|blocking --case spawn --n N --parallel P [--program /bin/true]
//       N children of PROGRAM, at most P at once; ours: create_subprocess_exec + wait() in P
//       tasks; blocking: posix_spawn + waitpid (P spawned, then P reaped, in turn).
//   spawn_bench --impl ours --case cat --bytes B
//       B bytes written to `cat` and read back at once through our pipes (write/drain in one
//       task, read in another).
//   spawn_bench --impl ours --case communicate --bytes B
//       the same with Process::communicate(B bytes) (the input and the output in memory).
#include <asyncio/asyncio.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void blocking_spawn(const char* program, int n, int parallel) {
    char* argv[] = {const_cast<char*>(program), nullptr};
    std::vector<pid_t> pids;
    for (int done = 0; done < n;) {
        pids.clear();
        for (int i = 0; i < parallel && done + i < n; ++i) {
            pid_t pid;
            if (::posix_spawn(&pid, program, nullptr, nullptr, argv, environ) != 0) std::abort();
            pids.push_back(pid);
        }
        for (pid_t pid : pids) {
            int status;
            while (::waitpid(pid, &status, 0) < 0) {
            }
        }
        done += static_cast<int>(pids.size());
    }
}

asyncio::Coroutine<> ours_worker(const char* program, int count) {
    for (int i = 0; i < count; ++i) {
        asyncio::Process p = co_await asyncio::create_subprocess_exec(program);
        if (co_await p.wait() != 0) std::abort();
    }
}

asyncio::Coroutine<> ours_spawn(const char* program, int n, int parallel) {
    std::vector<asyncio::Coroutine<>> workers;
    for (int w = 0; w < parallel; ++w) workers.push_back(ours_worker(program, n / parallel + (w < n % parallel ? 1 : 0)));
    co_await asyncio::gather(std::move(workers));
}

asyncio::Coroutine<> feed(asyncio::StreamWriter w, std::size_t bytes) {
    const std::string block(1 << 20, 'x');
    for (std::size_t sent = 0; sent < bytes; sent += block.size()) {
        w.write(std::string_view(block).substr(0, std::min(block.size(), bytes - sent)));
        co_await w.drain();
    }
    w.close();
    co_await w.wait_closed();
}

asyncio::Coroutine<std::size_t> drain_all(asyncio::StreamReader r) {
    std::size_t got = 0;
    for (;;) {
        const std::string part = co_await r.read(1 << 20);
        if (part.empty()) co_return got;
        got += part.size();
    }
}

asyncio::Coroutine<> ours_cat(std::size_t bytes) {
    using asyncio::subprocess::PIPE;
    asyncio::Process p = co_await asyncio::create_subprocess_exec("cat", asyncio::SubprocessOptions{.stdin = PIPE, .stdout = PIPE});
    auto [x, got] = co_await asyncio::gather(feed(*p.stdin, bytes), drain_all(*p.stdout));
    (void)x;
    if (got != bytes || co_await p.wait() != 0) std::abort();
}

asyncio::Coroutine<> ours_communicate(std::size_t bytes) {
    using asyncio::subprocess::PIPE;
    asyncio::Process p = co_await asyncio::create_subprocess_exec("cat", asyncio::SubprocessOptions{.stdin = PIPE, .stdout = PIPE});
    auto [out, err] = co_await p.communicate(std::string(bytes, 'x'));
    if (out.size() != bytes || !err.empty() || p.returncode() != 0) std::abort();
}

}  // namespace

int main(int argc, char** argv) {
    std::string impl = "ours", kase = "spawn";
    const char* program = "/bin/true";
    int n = 2000, parallel = 1;
    std::size_t bytes = std::size_t{1} << 30;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i];
        const char* v = argv[i + 1];
        if (k == "--impl") impl = v;
        else if (k == "--case") kase = v;
        else if (k == "--n") n = std::atoi(v);
        else if (k == "--parallel") parallel = std::atoi(v);
        else if (k == "--program") program = v;
        else if (k == "--bytes") bytes = std::strtoull(v, nullptr, 10);
        else {
            std::fprintf(stderr, "unknown option %s\n", k.c_str());
            return 2;
        }
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (kase == "spawn") {
        if (impl == "blocking")
            blocking_spawn(program, n, parallel);
        else
            asyncio::run(ours_spawn(program, n, parallel));
        const double s = seconds_since(t0);
        std::printf("case=spawn impl=%s parallel=%d n=%d seconds=%.3f per_s=%.1f\n", impl.c_str(), parallel, n, s, n / s);
    } else if (kase == "cat" || kase == "communicate") {
        asyncio::run(kase == "cat" ? ours_cat(bytes) : ours_communicate(bytes));
        const double s = seconds_since(t0);
        std::printf("case=%s impl=%s bytes=%zu seconds=%.3f mib_per_s=%.1f\n", kase.c_str(), impl.c_str(), bytes, s,
                    static_cast<double>(bytes) / (1 << 20) / s);
    } else {
        std::fprintf(stderr, "unknown case %s\n", kase.c_str());
        return 2;
    }
}
