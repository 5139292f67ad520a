// asyncio::Generator<Yield, Send, Return>: Python's generator (typing.Generator[Y, S, R]) as a
// C++20 coroutine. What it promises:
//  - `auto s = co_yield v;` hands v to the caller of next()/send()/throw_(). s is a
//    std::optional<Send>, std::nullopt when resumed by next() (Python's send(None)). With
//    Send = void the expression is void.
//  - next/send/throw_/close and their errors follow Python's generator methods: StopIteration
//    carries the co_returned value, GeneratorExit, "generator already executing", PEP 479, ...
//  - A send() allocates nothing, throws nothing and erases no type. Small trivially copyable
//    values travel in place; others by pointer, to the co_yield operand and to send()'s argument.
//  - `co_yield yield_from(std::move(sub))` is `yield from`. The caller resumes the innermost
//    generator directly, so a send costs the same at any depth; beginning, ending and destroying
//    delegations take no stack per level.
//  - Destroying an unfinished generator destroys its frame (its locals' destructors run) without
//    running close().
//  - Knows no event loop and no OS: includes only the standard library, exceptions.hpp and
//    detail/.
#pragma once

#include <any>
#include <concepts>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <iterator>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "asyncio/detail/frame_allocator.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {

template <class Yield, class Send = void, class Return = void>
class Generator;

/// The operand of `co_yield asyncio::yield_from(std::move(sub))`. It refers to the sub-generator;
/// the delegating generator takes it over only once the co_yield has checked it can run.
template <class Yield, class Send, class Return>
struct YieldFrom {
    Generator<Yield, Send, Return>& generator;
};

/// Python's `yield from sub`: `R2 r = co_yield yield_from(std::move(sub));` runs sub until it
/// returns, passing its yields out and the caller's next/send/throw_/close in. Evaluates to sub's
/// return value. Yield and Send must be the delegating generator's. A sub that has already returned
/// is not run again and gives its return value (Python would give None); one that finished without
/// returning a value (closed, raised) throws InvalidStateError at the co_yield, unless its Return
/// is void.
template <class Yield, class Send, class Return>
YieldFrom<Yield, Send, Return> yield_from(Generator<Yield, Send, Return>&& sub) noexcept {
    return {sub};
}

namespace detail {

// transfer: a delegation began or ended and the caller must resume the new leaf (see run()).
enum class GenState : unsigned char { created, suspended, running, transfer, done };

/// Placeholder parameter type of send() when Send is void (send() is then unavailable).
struct NoSend {};

template <class Yield, class Send, class Return>
struct Delegation;

/// Where a promise keeps the value of co_return.
template <class Return>
struct GenReturn {
    std::optional<Return> return_slot_;

    template <class U = Return>
    requires std::constructible_from<Return, U&&>
    void return_value(U&& value) { return_slot_.emplace(std::forward<U>(value)); }
    bool returned() const noexcept { return return_slot_.has_value(); }
};

template <>
struct GenReturn<void> {
    bool returned_ = false;

