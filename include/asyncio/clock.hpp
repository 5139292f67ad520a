// The loop's notion of time. Every loop reads time through a Clock so that tests can swap in a
// MockClock: with autojump on, the loop that would block waiting for its next timer instead moves
// the clock to that deadline at once (as Trio's MockClock and Tokio's paused time), so timer tests
// are exact and instant.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <ratio>
#include <type_traits>

namespace asyncio {

using TimePoint = std::chrono::steady_clock::time_point;
using Duration = std::chrono::steady_clock::duration;

// ---- time arithmetic that cannot overflow ----
// Every deadline in the library is computed here. A delay is taken in any unit and representation
// (years, seconds::max(), double seconds, ...), rounded up to the clock's nanoseconds (a 0.3 us
// wait must not become 0) and saturated: converting it in place (ceil<Duration>, or the implicit
// years -> nanoseconds conversion) or adding it to now is signed overflow, which made a wait of
// 1000 years time out at once.

/// `d` as a Duration, rounded up; beyond 2^62 ns (about 146 years) it is Duration::max() ("never"),
/// below -2^62 ns Duration::min(). NaN counts as zero.
template <class Rep, class Period>
constexpr Duration saturating_duration(std::chrono::duration<Rep, Period> d) noexcept {
    static_assert(std::is_arithmetic_v<Rep>, "a duration with an arithmetic representation");
    using R = std::ratio_divide<Period, Duration::period>;  // nanoseconds per tick
    constexpr long double kLimit = 0x1p62L;  // 2^62 ns
    if constexpr (std::is_integral_v<Rep> && R::den == 1) {
        // Whole nanoseconds per tick (s, ms, us, ns): integer arithmetic, no x87 on the path of
        // every wait_for and sleep. The same saturation as below: |value| >= 2^62 saturates.
        constexpr Duration::rep kIntLimit = Duration::rep{1} << 62;
        Duration::rep v;
        if (__builtin_mul_overflow(d.count(), R::num, &v)) return d.count() > 0 ? Duration::max() : Duration::min();
        if (v >= kIntLimit) return Duration::max();
        if (v <= -kIntLimit) return Duration::min();
        return Duration(v);
    } else {
        // long double decides the range (exact for any 64-bit count).
        const long double ns = static_cast<long double>(d.count()) * R::num / R::den;
        if (ns != ns) return Duration::zero();
        if (ns >= kLimit) return Duration::max();
        if (ns <= -kLimit) return Duration::min();
        return Duration(static_cast<Duration::rep>(std::ceil(ns)));
    }
}

/// now + d, saturated at TimePoint::max()/min() (a deadline that is never reached / already past).
template <class Rep, class Period>
constexpr TimePoint deadline_after(TimePoint now, std::chrono::duration<Rep, Period> d) noexcept {
    const Duration delay = saturating_duration(d);
    const Duration::rep n = now.time_since_epoch().count();
    Duration::rep when;
    if (__builtin_add_overflow(n, delay.count(), &when))
        return delay.count() > 0 ? TimePoint::max() : TimePoint::min();
    return TimePoint(Duration(when));
}

/// Nanoseconds from now until `deadline`, at least 0, saturated (the poll timeout).
constexpr std::int64_t nanoseconds_until(TimePoint deadline, TimePoint now) noexcept {
    if (deadline <= now) return 0;
    std::int64_t ns;
    if (__builtin_sub_overflow(deadline.time_since_epoch().count(), now.time_since_epoch().count(), &ns))
        return std::numeric_limits<std::int64_t>::max();
    return ns;
}

class Clock {
public:
    virtual ~Clock() = default;
    /// The current time; never goes backwards.
    virtual TimePoint now() const noexcept = 0;
    /// True when the loop may call advance_to() instead of sleeping until a deadline.
    virtual bool autojump() const noexcept { return false; }
    /// Moves a virtual clock forward to `when` (no-op if `when` is not after now()).
    virtual void advance_to(TimePoint /*when*/) noexcept {}
};

/// The default clock: std::chrono::steady_clock (CLOCK_MONOTONIC).
class MonotonicClock final : public Clock {
public:
    TimePoint now() const noexcept override { return std::chrono::steady_clock::now(); }
};

/// A virtual clock for tests. Time only moves when advance() is called or, with autojump (the
/// default), when the loop has nothing ready and no I/O to wait for, to the next timer's deadline.
class MockClock final : public Clock {
public:
    explicit MockClock(bool autojump = true, TimePoint start = TimePoint{std::chrono::hours(1)})
        : now_(start), autojump_(autojump) {}
    TimePoint now() const noexcept override { return now_; }
    bool autojump() const noexcept override { return autojump_; }
    void advance_to(TimePoint when) noexcept override {
        if (when > now_) now_ = when;
    }
    void advance(Duration d) noexcept { now_ = deadline_after(now_, d); }
    void set_autojump(bool on) noexcept { autojump_ = on; }

private:
    TimePoint now_;
    bool autojump_;
};

}  // namespace asyncio
