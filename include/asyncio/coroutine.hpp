// asyncio::Coroutine<T>: what calling an async function returns (Python's coroutine object).
// It is lazy: nothing runs until it is co_awaited (inside the current task, like `await coro`) or
// handed to create_task() (as a new task). `co_await coro` yields its value or rethrows its
// exception, and resumes the awaiter by symmetric transfer, so a million synchronous completions in
// a row use no stack. A coroutine can be awaited once; destroying one that never ran frees it and
// reports "coroutine 'NAME' was never awaited" (with where it is defined) to the loop's exception
// handler, as Python warns.
//
//   asyncio::Coroutine<int> answer() { co_return 42; }
//   asyncio::Coroutine<> main() { int v = co_await answer(); }
#pragma once

#include <coroutine>
#include <utility>

#include "asyncio/detail/config.hpp"
#include "asyncio/detail/promise.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {

template <class T = void>
class [[nodiscard]] Coroutine {
public:
    using promise_type = detail::Promise<T>;
    using value_type = T;

    Coroutine() noexcept = default;
    explicit Coroutine(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    Coroutine(Coroutine&& o) noexcept : h_(std::exchange(o.h_, {})) {}
    Coroutine& operator=(Coroutine&& o) noexcept {
        if (this != &o) {
            drop();
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    Coroutine(const Coroutine&) = delete;
    Coroutine& operator=(const Coroutine&) = delete;
    /// Frees the frame; one never awaited nor made a task is reported ("coroutine 'NAME' was never
    /// awaited", as Python's RuntimeWarning) through the loop's exception handler.
    ~Coroutine() { drop(); }

    /// False for a default-constructed or moved-from (e.g. given to create_task) coroutine.
    bool valid() const noexcept { return static_cast<bool>(h_); }
    /// True once the coroutine has run to its end.
    bool done() const noexcept { return h_ && h_.done(); }
    /// True once the coroutine was awaited (it cannot be awaited or made a task again).
    bool started() const noexcept { return h_ && h_.promise().has(detail::kStarted); }

    struct [[nodiscard]] Awaiter {
        std::coroutine_handle<promise_type> h;
        bool await_ready() const {
            // The throws are out of line so that this inlines into every co_await.
            if (!h || h.promise().has(detail::kStarted)) [[unlikely]]
                detail::throw_bad_coroutine_await(!h);
            return false;
        }
        // The awaiting frame notes the line of this co_await (detail::note_await: or, for a
        // coroutine type not of this library, marks the task's call graph unreadable).
#if ASYNCIO_SYMMETRIC_TRANSFER
        template <class P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> awaiter,
                                              unsigned line = __builtin_LINE()) noexcept {
            detail::note_await(awaiter, line);
            h.promise().resume_ = awaiter;
            h.promise().flags_ |= detail::kStarted;
            return h;
        }
#else
        // See ASYNCIO_SYMMETRIC_TRANSFER: run it here; if it finished, continue without suspending.
        template <class P>
        bool await_suspend(std::coroutine_handle<P> awaiter, unsigned line = __builtin_LINE()) noexcept {
            detail::note_await(awaiter, line);
            return start_inline(awaiter);
        }
#endif
        /// Runs the coroutine from here, before the awaiter suspends: true if it suspended (it
        /// transfers to awaiter when it finishes), false if it finished already.
        bool start_inline(std::coroutine_handle<> awaiter) noexcept {
            auto& p = h.promise();
            p.resume_ = awaiter;
            p.flags_ |= detail::kStarted | detail::kInlineRun;
            h.resume();
            if (h.done()) return false;
            p.flags_ &= static_cast<std::uint16_t>(~detail::kInlineRun);
            return true;
        }
        decltype(auto) await_resume() { return detail::take_result(h.promise(), true); }
    };
    Awaiter operator co_await() const& noexcept { return Awaiter{h_}; }

    /// Gives up ownership of the frame (create_task uses it).
    std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, {}); }

private:
    void drop() noexcept {
        if (!h_) return;
        if (!h_.promise().has(detail::kStarted)) [[unlikely]]
            detail::report_never_awaited(&h_.promise());
        h_.destroy();
    }
    std::coroutine_handle<promise_type> h_;
};

namespace detail {
template <class T>
Coroutine<T> Promise<T>::get_return_object() noexcept {
    return Coroutine<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
template <class T>
Coroutine<T&> Promise<T&>::get_return_object() noexcept {
    return Coroutine<T&>(std::coroutine_handle<Promise<T&>>::from_promise(*this));
}
inline Coroutine<void> Promise<void>::get_return_object() noexcept {
    return Coroutine<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}
}  // namespace detail

}  // namespace asyncio
