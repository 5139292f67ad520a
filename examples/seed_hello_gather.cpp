// The seed's asyncio program (examples/seed/hello_gather.py), line by line:
//
//   async def hello(name):                        Coroutine<std::string> hello(std::string name)
//       print("Hello %s! (%s)" % (name, thread))    std::printf(...)
//       await asyncio.sleep(1)                      co_await asyncio::sleep(1s);
//       print("Hello %s again! (%s)" % ...)         std::printf(...)
//       return name                                 co_return name;
//   async def main():                             Coroutine<> main_()
//       L = await asyncio.gather(hello("Bob"),      auto L = co_await asyncio::gather(
//                                hello("Alice"))        hello("Bob"), hello("Alice"));
//       print(L)                                    print_list(L);
//   asyncio.run(main())                           asyncio::run(main_());
//
// Both hellos run concurrently on one thread: both "Hello" lines, then after one second (not two)
// both "again" lines, then ['Bob', 'Alice']. The seed prints the function object
// `threading.current_thread` (a slip: it is not called); we print what calling it would show, the
// thread, so that every line shows it is the same one.
#include <pthread.h>

#include <asyncio/asyncio.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <tuple>

using namespace std::chrono_literals;

namespace {

std::string current_thread() {
    return "<_MainThread(MainThread, started " +
           std::to_string(static_cast<unsigned long>(pthread_self())) + ")>";
}

asyncio::Coroutine<std::string> hello(std::string name) {
    std::printf("Hello %s! (%s)\n", name.c_str(), current_thread().c_str());
    co_await asyncio::sleep(1s);
    std::printf("Hello %s again! (%s)\n", name.c_str(), current_thread().c_str());
    co_return name;
}

asyncio::Coroutine<> main_() {
    auto L = co_await asyncio::gather(hello("Bob"), hello("Alice"));
    std::printf("['%s', '%s']\n", std::get<0>(L).c_str(), std::get<1>(L).c_str());
}

}  // namespace

int main() {
    asyncio::run(main_());
    return 0;
}