    void return_void() noexcept { returned_ = true; }
    bool returned() const noexcept { return returned_; }
};

inline bool is_generator_exit(const std::exception_ptr& e) noexcept {
    try {
        std::rethrow_exception(e);
    } catch (const GeneratorExit&) {
        return true;
    } catch (...) {
        return false;
    }
}

/// Small trivially copyable values are passed in place rather than through a pointer: one load
/// less on the path of every send.
template <class T>
inline constexpr bool kPassInPlace = false;
template <class T>
requires std::is_object_v<T>
inline constexpr bool kPassInPlace<T> = std::is_trivially_copyable_v<T> && sizeof(T) <= 32;

template <class T>
union InPlace {
    char none;
    T value;
    InPlace() noexcept : none() {}
};

// Out of line so that the resume path of every generator needs no stack frame of its own for it.
[[noreturn, gnu::cold, gnu::noinline]] inline void raise_pending(std::exception_ptr& pending) {
    std::rethrow_exception(std::exchange(pending, nullptr));
}

/// What the caller hands the generator it resumes: for send(), the value (in place for small
/// trivially copyable Send, else a pointer to send()'s argument); for throw_/close, the exception.
// (The value and its flag are written and read separately, never as one std::optional: a wide load
// of narrower stores just made would stall store-to-load forwarding.)
template <class Send, bool = kPassInPlace<Send>>
struct GenInbox {
    InPlace<Send> sent_;
    bool has_sent_ = false;
    std::exception_ptr pending_;
    void put(const Send& v) noexcept {
        std::construct_at(std::addressof(sent_.value), v);
        has_sent_ = true;
    }
    void clear() noexcept { has_sent_ = false; }
    void move_from(GenInbox& other) noexcept {
        has_sent_ = std::exchange(other.has_sent_, false);
        if (has_sent_) std::construct_at(std::addressof(sent_.value), other.sent_.value);
        if (other.pending_) pending_ = std::exchange(other.pending_, nullptr);
    }
    std::optional<Send> take() {
        if (has_sent_) [[likely]]
            return std::optional<Send>(std::in_place, sent_.value);
        if (pending_) [[unlikely]]
            raise_pending(pending_);
        return std::nullopt;
    }
};

template <class Send>
struct GenInbox<Send, false> {
    Send* sent_ = nullptr;
    std::exception_ptr pending_;
    void put(Send& v) noexcept { sent_ = std::addressof(v); }
    void clear() noexcept { sent_ = nullptr; }
    void move_from(GenInbox& other) noexcept {
        sent_ = std::exchange(other.sent_, nullptr);
        if (other.pending_) pending_ = std::exchange(other.pending_, nullptr);
    }
    std::optional<Send> take() {
        if (sent_ != nullptr) [[likely]]
            return std::optional<Send>(std::in_place, std::move(*sent_));
        if (pending_) [[unlikely]]
            raise_pending(pending_);
        return std::nullopt;
    }
};

template <>
struct GenInbox<void, false> {
    std::exception_ptr pending_;
    void clear() noexcept {}
    void move_from(GenInbox& other) noexcept {
        if (other.pending_) pending_ = std::exchange(other.pending_, nullptr);
    }
    void take() {
        if (pending_) [[unlikely]]
            raise_pending(pending_);
    }
};

/// Where the root keeps the last value yielded out of its chain: in place for small trivially
/// copyable types, else a pointer to the co_yield operand (or to the yielding frame's copy of it).
template <class Yield, bool = kPassInPlace<Yield>>
struct GenOutbox {
    InPlace<Yield> yielded_;
    Yield& yielded() noexcept { return yielded_.value; }
    void hold(const Yield& v) noexcept { std::construct_at(std::addressof(yielded_.value), v); }
};

template <class Yield>
struct GenOutbox<Yield, false> {
    Yield* yielded_ = nullptr;
    Yield& yielded() noexcept { return *yielded_; }
    void hold(Yield& v) noexcept { yielded_ = std::addressof(v); }
};

struct NoCopySlot {};

/// The part of a generator's promise that does not depend on Return, so that generators with
/// different return types can delegate to one another. A chain of delegations is a list of promises
/// linked by parent_/child_. The first one, the root (owned by the caller's Generator object),
/// holds what the caller and the running generator exchange: the state, the inbox, the yielded
/// value, and the handle of the innermost generator (the leaf), which the caller resumes directly.
template <class Yield, class Send>
struct GenPromiseBase : FrameAllocated, GenInbox<Send>, GenOutbox<Yield> {
    static constexpr bool kYieldInPlace = kPassInPlace<Yield>;
    using Received = std::conditional_t<std::is_void_v<Send>, void, std::optional<Send>>;

