// The loop's notion of time. Every loop reads time through a Clock so that tests can swap in a
// MockClock: with autojump on, the loop that would block waiting for its next timer instead moves
// the clock to that deadline at once (as Trio's MockClock and Tokio's paused time), so timer tests
// are exact and instant.
#pragma once

#include <chrono>
#include <memory>

namespace asyncio {

using TimePoint = std::chrono::steady_clock::time_point;
using Duration = std::chrono::steady_clock::duration;

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
    void advance(Duration d) noexcept { now_ += d; }
    void set_autojump(bool on) noexcept { autojump_ = on; }

private:
    TimePoint now_;
    bool autojump_;
};

}  // namespace asyncio
