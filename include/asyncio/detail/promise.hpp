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

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#if __has_include(<source_location>)
#include <source_location>
#endif
#include <type_traits>
#include <utility>

#include "asyncio/detail/config.hpp"
#include "asyncio/detail/creation_site.hpp"
#include "asyncio/detail/frame_allocator.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {
template <class T>
class Coroutine;
class EventLoop;
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
    kMustCancel = 1u << 5,   // a cancellation is pending (see suspend_task in task_core.hpp)
    kRetrieved = 1u << 6,    // the exception was looked at
    kHasExtra = 1u << 7,     // a name or cancel message is stored aside
    kStarted = 1u << 8,      // coroutine mode: already awaited once
    kAbandoned = 1u << 9,    // its loop closed while it was pending
    kInlineRun = 1u << 10,   // coroutine mode: being run from its awaiter's await_suspend
    kOrphaned = 1u << 11,    // its loop has been destroyed (see t_loop_gone); loop_ is null
    kFuture = 1u << 12,      // a Future's state: a frame that never runs, completed by set_result()
    kCancelDelivered = 1u << 13,  // a cancel hook woke the task to raise: its message is decided
    kCreationRecorded = 1u << 14,  // debug mode: where it was made is in creation_trace.cpp's table
    kForeignChain = 1u << 15,  // a coroutine type not of this library ran in the task: no call graph
    // Task mode: made (or pending) while its loop traces, so its suspensions are told to the
    // tracer (suspend_task tests it with kMustCancel in one go). The bit of kStarted, which only
    // a coroutine-mode frame uses: a frame that became a task was never awaited as a Coroutine.
    kTraced = kStarted,
};

// ASYNCIO_SYMMETRIC_TRANSFER (detail/config.hpp): how a Coroutine is started.

// Debug mode's "where it was created" (src/creation_trace.cpp): while some loop is in debug mode,
// a coroutine made on that loop's thread records its caller's stack (kCreationRecorded); the
// record goes with the frame. Outside debug mode: one relaxed load of a global where a frame is
// made, and one more flag bit tested where it is freed.
struct PromiseBase;
[[gnu::cold]] void record_creation(PromiseBase* p) noexcept;
[[gnu::cold]] void forget_creation(const PromiseBase* p) noexcept;
/// "\nCoroutine created at (most recent call last):\n  ..." for a frame made in debug mode, else "".
std::string creation_trace(const PromiseBase* p);

/// Marks the running task kForeignChain (its call graph stops at its root). Cold: src/graph.cpp.
[[gnu::cold]] void mark_foreign_chain() noexcept;

struct PromiseBase : FrameAllocated {
    std::coroutine_handle<> resume_{};  // coroutine mode: the awaiter; task mode: where to resume
                                        // (null while a step runs: see step_task)
    CancelHook* waiting_ = nullptr;     // task mode: what the suspended task awaits
    DoneWaiter* waiters_ = nullptr;     // task mode: pushed at the head, run oldest first
    PromiseBase* prev_ = nullptr;  // task mode: the loop's list of its tasks and futures
    PromiseBase* next_ = nullptr;
    EventLoop* loop_ = nullptr;  // task mode: the loop it belongs to (null once that loop is gone)
    // The coroutine's name and where it is defined (its promise constructor's defaults): the
    // "never awaited" report, call graphs and traces. Read through origin_function() and
    // origin_file(). With GCC one pointer (a std::source_location: the compiler's static record
    // of signature, file and line), which keeps a task's frame 8 bytes smaller; Clang 14 has no
    // std::source_location, so there two pointers.
#if ASYNCIO_ORIGIN_SOURCE_LOCATION
    std::source_location origin_{};
#else
    const char* function_ = nullptr;
    const char* file_ = nullptr;
#endif
    std::uint32_t refs_ = 0;  // task mode: Task handles, plus one while the loop owns it
    std::uint16_t flags_ = 0;
    std::uint16_t cancelling_ = 0;
    // The exception (kHasException) or, for results of at most 8 bytes, the value (kHasValue):
    // sharing the word keeps a task that returns an int small. Until then the same word holds
    // line_: the line of the co_await the coroutine last suspended at (note_await stores it, in
    // the library's awaiters; before its first suspension, the line of its definition), which
    // call graphs read.
    union {
        std::exception_ptr exception_;
        alignas(8) unsigned char inline_value_[8];
        std::uint32_t line_;
    };

