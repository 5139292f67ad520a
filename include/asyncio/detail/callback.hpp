// A move-only, type-erased `void()` callable with a small inline buffer, so that the loop can hold
// user callbacks (call_soon, call_later) without a heap allocation for small lambdas.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace asyncio::detail {

class Callback {
public:
    static constexpr std::size_t kInline = 24;

    Callback() noexcept = default;

    template <class F, class D = std::decay_t<F>,
              class = std::enable_if_t<!std::is_same_v<D, Callback> && std::is_invocable_v<D&>>>
    Callback(F&& f) {  // NOLINT(google-explicit-constructor): callables convert implicitly
        if constexpr (sizeof(D) <= kInline && alignof(D) <= alignof(std::max_align_t) &&
                      std::is_nothrow_move_constructible_v<D>) {
            ::new (static_cast<void*>(buf_)) D(std::forward<F>(f));
            ops_ = &inline_ops<D>;
        } else {
            *reinterpret_cast<D**>(buf_) = new D(std::forward<F>(f));
            ops_ = &heap_ops<D>;
        }
    }

    Callback(Callback&& o) noexcept : ops_(o.ops_) {
        if (ops_ != nullptr) {
            relocate_from(o);
            o.ops_ = nullptr;
        }
    }
    Callback& operator=(Callback&& o) noexcept {
        if (this != &o) {
            reset();
            if (o.ops_ != nullptr) {
                ops_ = o.ops_;
                relocate_from(o);
                o.ops_ = nullptr;
            }
        }
        return *this;
    }
    Callback(const Callback&) = delete;
    Callback& operator=(const Callback&) = delete;
    ~Callback() { reset(); }

    explicit operator bool() const noexcept { return ops_ != nullptr; }
    void operator()() { ops_->call(buf_); }
    void reset() noexcept {
        if (ops_ != nullptr) {
            if (ops_->destroy != nullptr) ops_->destroy(buf_);
            ops_ = nullptr;
        }
    }

private:
    // move == nullptr: the callable is trivially copyable, so moving it is copying the buffer;
    // destroy == nullptr: it is trivially destructible. Lambdas capturing pointers and references
    // (most callbacks) then move and die without an indirect call.
    struct Ops {
        void (*call)(void*);
        void (*move)(void* dst, void* src) noexcept;  // move-constructs dst, destroys src
        void (*destroy)(void*) noexcept;
    };
    template <class D>
    static constexpr Ops inline_ops{
        [](void* p) { (*static_cast<D*>(p))(); },
        std::is_trivially_copyable_v<D> ? nullptr
                                        : +[](void* dst, void* src) noexcept {
                                              ::new (dst) D(std::move(*static_cast<D*>(src)));
                                              static_cast<D*>(src)->~D();
                                          },
        std::is_trivially_destructible_v<D> ? nullptr
                                            : +[](void* p) noexcept { static_cast<D*>(p)->~D(); },
    };

    void relocate_from(Callback& o) noexcept {
        if (ops_->move == nullptr)
            std::memcpy(buf_, o.buf_, kInline);
        else
            ops_->move(buf_, o.buf_);
    }
    template <class D>
    static constexpr Ops heap_ops{
        [](void* p) { (**static_cast<D**>(p))(); },
        nullptr,  // the buffer holds a pointer: copying it moves the callable
        [](void* p) noexcept { delete *static_cast<D**>(p); },
    };

    alignas(std::max_align_t) unsigned char buf_[kInline];
    const Ops* ops_ = nullptr;
};

}  // namespace asyncio::detail
