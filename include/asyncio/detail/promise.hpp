// The promise shared by Coroutine<T> and Task<T>. Calling an async function makes a lazy
// Coroutine<T>; create_task() turns the same frame into a task in place (task mode), so a task is
// one allocation. In coroutine mode the frame is resumed by whoever co_awaits it and, when it
// finishes, transfers straight back to that awaiter (symmetric transfer: no stack growth however
// long a chain of synchronous completions). In task mode the loop resumes it and, when it finishes,
// wakes its waiters through the ready queue (asyncio's ordering).
//
// This layer knows nothing of the OS; the few task operations that need the loop are declared here
// and defined in src/task.cpp.
#pragma once

#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "asyncio/detail/frame_allocator.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {
template <class T>
class Coroutine;
}

namespace asyncio::detail {

struct PromiseBase;

/// Intrusive node in a task's list of waiters; fn runs once when the task is done. fn must not
/// run user code synchronously (it schedules), because it runs inside the finishing task.
struct DoneWaiter {
    void (*fn)(DoneWaiter* self, PromiseBase* done_task) = nullptr;
    DoneWaiter* next = nullptr;
};

/// What a suspended task is waiting on, as seen by Task::cancel(). fn returns true when it passed
/// the cancellation on to the awaited object, which will wake the task with the outcome; false when
/// it detached the wait and woke the task, which must then raise CancelledError.
struct CancelHook {
    bool (*fn)(CancelHook* self) = nullptr;
};

enum PromiseFlags : std::uint16_t {
    kTaskMode = 1u << 0,
    kDone = 1u << 1,
    kHasValue = 1u << 2,
    kHasException = 1u << 3,
    kCancelled = 1u << 4,    // finished by CancelledError
    kMustCancel = 1u << 5,   // raise CancelledError at the next resumption
    kRetrieved = 1u << 6,    // the exception was looked at
    kHasExtra = 1u << 7,     // a name or cancel message is stored aside
    kStarted = 1u << 8,      // coroutine mode: already awaited once
    kAbandoned = 1u << 9,    // its loop closed while it was pending
};

struct PromiseBase : FrameAllocated {
    std::coroutine_handle<> resume_{};  // coroutine mode: the awaiter; task mode: where to resume
    std::coroutine_handle<> root_{};    // task mode: this frame
    CancelHook* waiting_ = nullptr;     // task mode: what the suspended task awaits
    DoneWaiter* waiters_ = nullptr;     // task mode: pushed at the head, run oldest first
    PromiseBase* prev_ = nullptr;       // task mode: the loop's list of pending tasks
    PromiseBase* next_ = nullptr;
    std::exception_ptr exception_;
    std::uint32_t refs_ = 0;  // task mode: Task handles, plus one while the loop owns it
    std::uint16_t flags_ = 0;
    std::uint16_t cancelling_ = 0;

    bool has(std::uint16_t f) const noexcept { return (flags_ & f) != 0; }

    void unhandled_exception() noexcept {
        exception_ = std::current_exception();
        flags_ |= kHasException;
    }
};

// ---- task operations, defined in src/task.cpp ----
void task_finished(PromiseBase* p) noexcept;  // root frame reached final_suspend
void task_release(PromiseBase* p) noexcept;   // drops a reference; destroys the frame at zero
bool task_cancel(PromiseBase* p, std::string msg);
[[noreturn]] void throw_cancelled(PromiseBase* p);  // clears kMustCancel, throws CancelledError
std::string task_name(const PromiseBase* p);
void task_set_name(PromiseBase* p, std::string name);
PromiseBase* current_task_or_throw(const char* what);  // RuntimeError outside a task

/// Rethrows the task's exception, or CancelledError if it was cancelled (marks it retrieved).
inline void task_rethrow(PromiseBase* p) {
    if (p->has(kHasException)) {
        p->flags_ |= kRetrieved;
        std::rethrow_exception(p->exception_);
    }
}

struct InitialAwaiter {
    PromiseBase* p;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    // A task cancelled before its first step finishes with CancelledError without running its body.
    void await_resume() const {
        if (p->has(kMustCancel)) throw_cancelled(p);
    }
};

struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) const noexcept {
        PromiseBase& p = h.promise();
        if (p.has(kTaskMode)) {
            task_finished(&p);  // may destroy the frame: touch nothing after
            return std::noop_coroutine();
        }
        return p.resume_ ? p.resume_ : std::noop_coroutine();
    }
    void await_resume() const noexcept {}
};

template <class T>
struct Promise : PromiseBase {
    union {
        T value_;
    };
    Promise() noexcept {}
    Promise(const Promise&) = delete;
    Promise& operator=(const Promise&) = delete;
    ~Promise() {
        if (has(kHasValue)) value_.~T();
    }

    Coroutine<T> get_return_object() noexcept;
    InitialAwaiter initial_suspend() noexcept { return {this}; }
    FinalAwaiter final_suspend() noexcept { return {}; }

    template <class U = T>
    void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
        ::new (static_cast<void*>(std::addressof(value_))) T(std::forward<U>(v));
        flags_ |= kHasValue;
    }

    T& value_ref() {
        task_rethrow(this);
        return value_;
    }
};

template <class T>
struct Promise<T&> : PromiseBase {
    T* value_ = nullptr;
    Coroutine<T&> get_return_object() noexcept;
    InitialAwaiter initial_suspend() noexcept { return {this}; }
    FinalAwaiter final_suspend() noexcept { return {}; }
    void return_value(T& v) noexcept {
        value_ = std::addressof(v);
        flags_ |= kHasValue;
    }
    T& value_ref() {
        task_rethrow(this);
        return *value_;
    }
};

template <>
struct Promise<void> : PromiseBase {
    Coroutine<void> get_return_object() noexcept;
    InitialAwaiter initial_suspend() noexcept { return {this}; }
    FinalAwaiter final_suspend() noexcept { return {}; }
    void return_void() noexcept { flags_ |= kHasValue; }
    void value_ref() { task_rethrow(this); }
};

/// Takes the result out of a finished frame: moved when `move` (the only owner), else copied.
template <class T>
decltype(auto) take_result(Promise<T>& p, bool move) {
    if constexpr (std::is_void_v<T>) {
        p.value_ref();
    } else if constexpr (std::is_reference_v<T>) {
        return p.value_ref();
    } else if constexpr (std::is_copy_constructible_v<T>) {
        T& v = p.value_ref();
        return move ? T(std::move(v)) : T(v);
    } else {
        return T(std::move(p.value_ref()));
    }
}

}  // namespace asyncio::detail