    PromiseBase() noexcept {}
    PromiseBase(const PromiseBase&) = delete;
    PromiseBase& operator=(const PromiseBase&) = delete;
    ~PromiseBase() {
        if (has(kHasException)) exception_.~exception_ptr();
        if (has(kCreationRecorded)) [[unlikely]]
            forget_creation(this);
    }

    bool has(std::uint16_t f) const noexcept { return (flags_ & f) != 0; }

    /// Records where the coroutine was made (its promise's constructor, see OriginTag).
#if ASYNCIO_ORIGIN_SOURCE_LOCATION
    void set_origin(std::source_location origin) noexcept {
        origin_ = origin;
        line_ = origin.line();
#else
    void set_origin(const char* function, const char* file, unsigned line) noexcept {
        function_ = function;
        file_ = file;
        line_ = line;
#endif
        if (g_debug_loops.load(std::memory_order_relaxed) != 0) [[unlikely]]
            record_creation(this);
    }

    /// The coroutine's name as __builtin_FUNCTION() gives it ("ping", "operator()"), or null for
    /// a frame that is no coroutine (a Future's state). (GCC: worked out once per coroutine from
    /// the signature, src/task.cpp; a cache per thread answers debug mode and traces, which ask
    /// at every step, without a lock.)
    const char* origin_function() const noexcept;
    /// The file the coroutine is defined in, or null.
    const char* origin_file() const noexcept {
#if ASYNCIO_ORIGIN_SOURCE_LOCATION
        return *origin_.file_name() != '\0' ? origin_.file_name() : nullptr;
#else
        return file_;
#endif
    }

    void set_exception(std::exception_ptr e) noexcept {
        ::new (static_cast<void*>(&exception_)) std::exception_ptr(std::move(e));
        flags_ |= kHasException;
    }
    /// The exception the coroutine finished with, or null.
    std::exception_ptr exception() const noexcept {
        return has(kHasException) ? exception_ : std::exception_ptr();
    }
};

#if ASYNCIO_ORIGIN_SOURCE_LOCATION
struct OriginNameCache {
    const char* sig = nullptr;
    const char* name = nullptr;
};
inline constexpr std::size_t kOriginNameCacheSize = 64;
extern ASYNCIO_TLS OriginNameCache t_origin_names[kOriginNameCacheSize];
inline std::size_t origin_name_slot(const char* sig) noexcept {
    return (reinterpret_cast<std::uintptr_t>(sig) >> 4) % kOriginNameCacheSize;
}
[[gnu::cold]] const char* origin_function_slow(const char* sig) noexcept;
inline const char* PromiseBase::origin_function() const noexcept {
    const char* sig = origin_.function_name();
    const OriginNameCache& c = t_origin_names[origin_name_slot(sig)];
    if (c.sig == sig) [[likely]]
        return c.name;
    return origin_function_slow(sig);
}
#else
inline const char* PromiseBase::origin_function() const noexcept { return function_; }
#endif

/// The first thing every awaiter of the library does when a co_await of it reaches await_suspend
/// (so only when it may suspend: a co_await that completes in await_ready costs nothing): notes,
/// for call graphs, the line of that co_await in the awaiting frame. Each await_suspend takes
/// `unsigned line = __builtin_LINE()`, which GCC and Clang evaluate at the co_await expression,
/// and passes it here; an awaiter that hands the await on to another passes its own `line` along.
/// A handle of a coroutine type not of this library (or a type-erased one) means a frame that
/// call graphs cannot read: the running task is marked (kForeignChain) instead.
template <class P>
[[gnu::always_inline]] inline void note_await(std::coroutine_handle<P> h, unsigned line) noexcept {
    if constexpr (std::is_base_of_v<PromiseBase, P>)
        h.promise().line_ = line;
    else
        mark_foreign_chain();
}

/// First parameter of every promise constructor: no coroutine parameter converts to it, so the
/// compiler always uses the defaults, which __builtin_FUNCTION() & co. evaluate at the coroutine
/// (GCC and Clang): the coroutine's own name and where it is defined.
struct OriginTag {
    explicit OriginTag() = default;
};
#if ASYNCIO_ORIGIN_SOURCE_LOCATION
#define ASYNCIO_PROMISE_ORIGIN_PARAMS                                                                      \
    ::asyncio::detail::OriginTag = ::asyncio::detail::OriginTag(),                                         \
    std::source_location origin = std::source_location::current()
#define ASYNCIO_PROMISE_ORIGIN_ARGS origin
#else
#define ASYNCIO_PROMISE_ORIGIN_PARAMS                                                             \
    ::asyncio::detail::OriginTag = ::asyncio::detail::OriginTag(),                                \
    const char *origin_function = __builtin_FUNCTION(), const char *origin_file = __builtin_FILE(), \
    unsigned origin_line = __builtin_LINE()
#define ASYNCIO_PROMISE_ORIGIN_ARGS origin_function, origin_file, origin_line
#endif

/// A Coroutine destroyed before it was ever awaited or made a task: reported through the loop's
/// exception handler as Python's "coroutine 'NAME' was never awaited". Defined in src/task.cpp.
[[gnu::cold]] void report_never_awaited(const PromiseBase* p) noexcept;
/// RuntimeError for a co_await of an empty (moved-from) Coroutine, or of one already awaited.
[[gnu::cold, noreturn]] void throw_bad_coroutine_await(bool empty);

// ---- task operations, defined in src/task.cpp ----
/// RuntimeError unless p's loop is the running loop of this thread or runs nowhere (between runs):
/// a non-thread-safe use from another thread while its loop runs.
void check_loop_thread_slow(const PromiseBase* p, const char* what);
void task_finished(PromiseBase* p) noexcept;  // root frame reached final_suspend
void task_release(PromiseBase* p) noexcept;   // drops a reference; destroys the frame at zero
bool task_cancel(PromiseBase* p, std::string msg);
[[noreturn]] void throw_cancelled(PromiseBase* p);  // clears kMustCancel, throws CancelledError
void set_cancelled(PromiseBase* p) noexcept;  // its outcome: CancelledError (the pending message)
std::string task_name(const PromiseBase* p);
std::string task_name_if_set(const PromiseBase* p);  // "" for a task never named (assigns no number)
void task_set_name(PromiseBase* p, std::string name);

class Tracer;  // src/trace.hpp
/// What this thread's task machinery keeps, in one thread-local block: step_task reads all three
/// around every step, and from one base address that costs one instruction less per field than
/// three separate thread-locals do. Defined in src/event_loop.cpp.
struct ThreadTaskState {
    PromiseBase* current_task = nullptr;  // the task running on this thread now (null outside a task)
    /// A task that suspended with a cancellation pending (see suspend_task in task_core.hpp):
    /// pinned, its cancellation delivered once its step is over (deliver_cancel_after_step).
    PromiseBase* cancel_after_step = nullptr;
    Tracer* tracer = nullptr;  // the tracer of the loop running on this thread, or null (almost always)
};
extern ASYNCIO_TLS ThreadTaskState t_task;
[[noreturn, gnu::cold]] void throw_no_current_task(const char* what);  // RuntimeError
/// The running task; RuntimeError outside a task (every suspending awaiter starts with it).
inline PromiseBase* current_task_or_throw(const char* what) {
    PromiseBase* t = t_task.current_task;
    if (t == nullptr) [[unlikely]]
        throw_no_current_task(what);
    return t;
}

/// Rethrows the task's exception, or CancelledError if it was cancelled (marks it retrieved).
inline void task_rethrow(PromiseBase* p) {
    if (p->has(kHasException)) {
        p->flags_ |= kRetrieved;
        std::rethrow_exception(p->exception_);
    }
}

/// The promise of a frame of ours (the inverse of frame_of).
inline PromiseBase* promise_of(std::coroutine_handle<> h) noexcept {
    return static_cast<PromiseBase*>(__builtin_coro_promise(h.address(), 16, false));
}

/// The frame that holds promise p. Every promise of ours is aligned to at most 16, and both GCC
/// and Clang place the promise right after the frame's two function pointers.
inline std::coroutine_handle<> frame_of(PromiseBase* p) noexcept {
    return std::coroutine_handle<>::from_address(__builtin_coro_promise(p, 16, true));
}

struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) const noexcept {
        PromiseBase& p = h.promise();
        if (p.has(kTaskMode)) {
            // As Python's Task.__step: a task that returns while a cancellation is pending (it
            // cancelled itself and returned without awaiting again) finishes cancelled.
            if (p.has(kMustCancel) && p.has(kHasValue)) [[unlikely]] {
                h.promise().drop_value();
                set_cancelled(&p);
            }
            task_finished(&p);  // may destroy the frame: touch nothing after
            return std::noop_coroutine();
        }
        // Back into the await_suspend that runs it inline (every awaiter with GCC; with Clang,
        // only those that must know whether it suspended, as Timeout's).
        if (p.has(kInlineRun)) return std::noop_coroutine();
        return p.resume_ ? p.resume_ : std::noop_coroutine();
    }
    void await_resume() const noexcept {}
};

