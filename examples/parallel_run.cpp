// Runs shell commands with at most K at once, like `xargs -P K -I{} sh -c {}`: each command's
// output is printed in one piece when it finishes, and the exit status is the number of commands
// that failed (capped at 100).
//
//   parallel_run K CMD [CMD...]
//   parallel_run 4 'sleep 1; echo a' 'sleep 1; echo b' 'false' 'echo c'
#include <asyncio/asyncio.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using asyncio::subprocess::PIPE;
using asyncio::subprocess::STDOUT;

asyncio::Coroutine<bool> run_one(asyncio::Semaphore& slots, std::string cmd) {
    co_await slots.acquire();
    asyncio::Process p = co_await asyncio::create_subprocess_shell(cmd, {.stdout = PIPE, .stderr = STDOUT});
    auto out = (co_await p.communicate()).first;
    slots.release();
    std::printf("$ %s  (exit %d)\n%s", cmd.c_str(), *p.returncode(), out.c_str());
    std::fflush(stdout);
    co_return *p.returncode() == 0;
}

asyncio::Coroutine<int> main_(int k, std::vector<std::string> cmds) {
    asyncio::Semaphore slots(k);
    std::vector<asyncio::Coroutine<bool>> runs;
    for (std::string& c : cmds) runs.push_back(run_one(slots, std::move(c)));
    int failed = 0;
    for (bool ok : co_await asyncio::gather(std::move(runs))) failed += ok ? 0 : 1;
    co_return failed;
}

int main(int argc, char** argv) {
    if (argc < 3 || std::atoi(argv[1]) < 1) {
        std::fprintf(stderr, "usage: %s K CMD [CMD...]\n", argv[0]);
        return 2;
    }
    const int failed = asyncio::run(main_(std::atoi(argv[1]), std::vector<std::string>(argv + 2, argv + argc)));
    return failed > 100 ? 100 : failed;
}
