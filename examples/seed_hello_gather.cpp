#include <asyncio/coroutine.hpp>
#include <asyncio/task.hpp>
#include <asyncio/sleep.hpp>
#include <asyncio/gather.hpp>
#include <asyncio/run.hpp>
#include <cstdio>
#include <chrono>
using namespace std::chrono_literals;
asyncio::Coroutine<std::string> hello(std::string name) {
    std::printf("Hello %s!\n", name.c_str());
    co_await asyncio::sleep(1s);
    std::printf("Hello %s again!\n", name.c_str());
    co_return name;
}
asyncio::Coroutine<int> main2() {
    auto [a, b] = co_await asyncio::gather(hello("Bob"), hello("Alice"));
    std::printf("['%s', '%s']\n", a.c_str(), b.c_str());
    co_return 3;
}
int main() { return asyncio::run(main2()) == 3 ? 0 : 1; }
