// asyncio::Awaitable<A>: what `co_await a` accepts inside an asyncio coroutine (Python's
// "awaitable"), and asyncio::await_result_t<A>: what it evaluates to.
//
//   static_assert(asyncio::Awaitable<decltype(asyncio::sleep(1s))>);
//   asyncio::await_result_t<asyncio::Coroutine<int>>   // int
//
// An awaitable is an object with a member or a free operator co_await, or an awaiter itself (the
// three members await_ready(), await_suspend(handle), await_resume()). Every combinator of the
// library takes any of them: our coroutines, tasks and futures, the awaiters that sleep(), the
// synchronization primitives, the queues and the socket operations return, and a type of yours.
//
// A combinator that must keep an awaitable beyond the expression that made it (create_task,
// gather, wait_for, shield, ...) moves it into a coroutine frame of its own (or, for a Task, keeps
// a handle to the same task): it must be move-constructible (every awaiter of the library is,
// until it is first awaited) and, if it refers to something (a Lock, an Event, a socket), that
// thing must outlive the await, as for any co_await.
#pragma once

#include <concepts>
#include <coroutine>
#include <type_traits>
#include <utility>

#include "asyncio/coroutine.hpp"
#include "asyncio/detail/get_awaiter.hpp"

namespace asyncio {

namespace detail {

template <class R>
inline constexpr bool is_coroutine_handle_v = false;
template <class P>
inline constexpr bool is_coroutine_handle_v<std::coroutine_handle<P>> = true;

/// await_suspend may return void, bool or a coroutine handle (the standard's three forms).
template <class R>
inline constexpr bool is_suspend_result_v =
    std::is_void_v<R> || std::is_same_v<R, bool> || is_coroutine_handle_v<R>;

template <class W>
concept is_awaiter = requires(W& w, std::coroutine_handle<> h) {
    { w.await_ready() } -> std::convertible_to<bool>;
    w.await_suspend(h);
    w.await_resume();
}
&&is_suspend_result_v<decltype(std::declval<W&>().await_suspend(std::coroutine_handle<>()))>;

}  // namespace detail

/// True when `co_await std::declval<A>()` is valid in a coroutine of this library.
template <class A>
concept Awaitable = detail::is_awaiter<detail::awaiter_t<A>>;

/// The type of `co_await std::declval<A>()`.
template <Awaitable A>
using await_result_t = decltype(std::declval<detail::awaiter_t<A>&>().await_resume());

namespace detail {

/// What a frame that awaits an A keeps: the result by value (an rvalue reference becomes a value),
/// an lvalue reference as it is.
template <class A>
using awaited_value_t =
    std::conditional_t<std::is_lvalue_reference_v<await_result_t<A>>, await_result_t<A>,
                       std::remove_cvref_t<await_result_t<A>>>;

template <class A>
inline constexpr bool is_coroutine_v = false;
template <class T>
inline constexpr bool is_coroutine_v<Coroutine<T>> = true;

// The checks behind the library's static_asserts. Each is a variable template of the argument's
// type, so that the compiler's message names the type ("'...argument_is_awaitable<Foo>' evaluates
// to false" with GCC, "requirement '...argument_is_awaitable<Foo>'" with Clang).
template <class A>
inline constexpr bool argument_is_awaitable = Awaitable<A>;
/// Can be kept in a frame: copied or moved in (a Coroutine only moved: it runs once).
template <class A>
inline constexpr bool awaitable_can_be_kept = std::is_constructible_v<std::decay_t<A>, A&&> &&
                                              (!is_coroutine_v<std::remove_cvref_t<A>> ||
                                               !std::is_lvalue_reference_v<A>);
/// An A can be kept and awaited later: what is awaited is the kept copy, as an rvalue.
template <class A>
inline constexpr bool storable_awaitable = awaitable_can_be_kept<A>&& Awaitable<std::decay_t<A>>;

/// What a combinator whose static_assert failed returns: awaitable and iterable, so that the
/// static_assert is the only error (no "void is not awaitable" after it).
struct Refused {
    bool await_ready() const noexcept { return true; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    void await_resume() const noexcept {}
    const Refused* begin() const noexcept { return this; }
    const Refused* end() const noexcept { return this; }
};

/// The one readable error for an argument that a combinator cannot await later.
template <class A>
constexpr auto require_storable_awaitable() {  // auto: checked where it is named, first
    static_assert(argument_is_awaitable<std::decay_t<A>>,
                  "asyncio: argument is not awaitable (needs operator co_await or "
                  "await_ready/await_suspend/await_resume)");
    if constexpr (argument_is_awaitable<std::decay_t<A>>)
        static_assert(awaitable_can_be_kept<A>,
                      "asyncio: the awaitable cannot be moved into the frame that awaits it (a "
                      "Coroutine runs once: pass std::move(coro); a non-movable awaiter: pass a "
                      "callable that makes it, create_task(f, args...))");
}

}  // namespace detail

}  // namespace asyncio