    // Of every generator.
    std::coroutine_handle<> self_;
    GenPromiseBase* root_ = this;
    GenPromiseBase* parent_ = nullptr;  // the generator delegating to this one
    GenPromiseBase* child_ = nullptr;   // the generator this one delegates to (owned)
    std::exception_ptr exception_;      // what escaped the body, until handed on
    bool closing_ = false;              // GeneratorExit is being raised into it (close())
    bool exited_ = false;               // the body ended by letting a GeneratorExit escape
    // `co_yield lvalue` of a type not passed in place is copied here, so the caller can move it.
    [[no_unique_address]] std::conditional_t<kYieldInPlace, NoCopySlot, std::optional<Yield>> copy_;

    // Meaningful in the root only (with GenInbox and GenOutbox).
    GenState state_ = GenState::created;
    std::coroutine_handle<> leaf_;  // where the next resumption goes

    GenPromiseBase() = default;
    GenPromiseBase(const GenPromiseBase&) = delete;
    GenPromiseBase& operator=(const GenPromiseBase&) = delete;
    ~GenPromiseBase() {
        if (child_ != nullptr) destroy_chain(child_);
    }

    /// Destroys the frames of top and of the generators it delegates to, innermost first, in a loop
    /// (a recursion would use stack per delegation level).
    [[gnu::noinline]] static void destroy_chain(GenPromiseBase* top) noexcept {
        GenPromiseBase* p = top;
        while (p->child_ != nullptr) p = p->child_;
        while (p != top) {
            GenPromiseBase* up = p->parent_;
            up->child_ = nullptr;
            p->self_.destroy();
            p = up;
        }
        top->self_.destroy();
    }

    std::suspend_always initial_suspend() const noexcept { return {}; }

    struct FinalAwaiter {
        GenPromiseBase* self;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<>) const noexcept {
            GenPromiseBase* parent = self->parent_;
            if (parent != nullptr) {  // a delegation ended: the delegating generator goes on
                self->root_->leaf_ = parent->self_;
                self->root_->state_ = GenState::transfer;
            } else {
                self->state_ = GenState::done;
            }
        }
        void await_resume() const noexcept {}
    };
    FinalAwaiter final_suspend() noexcept { return {this}; }

    void unhandled_exception() noexcept {
        std::exception_ptr e = std::current_exception();
        try {
            std::rethrow_exception(e);
        } catch (const StopIteration&) {
            // PEP 479: a StopIteration leaking out of the body would read as a normal return.
            e = std::make_exception_ptr(RuntimeError("generator raised StopIteration"));
        } catch (const GeneratorExit&) {
            exited_ = true;
        } catch (...) {
        }
        exception_ = std::move(e);
    }

    // A generator that is its own root (no delegation: the common case) uses its own fields, found
    // at a fixed place in its frame; a delegated one goes through root_ out of line. The branch is
    // predicted where the load of root_ would be one more dependent load on every send.
    // (The inbox is moved rather than read through root_, so that both paths end in one take():
    // two values merged would go through memory, as one wide load of narrow stores.)
    [[gnu::noinline]] void take_inbox_from_root() noexcept { this->move_from(*root_); }
    template <class T>
    [[gnu::noinline]] static void hold_in_root(GenPromiseBase* root, T& value) noexcept {
        root->hold(value);
    }
    template <class T>
    void hold_yielded(T& value) noexcept {
        if (root_ == this) [[likely]]
            this->hold(value);
        else
            hold_in_root(root_, value);
    }

