// The loop's seeded chaos (asyncio/testing.hpp): the generator, the permutations, the faults.
// Private to src/. The loop keeps a null pointer when chaos is off; every hook below is reached
// only through `if (chaos) [[unlikely]]`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "asyncio/detail/callback.hpp"
#include "asyncio/detail/io_op.hpp"
#include "asyncio/detail/ready_queue.hpp"
#include "asyncio/detail/timer_queue.hpp"
#include "asyncio/testing.hpp"
#include "backend/op_type.hpp"

namespace asyncio::detail {

struct Chaos {
    explicit Chaos(const testing::Chaos& c) noexcept : config(c), state(c.seed) {}

    /// splitmix64: one 64-bit word of state, so a seed is the whole state (replayable).
    std::uint64_t next() noexcept {
        std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    /// In [0, n) (n > 0); the modulo bias is below n / 2^64.
    std::size_t below(std::size_t n) noexcept { return static_cast<std::size_t>(next() % n); }
    template <class T>
    void shuffle(T* first, std::size_t n) noexcept {
        for (std::size_t i = n; i > 1; --i) std::swap(first[i - 1], first[below(i)]);
    }
    /// Permutes the last n entries of the ready queue (those one poll added).
    void shuffle_ready_tail(ReadyQueue& ready, std::size_t n) noexcept;

    testing::Chaos config;
    std::uint64_t state;
    testing::FaultCounts counts;
    bool reported = false;  // the seed was printed for this loop

    // call_soon_threadsafe: each callback is kept here with its thread's key, and a token goes
    // through the loop's lock-free queue (whose wake-up protocol stays as it is); a drain of k
    // tokens takes the first k callbacks and merges the threads' sequences at random. A list, so
    // that nodes are spliced under the mutex: a callback's move (user code, which may post
    // again) never runs while it is held.
    std::mutex posted_mutex;
    std::list<std::pair<std::uintptr_t, Callback>> posted;
    void post(Callback&& cb);
    /// Moves the first k posted callbacks to out, permuted (each thread's order kept).
    void take_posted(std::size_t k, std::vector<Callback>& out);

    // Operations whose length was cut or whose completion is delayed: what to restore before
    // their owner sees the completion.
    struct Saved {
        void (*complete)(void*);
        std::size_t len;
        bool delay;     // slow_connect: the completion waits on a timer first
        bool delayed;   // that timer is set
        OpCut cut{};    // a vectored op's shortened iovec (OpType::cut)
    };
    std::unordered_map<IoOp*, Saved> saved;
};

/// A call_soon_threadsafe token (does nothing; see Chaos::post).
void chaos_token() noexcept;
/// io_submit / io_try / io_cancel with chaos on (src/chaos.cpp).
bool chaos_submit(EventLoop& loop, Chaos& chaos, IoOp& op, bool coop);
bool chaos_try(EventLoop& loop, Chaos& chaos, IoOp& op);
void chaos_cancelled(Chaos& chaos, IoOp& op) noexcept;
/// Due timers into the ready queue, runs of equal deadlines permuted.
void chaos_pop_due_timers(Chaos& chaos, TimerQueue& timers, ReadyQueue& ready, std::int64_t now,
                          void (*run_slot)(void*));
/// Prints the seed once for this loop (an exception ended a run, an error was reported).
void chaos_report(Chaos& chaos) noexcept;

}  // namespace asyncio::detail
