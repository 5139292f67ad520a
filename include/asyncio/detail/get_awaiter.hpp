// What `co_await a` calls await_ready/await_suspend/await_resume on (the Awaitable concept,
// asyncio/awaitable.hpp).
#pragma once

#include <type_traits>
#include <utility>

namespace asyncio::detail {

template <class A>
concept has_member_co_await = requires(A&& a) {
    static_cast<A&&>(a).operator co_await();
};
template <class A>
concept has_free_co_await = requires(A&& a) {
    operator co_await(static_cast<A&&>(a));
};

/// What `co_await a` calls await_ready/await_suspend/await_resume on (as co_await chooses it, with
/// a member operator co_await preferred to a free one).
template <class A>
decltype(auto) get_awaiter(A&& a) {
    if constexpr (has_member_co_await<A>)
        return static_cast<A&&>(a).operator co_await();
    else if constexpr (has_free_co_await<A>)
        return operator co_await(static_cast<A&&>(a));
    else
        return static_cast<A&&>(a);
}
template <class A>
using awaiter_t = std::remove_reference_t<decltype(get_awaiter(std::declval<A>()))>;

}  // namespace asyncio::detail