    // The awaiter of `co_yield value`. Its value is what send() passed, nullopt for next(), or the
    // exception of throw_/close raised here.
    struct YieldAwaiter {
        GenPromiseBase* self;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<>) const noexcept {}
        Received await_resume() const {
            if (self->root_ != self) [[unlikely]]
                self->take_inbox_from_root();
            return self->take();
        }
    };

    // `co_yield rvalue`: unless copied in place, the caller reads (and moves from) the operand
    // itself, which lives until the full-expression ends, i.e. until the generator is resumed.
    YieldAwaiter yield_value(Yield&& value) noexcept {
        hold_yielded(value);
        return {this};
    }

    // `co_yield lvalue`: copied once into the frame, so that the caller may move from the copy.
    YieldAwaiter yield_value(const Yield& value) requires std::copy_constructible<Yield> {
        if constexpr (kYieldInPlace) {
            hold_yielded(value);
        } else {
            copy_.emplace(value);
            hold_yielded(*copy_);
        }
        return {this};
    }

    template <class Return2>
    Delegation<Yield, Send, Return2> yield_value(YieldFrom<Yield, Send, Return2> from);

    template <class Yield2, class Send2, class Return2>
    void yield_value(YieldFrom<Yield2, Send2, Return2>) = delete;  // Yield and Send must match
};

}  // namespace detail

/// A Python generator. Move-only; the object owns the coroutine frame.
///
/// Errors: next()/send() on a finished generator throw StopIteration (without a value after the
/// first time); throw_() on a finished generator rethrows the exception it is given (as Python);
/// any call on a running generator (from inside itself) throws ValueError("generator already
/// executing"); any operation but the observers on an empty Generator (default-constructed or
/// moved-from) throws InvalidStateError.
template <class Yield, class Send, class Return>
class Generator {
    static_assert(std::is_object_v<Yield> && !std::is_array_v<Yield> && !std::is_const_v<Yield>,
                  "Generator: Yield must be a non-const object type");
    static_assert(std::is_void_v<Send> || (std::is_object_v<Send> && !std::is_array_v<Send>),
                  "Generator: Send must be void or an object type");
    static_assert(std::is_void_v<Return> || (std::is_object_v<Return> && !std::is_array_v<Return>),
                  "Generator: Return must be void or an object type");

    using Base = detail::GenPromiseBase<Yield, Send>;
    using State = detail::GenState;
    using SendArg = std::conditional_t<std::is_void_v<Send>, detail::NoSend, Send>;

  public:
    using yield_type = Yield;
    using send_type = Send;
    using return_type = Return;

    struct promise_type : Base, detail::GenReturn<Return> {
        Generator get_return_object() noexcept {
            this->self_ = std::coroutine_handle<promise_type>::from_promise(*this);
            this->leaf_ = this->self_;
            return Generator(this);
        }
    };

    class iterator;