template <class T>
inline constexpr bool kInlineValue = sizeof(T) <= 8 && alignof(T) <= 8;

template <class T, bool Inline = kInlineValue<T>>
struct ValueHolder {  // a result too big for the shared word
    union {
        T value;
    };
    ValueHolder() noexcept {}
    ~ValueHolder() {}
};
template <class T>
struct ValueHolder<T, true> {};

template <class T>
struct Promise : PromiseBase {
    [[no_unique_address]] ValueHolder<T> holder_;

    explicit Promise(ASYNCIO_PROMISE_ORIGIN_PARAMS) noexcept {
        static_assert(alignof(Promise) <= 16, "over-aligned coroutine results are not supported");
        set_origin(ASYNCIO_PROMISE_ORIGIN_ARGS);
    }
    ~Promise() {
        if (has(kHasValue)) value_ptr()->~T();
    }

    Coroutine<T> get_return_object() noexcept;
    std::suspend_always initial_suspend() noexcept { return {}; }
    FinalAwaiter final_suspend() noexcept { return {}; }

    template <class U = T>
    void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
        ::new (static_cast<void*>(raw_value())) T(std::forward<U>(v));
        flags_ |= kHasValue;
    }
    void unhandled_exception() noexcept {
        if (has(kHasValue)) {  // a destructor threw after co_return: the exception wins
            value_ptr()->~T();
            flags_ &= static_cast<std::uint16_t>(~kHasValue);
        }
        set_exception(std::current_exception());
    }

    T& value_ref() {
        task_rethrow(this);
        return *value_ptr();
    }
    void drop_value() noexcept {
        value_ptr()->~T();
        flags_ &= static_cast<std::uint16_t>(~kHasValue);
    }

