// asyncio's documentation example for subprocesses: run shell commands concurrently, print each
// one's exit status, stdout and stderr.
//
//   run_command                      runs 'ls /zzz' and 'sleep 1; echo "hello"' (the docs' pair)
//   run_command CMD [CMD...]         runs the given commands
//
// Python:
//   async def run(cmd):
//       proc = await asyncio.create_subprocess_shell(cmd, stdout=PIPE, stderr=PIPE)
//       stdout, stderr = await proc.communicate()
//       print(f'[{cmd!r} exited with {proc.returncode}]')
//       if stdout: print(f'[stdout]\n{stdout.decode()}')
//       if stderr: print(f'[stderr]\n{stderr.decode()}')
#include <asyncio/asyncio.hpp>

#include <cstdio>
#include <string>
#include <vector>

using asyncio::subprocess::PIPE;

asyncio::Coroutine<> run(std::string cmd) {
    asyncio::Process proc = co_await asyncio::create_subprocess_shell(cmd, {.stdout = PIPE, .stderr = PIPE});
    auto [out, err] = co_await proc.communicate();
    std::printf("['%s' exited with %d]\n", cmd.c_str(), *proc.returncode());
    if (!out.empty()) std::printf("[stdout]\n%s\n", out.c_str());
    if (!err.empty()) std::printf("[stderr]\n%s\n", err.c_str());
}

asyncio::Coroutine<> main_(std::vector<std::string> cmds) {
    std::vector<asyncio::Coroutine<>> runs;
    for (std::string& c : cmds) runs.push_back(run(std::move(c)));
    co_await asyncio::gather(std::move(runs));
}

int main(int argc, char** argv) {
    std::vector<std::string> cmds(argv + 1, argv + argc);
    if (cmds.empty()) cmds = {"ls /zzz", "sleep 1; echo \"hello\""};
    asyncio::run(main_(std::move(cmds)));
}
