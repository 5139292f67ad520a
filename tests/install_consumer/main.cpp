// A program outside the project, built against the installed package.
#include <asyncio/asyncio.hpp>
#include <chrono>
#include <cstdio>

using namespace std::chrono_literals;

asyncio::Coroutine<int> twice(int x) {
    co_await asyncio::sleep(1ms);
    co_return 2 * x;
}

asyncio::Coroutine<int> main_() {
    auto [a, b] = co_await asyncio::gather(twice(1), twice(20));
    co_return a + b;
}

int main() {
    const int v = asyncio::run(main_());
    std::printf("consumer: %d\n", v);
    return v == 42 ? 0 : 1;
}
