// asyncio::testing: a test mode for your own tests (Trio's randomized scheduling and MockClock,
// Tokio's paused time), seeded so that a failure replays.
//
// Virtual time. Run on a VirtualClock and timers cost no wall-clock time: whenever nothing is
// ready and no I/O has arrived (every task is blocked, on a timer or on I/O that has not come),
// the loop jumps the clock straight to the next timer's deadline instead of sleeping. Time never
// moves otherwise (except by VirtualClock::advance), so `sleep(3600s)` returns at once, exactly
// 3600 s of loop time later, and timeouts fire in a fixed order.
//
//   asyncio::run(main(), {.clock = asyncio::testing::virtual_clock()});
//
// Seeded chaos. asyncio leaves some orders unspecified; a program that depends on one works by
// luck. With a seed, the loop permutes each of them from a deterministic generator (splitmix64),
// so a hidden dependency shows up as a failure under some seed, and the same seed replays the
// same run exactly (same program, same inputs, one thread):
//   - the order of I/O completions (and add_reader/add_writer callbacks) reported by one poll;
//   - timers that fall due in the same iteration with equal deadlines;
//   - call_soon_threadsafe callbacks taken in one drain (each posting thread's own order kept).
// What asyncio promises is never permuted: call_soon callbacks run FIFO; Lock, Semaphore,
// Condition and Queue hand over FIFO; a future's done callbacks run in the order they were added;
// the bytes of a stream arrive in order.
//
// Faults (a separate switch, with a seed): the loop's I/O layer makes stream I/O behave like a
// slow, congested network. Datagram I/O is never altered.
//   short_reads     a receive/read on a stream takes 1 byte (half the time) or a random count
//   partial_writes  a send/write on a stream takes a random count, 1..all
//   eagain          an operation that could complete at once is reported pending, its
//                   completion delivered by the loop a step later (as after EAGAIN and a
//                   readiness wake-up); a non-waiting try (a write() with nothing queued)
//                   fails as if EAGAIN, so the data takes the queued path
//   slow_connect    a connect completes 1..50 ms of loop time late
//
// Switching it on: the environment, read when each loop is made (so a whole test binary can be
// rerun under a seed with no code change),
//   ASYNCIO_SEED=N                      chaos with seed N (decimal, 0..2^64-1)
//   ASYNCIO_FAULTS=short_reads,eagain   and these faults (or "all"); alone it implies seed 0
// or in code, which takes precedence:
//   asyncio::run(main(), {.chaos = asyncio::testing::Chaos{.seed = 7, .faults = {.short_reads = true}}});
//   asyncio::testing::enable_chaos(loop, {.seed = 7});   // before the loop runs
//
// Printing the failing seed. When a loop with chaos on ends run_until_complete/asyncio::run with an
// exception, or reports an error through its exception handler, it prints once to stderr:
//   asyncio::testing: seed N (rerun with ASYNCIO_SEED=N)
// For GoogleTest, asyncio/testing_gtest.hpp has a listener that prints it for every failed test.
//
// Cost when off: the loop holds a null pointer; each permutation point and the I/O layer test it
// once (a predictable branch).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "asyncio/clock.hpp"

namespace asyncio {

class EventLoop;

namespace testing {

/// The virtual clock (clock.hpp's MockClock): autojump on by default.
using VirtualClock = MockClock;

/// A new virtual clock, for RunOptions::clock or EventLoop's constructor.
inline std::unique_ptr<Clock> virtual_clock(bool autojump = true) {
    return std::make_unique<VirtualClock>(autojump);
}

/// Which faults the I/O layer injects (see the top of this file).
struct Faults {
    bool short_reads = false;
    bool partial_writes = false;
    bool eagain = false;
    bool slow_connect = false;

    static constexpr Faults all() noexcept { return Faults{true, true, true, true}; }
    bool any() const noexcept { return short_reads || partial_writes || eagain || slow_connect; }
    /// Parses ASYNCIO_FAULTS's syntax: names separated by commas, or "all" ("" and "none":
    /// none). ValueError naming an unknown name.
    static Faults parse(std::string_view text);
};

/// A loop's chaos settings.
struct Chaos {
    std::uint64_t seed = 0;
    Faults faults{};
};

/// What ASYNCIO_SEED and ASYNCIO_FAULTS ask for; nullopt when both are unset or empty. ValueError
/// for a malformed value.
std::optional<Chaos> chaos_from_environment();

/// Turns chaos on (or, with nullopt, off) for loop. Before the loop runs and before another
/// thread may post to it; RuntimeError while it runs.
void enable_chaos(EventLoop& loop, std::optional<Chaos> chaos);
/// The loop's chaos settings, nullopt when off.
std::optional<Chaos> chaos_of(const EventLoop& loop) noexcept;
/// The seed of the loop with chaos most recently made or switched on in this process (any
/// thread), nullopt if none: what a test framework's failure hook prints.
std::optional<std::uint64_t> last_seed() noexcept;
/// Prints "asyncio::testing: seed N (rerun with ASYNCIO_SEED=N)" to stderr.
void print_seed(std::uint64_t seed) noexcept;

/// How often each fault was injected on a loop (all 0 with chaos off): lets a test check that the
/// faults really happened.
struct FaultCounts {
    std::uint64_t short_reads = 0;     // receives cut short
    std::uint64_t partial_writes = 0;  // sends cut short
    std::uint64_t eagain = 0;          // completions deferred, tries refused
    std::uint64_t slow_connects = 0;   // connects delayed
    std::uint64_t permutations = 0;    // batches (poll, equal timers, drain) reordered
};
FaultCounts fault_counts(const EventLoop& loop) noexcept;

}  // namespace testing
}  // namespace asyncio