private:
    void* raw_value() noexcept {
        if constexpr (kInlineValue<T>)
            return inline_value_;
        else
            return std::addressof(holder_.value);
    }
    T* value_ptr() noexcept { return std::launder(static_cast<T*>(raw_value())); }
};

template <class T>
struct Promise<T&> : PromiseBase {
    explicit Promise(ASYNCIO_PROMISE_ORIGIN_PARAMS) noexcept {
        set_origin(ASYNCIO_PROMISE_ORIGIN_ARGS);
    }
    Coroutine<T&> get_return_object() noexcept;
    std::suspend_always initial_suspend() noexcept { return {}; }
    FinalAwaiter final_suspend() noexcept { return {}; }
    void return_value(T& v) noexcept {
        ::new (static_cast<void*>(inline_value_)) T*(std::addressof(v));
        flags_ |= kHasValue;
    }
    void unhandled_exception() noexcept {
        flags_ &= static_cast<std::uint16_t>(~kHasValue);
        set_exception(std::current_exception());
    }
    T& value_ref() {
        task_rethrow(this);
        return **std::launder(reinterpret_cast<T**>(inline_value_));
    }
    void drop_value() noexcept { flags_ &= static_cast<std::uint16_t>(~kHasValue); }
};

template <>
struct Promise<void> : PromiseBase {
    explicit Promise(ASYNCIO_PROMISE_ORIGIN_PARAMS) noexcept {
        set_origin(ASYNCIO_PROMISE_ORIGIN_ARGS);
    }
    Coroutine<void> get_return_object() noexcept;
    std::suspend_always initial_suspend() noexcept { return {}; }
    FinalAwaiter final_suspend() noexcept { return {}; }
    void return_void() noexcept { flags_ |= kHasValue; }
    void unhandled_exception() noexcept {
        flags_ &= static_cast<std::uint16_t>(~kHasValue);
        set_exception(std::current_exception());
    }
    void value_ref() { task_rethrow(this); }
    void drop_value() noexcept { flags_ &= static_cast<std::uint16_t>(~kHasValue); }
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