    Generator() noexcept = default;
    Generator(Generator&& other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
    Generator& operator=(Generator&& other) noexcept {
        if (this != &other) {
            reset();
            p_ = std::exchange(other.p_, nullptr);
        }
        return *this;
    }
    ~Generator() { reset(); }

    /// Python's next(g) / g.send(None): resumes the generator (starting it if just started) and
    /// returns the next yielded value; throws StopIteration (value(): the return value) when it
    /// returns instead, and lets any exception of the body through (the generator is then done).
    Yield next() {
        Base& r = root();
        if (r.state_ != State::suspended) [[unlikely]]
            check_next(r);
        r.clear();
        if (!run(r)) [[unlikely]]
            throw_stop();
        return std::move(r.yielded());
    }

    /// Python's g.send(v): v becomes the value of the pending co_yield expression. On a
    /// just-started generator throws TypeError and leaves it just started.
    Yield send(SendArg value) requires(!std::is_void_v<Send>) {
        Base& r = root();
        if (r.state_ != State::suspended) [[unlikely]]
            check_send(r);
        r.put(value);
        if (!run(r)) [[unlikely]]
            throw_stop();
        return std::move(r.yielded());
    }

    /// Python's g.throw(e): raises e at the suspension point. Returns the next yielded value if the
    /// generator catches it and yields; throws StopIteration if it returns; e (or what replaced it)
    /// propagates if it escapes. On a just-started generator it finishes without running and e
    /// propagates; on a finished one e propagates.
    Yield throw_(std::exception_ptr e) {
        Base& r = root();
        if (!e) throw TypeError("throw_() needs an exception, not a null exception_ptr");
        switch (r.state_) {
            case State::running:
            case State::transfer:
                throw_running();
            case State::created:
                r.state_ = State::done;
                std::rethrow_exception(std::move(e));
            case State::done:
                std::rethrow_exception(std::move(e));
            case State::suspended:
                break;
        }
        if (!throw_in(r, std::move(e), false)) {
            rethrow_escaped(r);
            throw_stop();
        }
        return std::move(r.yielded());
    }

    template <class E>
    requires(!std::same_as<std::remove_cvref_t<E>, std::exception_ptr>) Yield throw_(E e) {
        return throw_(std::make_exception_ptr(std::move(e)));
    }

    /// Python's g.close(): raises GeneratorExit at the suspension point. Returns normally if the
    /// generator finishes (by letting GeneratorExit escape or by returning); throws
    /// RuntimeError("generator ignored GeneratorExit") if it yields instead (it stays suspended);
    /// lets any other exception through. On a just-started or finished generator it only marks it
    /// finished.
    void close() {
        Base& r = root();
        switch (r.state_) {
            case State::running:
            case State::transfer:
                throw_running();
            case State::created:
            case State::done:
                r.state_ = State::done;
                return;
            case State::suspended:
                break;
        }
        if (throw_in(r, std::make_exception_ptr(GeneratorExit()), true))
            throw RuntimeError("generator ignored GeneratorExit");
        if (r.exception_) {
            std::exception_ptr e = std::exchange(r.exception_, nullptr);
            if (!r.exited_) std::rethrow_exception(std::move(e));
        }
    }

    /// Finished: returned, raised, or closed. True for an empty Generator.
    bool done() const noexcept { return p_ == nullptr || p_->state_ == State::done; }
    /// Executing its body (only observable from inside it).
    bool running() const noexcept { return p_ != nullptr && p_->state_ == State::running; }
    /// No longer just started: next/send/throw_/close has been called.
    bool started() const noexcept { return p_ != nullptr && p_->state_ != State::created; }
    /// Has a coroutine frame (false when default-constructed or moved-from).
    explicit operator bool() const noexcept { return p_ != nullptr; }

    /// The co_returned value; InvalidStateError unless the generator has finished by returning.
    std::add_lvalue_reference_t<Return> return_value() {
        check_returned();
        if constexpr (!std::is_void_v<Return>) return *promise().return_slot_;
    }
    std::conditional_t<std::is_void_v<Return>, void, std::add_lvalue_reference_t<const Return>>
    return_value() const {
        check_returned();
        if constexpr (!std::is_void_v<Return>) return *promise().return_slot_;
    }

    /// Range-for: begin() runs the generator to its first yield (as next()); iteration ends when it
    /// returns, without an exception; exceptions of the body propagate. Like std::generator, *it is
    /// Yield&&, so `for (auto v : g)` moves each value out (and works for move-only types).
    iterator begin() {
        advance();
        return iterator(this);
    }
    std::default_sentinel_t end() const noexcept { return {}; }

  private:
    template <class, class, class>
    friend class Generator;
    template <class, class, class>
    friend struct detail::Delegation;
    friend struct detail::GenPromiseBase<Yield, Send>;

    explicit Generator(Base* p) noexcept : p_(p) {}

    void reset() noexcept {
        if (p_ != nullptr) Base::destroy_chain(std::exchange(p_, nullptr));
    }
    Base* release() noexcept { return std::exchange(p_, nullptr); }
    promise_type& promise() const noexcept { return static_cast<promise_type&>(*p_); }

    Base& root() const {
        if (p_ == nullptr) [[unlikely]]
            throw_empty();
        return *p_;
    }

    // Resumes the chain once the inbox is set: true if a value was yielded out, false if the root
    // finished (what escaped it, if anything, is left in exception_).
    //
    // When a delegation begins or ends, the generator concerned does not resume the next one itself
    // (symmetric transfer): it sets state_ to transfer and returns here, and this loop resumes the
    // new leaf. Symmetric transfer is a tail call only when the compiler makes it one (GCC 12 at
    // -O0 does not), and each level of a deep chain would then take stack to set up and to unwind.
    static bool resume_chain(Base& r) {
        r.state_ = State::running;
        r.leaf_.resume();
        if (r.state_ == State::running) [[likely]] {  // it yielded
            r.state_ = State::suspended;
            return true;
        }
        return settle(r);
    }
    [[gnu::noinline]] static bool settle(Base& r) {
        while (r.state_ == State::transfer) {
            r.state_ = State::running;
            r.leaf_.resume();
        }
        if (r.state_ == State::done) return false;
        r.state_ = State::suspended;
        return true;
    }

    // resume_chain(), rethrowing what escaped the root.
    static bool run(Base& r) {
        if (resume_chain(r)) [[likely]]
            return true;
        rethrow_escaped(r);
        return false;
    }

    static void rethrow_escaped(Base& r) {
        if (r.exception_) std::rethrow_exception(std::exchange(r.exception_, nullptr));
    }

    // Raises e at the leaf's suspension point and runs until a value is yielded out of the root
    // (true) or the root finishes (false; what escaped it is left in exception_). While closing
    // (close(), or throw_ of a GeneratorExit into a delegating generator), each generator of the
    // chain is closed as Python's close() does: a delegating one gets GeneratorExit once its sub
    // has finished, or RuntimeError("generator ignored GeneratorExit") if its sub yielded.
    static bool throw_in(Base& r, std::exception_ptr e, bool closing) {
        if (!closing && r.child_ != nullptr) closing = detail::is_generator_exit(e);
        if (closing) {
            for (Base* p = &r; p != nullptr; p = p->child_) p->closing_ = true;
        }
        r.pending_ = std::move(e);
        r.clear();
        bool yielded = resume_chain(r);
        while (closing && yielded) {
            // A value came out: the innermost generator still being closed ignored GeneratorExit.
            Base* ignoring = &r;
            for (Base* p = &r; p != nullptr; p = p->child_) {
                if (p->closing_) ignoring = p;
            }
            if (ignoring == &r) break;
            // Its close() fails in its parent, at the yield_from, which abandons it.
            Base* parent = ignoring->parent_;
            r.pending_ = std::make_exception_ptr(RuntimeError("generator ignored GeneratorExit"));
            r.clear();
            r.leaf_ = parent->self_;
            yielded = resume_chain(r);
        }
        if (closing) {
            for (Base* p = &r; p != nullptr; p = p->child_) p->closing_ = false;
        }
        return yielded;
    }

    bool advance() {
        Base& r = root();
        switch (r.state_) {
            case State::running:
            case State::transfer:
                throw_running();
            case State::done:
                return false;
            case State::created:
            case State::suspended:
                break;
        }
        r.clear();
        return run(r);
    }

    void check_returned() const {
        Base& r = root();
        if (r.state_ != State::done)
            throw InvalidStateError("return_value() of a generator that has not finished");
        if (!promise().returned())
            throw InvalidStateError(
                "return_value() of a generator that finished without returning");
    }

    [[gnu::cold, gnu::noinline]] static void check_next(Base& r) {
        if (r.state_ == State::running || r.state_ == State::transfer) throw_running();
        if (r.state_ == State::done) throw StopIteration();
    }
    [[gnu::cold, gnu::noinline]] static void check_send(Base& r) {
        if (r.state_ == State::running || r.state_ == State::transfer) throw_running();
        if (r.state_ == State::created)
            throw TypeError("can't send non-None value to a just-started generator");
        throw StopIteration();
    }
    [[noreturn, gnu::cold, gnu::noinline]] static void throw_running() {
        throw ValueError("generator already executing");
    }
    [[noreturn, gnu::cold, gnu::noinline]] static void throw_empty() {
        throw InvalidStateError("empty Generator (default-constructed or moved-from)");
    }
    // The generator has just returned: StopIteration carries a copy of the return value (an empty
    // std::any for void or a non-copyable Return; return_value() has it in every case).
    [[noreturn, gnu::cold, gnu::noinline]] void throw_stop() const {
        if constexpr (std::is_void_v<Return> || !std::is_copy_constructible_v<Return>) {
            throw StopIteration();
        } else {
            if (promise().returned()) throw StopIteration(std::any(*promise().return_slot_));
            throw StopIteration();
        }
    }

    Base* p_ = nullptr;
};

template <class Yield, class Send, class Return>
class Generator<Yield, Send, Return>::iterator {
  public:
    using value_type = Yield;
    using difference_type = std::ptrdiff_t;
    using reference = Yield&&;

