// asyncio/clock.hpp: saturating_duration and deadline_after at their edges (whole-nanosecond
// units take the integer path, fractional and floating ones the long double path: both saturate
// at 2^62 ns), and MockClock.
#include "asyncio/clock.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>

namespace {

using asyncio::Duration;
using asyncio::TimePoint;
using asyncio::saturating_duration;
using namespace std::chrono_literals;

constexpr std::int64_t kLimit = std::int64_t{1} << 62;

TEST(SaturatingDuration, WholeNanosecondUnitsAreExact) {
    EXPECT_EQ(saturating_duration(3ms), Duration(3'000'000));
    EXPECT_EQ(saturating_duration(-2s), Duration(-2'000'000'000));
    EXPECT_EQ(saturating_duration(0s), Duration::zero());
    EXPECT_EQ(saturating_duration(std::chrono::nanoseconds(kLimit - 1)), Duration(kLimit - 1));
}

TEST(SaturatingDuration, BeyondTwoToTheSixtySecondItSaturates) {
    EXPECT_EQ(saturating_duration(std::chrono::nanoseconds(kLimit)), Duration::max());
    EXPECT_EQ(saturating_duration(std::chrono::nanoseconds(-kLimit)), Duration::min());
    EXPECT_EQ(saturating_duration(std::chrono::seconds::max()), Duration::max());  // the multiply overflows
    EXPECT_EQ(saturating_duration(std::chrono::seconds::min()), Duration::min());
    EXPECT_EQ(saturating_duration(std::chrono::hours::max()), Duration::max());
    EXPECT_EQ(saturating_duration(std::chrono::years(1000)), Duration::max());
    using Unsigned = std::chrono::duration<unsigned long long, std::milli>;
    EXPECT_EQ(saturating_duration(Unsigned(std::numeric_limits<unsigned long long>::max())), Duration::max());
    EXPECT_EQ(saturating_duration(Unsigned(5)), Duration(5'000'000));
}

TEST(SaturatingDuration, FractionalAndFloatingUnitsRoundUpAndSaturate) {
    using Thirds = std::chrono::duration<long long, std::ratio<1, 3'000'000'000>>;
    EXPECT_EQ(saturating_duration(Thirds(1)), Duration(1));  // a third of a nanosecond, rounded up
    EXPECT_EQ(saturating_duration(std::chrono::duration<double>(1.5e-9)), Duration(2));
    EXPECT_EQ(saturating_duration(std::chrono::duration<double>(1e30)), Duration::max());
    EXPECT_EQ(saturating_duration(std::chrono::duration<double>(-1e30)), Duration::min());
    EXPECT_EQ(saturating_duration(std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN())),
              Duration::zero());
}

TEST(DeadlineAfter, SaturatesInsteadOfOverflowing) {
    const TimePoint now(Duration(1'000));
    EXPECT_EQ(asyncio::deadline_after(now, 1us), TimePoint(Duration(2'000)));
    EXPECT_EQ(asyncio::deadline_after(now, std::chrono::years(1000)), TimePoint::max());
    EXPECT_EQ(asyncio::deadline_after(TimePoint(Duration(kLimit)), std::chrono::nanoseconds(kLimit - 1)),
              TimePoint(Duration(kLimit + (kLimit - 1))));  // INT64_MAX exactly
    EXPECT_EQ(asyncio::deadline_after(TimePoint::min(), -1ns), TimePoint::min());
}

TEST(AMockClock, AdvancesAndSaturates) {
    asyncio::MockClock clock;
    const TimePoint start = clock.now();
    clock.advance(5ms);
    EXPECT_EQ(clock.now() - start, Duration(5'000'000));
    clock.advance(Duration::max());
    EXPECT_EQ(clock.now(), TimePoint::max());
}

}  // namespace
