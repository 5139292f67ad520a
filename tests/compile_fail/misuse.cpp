// Misuse that must not build under the project's warning flags: an awaitable of the library
// created and dropped without co_await does nothing (the lock stays unlocked, nothing sleeps).
// compile_fail.cmake builds this file once per CASE with -DDISCARD (must fail, naming
// [[nodiscard]]) and once without (must build: the same line with co_await).
#include <chrono>

#include "asyncio/asyncio.hpp"

using namespace std::chrono_literals;

#ifdef DISCARD
#define USE(x) x
#else
#define USE(x) co_await x
#endif

asyncio::Coroutine<int> answer() { co_return 42; }

asyncio::Coroutine<> misuse(asyncio::Lock& lock, asyncio::Event& ev, asyncio::Semaphore& sem,
                            asyncio::Queue<int>& q, asyncio::Condition& cond, asyncio::Socket& sock) {
#if CASE == 1
    USE(asyncio::sleep(1s));
#elif CASE == 2
    USE(lock.acquire());
#elif CASE == 3
    USE(ev.wait());
#elif CASE == 4
    USE(sem.acquire());
#elif CASE == 5
    USE(q.get());
#elif CASE == 6
    USE(q.put(1));
#elif CASE == 7
    USE(answer());
#elif CASE == 8
    USE(asyncio::sock_recv(sock, 10));
#elif CASE == 9
    co_await cond.acquire();
    USE(cond.wait());
    cond.release();
#elif CASE == 10
#ifdef DISCARD
    lock.lock();
#else
    auto guard = co_await lock.lock();  // (the guard itself is [[nodiscard]] too)
#endif
#endif
    (void)lock;
    (void)ev;
    (void)sem;
    (void)q;
    (void)cond;
    (void)sock;
    co_return;
}

int main() { return 0; }