    iterator() noexcept = default;

    reference operator*() const noexcept { return std::move(gen_->p_->yielded()); }
    iterator& operator++() {
        gen_->advance();
        return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept {
        return it.gen_ == nullptr || it.gen_->done();
    }

  private:
    friend class Generator;
    explicit iterator(Generator* gen) noexcept : gen_(gen) {}
    Generator* gen_ = nullptr;
};

namespace detail {

/// The awaiter of `co_yield yield_from(std::move(sub))`, in the delegating generator's frame. It
/// owns sub before and after the delegation; during it, the delegating promise's child_ does.
template <class Yield, class Send, class Return>
struct Delegation {
    using Base = GenPromiseBase<Yield, Send>;

    Base* parent;
    Generator<Yield, Send, Return> sub;

    // A sub that has already finished is not run again.
    bool await_ready() const noexcept { return sub.done(); }

    void await_suspend(std::coroutine_handle<>) noexcept {
        Base* s = sub.release();
        Base* root = parent->root_;
        parent->child_ = s;
        s->parent_ = parent;
        Base* leaf = s;  // s may itself be delegating already: its whole chain joins ours
        for (Base* p = s; p != nullptr; p = p->child_) {
            p->root_ = root;
            leaf = p;
        }
        root->leaf_ = leaf->self_;
        root->clear();  // the sub is first resumed as by next(), as `yield from` does
        root->state_ = GenState::transfer;  // the caller's loop resumes it (see Generator::run)
    }

