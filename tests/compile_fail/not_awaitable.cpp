// Arguments a combinator cannot await must be refused with one readable static_assert, the first
// error the compiler prints, naming the argument's type. not_awaitable.cmake builds this file once
// per CASE with -DBAD (must fail, with the expected message first and the type named) and once
// without (must build: the same call with an awaitable).
#include <chrono>
#include <string>
#include <vector>

#include "asyncio/asyncio.hpp"

using namespace std::chrono_literals;

struct NotAwaitable {};

asyncio::Coroutine<int> answer() {
    co_return 42;
}

#ifdef BAD
#define ARG \
    NotAwaitable {}
#define VEC std::vector<NotAwaitable>(1)
#else
#define ARG answer()
#define VEC std::vector<asyncio::Coroutine<int>>()
#endif

asyncio::Coroutine<> misuse() {
#if CASE == 1
    (void)asyncio::create_task(ARG);
#elif CASE == 2
    (void)asyncio::ensure_future(ARG);
#elif CASE == 3
    co_await asyncio::wait_for(ARG, 1s);
#elif CASE == 4
    co_await asyncio::shield(ARG);
#elif CASE == 5
    co_await asyncio::gather(answer(), ARG);
#elif CASE == 6
    co_await asyncio::wait(VEC);
#elif CASE == 7
    for (auto next : asyncio::as_completed(VEC)) co_await next;
#elif CASE == 8
    asyncio::TaskGroup tg;
    (void)tg.create_task(ARG);
    co_await tg.wait();
#elif CASE == 9
    asyncio::Timeout t = asyncio::timeout(1s);
    co_await t.run(ARG);
#elif CASE == 10
    co_await asyncio::gather(VEC);
#elif CASE == 11  // a callable whose result is not awaitable
#ifdef BAD
    (void)asyncio::create_task([] { return 42; });
#else
    (void)asyncio::create_task([] { return answer(); });
#endif
#elif CASE == 12  // a Coroutine runs once: an lvalue cannot be handed over
    asyncio::Coroutine<int> c = answer();
#ifdef BAD
    (void)asyncio::create_task(c);
#else
    (void)asyncio::create_task(std::move(c));
#endif
#elif CASE == 13  // only a name may follow an awaitable
#ifdef BAD
    (void)asyncio::create_task(answer(), 42);
#else
    (void)asyncio::create_task(answer(), "name");
#endif
#endif
    co_return;
}

int main() {
    return 0;
}