    Return await_resume() {
        if (Base* s = std::exchange(parent->child_, nullptr)) {
            sub.p_ = s;            // take it back: it is destroyed with this awaiter
            if (!s->self_.done())  // abandoned while suspended (it ignored GeneratorExit)
                std::rethrow_exception(std::exchange(parent->root_->pending_, nullptr));
            if (s->exception_) std::rethrow_exception(std::exchange(s->exception_, nullptr));
            if (s->closing_) throw GeneratorExit();  // it was closed and returned: now close us
        } else if constexpr (!std::is_void_v<Return>) {
            if (!sub.promise().returned())
                throw InvalidStateError("yield_from a generator that finished without returning");
        }
        if constexpr (!std::is_void_v<Return>) return std::move(*sub.promise().return_slot_);
    }
};

template <class Yield, class Send>
template <class Return2>
Delegation<Yield, Send, Return2> GenPromiseBase<Yield, Send>::yield_value(
    YieldFrom<Yield, Send, Return2> from) {
    Generator<Yield, Send, Return2>& g = from.generator;
    if (g.p_ == nullptr)
        throw InvalidStateError(
            "yield_from an empty Generator (default-constructed or moved-from)");
    if (g.p_->state_ == GenState::running || g.p_->state_ == GenState::transfer)
        throw ValueError("generator already executing");
    return {this, std::move(g)};
}

}  // namespace detail

}  // namespace asyncio
