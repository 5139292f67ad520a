// asyncio::Barrier: a fixed number of tasks meet at a point (Python's asyncio.Barrier, 3.11+).
//
//   asyncio::Barrier barrier(3);
//   std::size_t index = co_await barrier.wait();   // 0..parties-1, unique within the round
//
// It follows CPython's implementation (Lib/asyncio/locks.py) state by state:
// - States: filling (tasks arrive), draining (the round is complete; its tasks are leaving),
//   resetting (reset() with tasks inside; they leave with BrokenBarrierError), broken (abort()).
// - wait(): while the barrier is draining or resetting, the task first waits for it to fill again
//   (this part can be cancelled without effect). Then, if broken: BrokenBarrierError("Barrier
//   aborted"). Otherwise it arrives; the parties-th arrival completes the round: it returns
//   parties-1 at once, without suspending, and every other task of the round returns its index.
//   A task of the round that wakes to find the barrier reset or aborted (even after the round
//   completed, if that happened before it ran, as in CPython) raises
//   BrokenBarrierError("Abort or reset of barrier"). When the last task of a draining or
//   resetting round has left, the barrier is filling again and the tasks held back arrive.
// - reset(): with tasks inside, the barrier is resetting (they raise BrokenBarrierError, new
//   ones wait until they are gone); with none, it is filling at once. This also repairs a broken
//   barrier. abort(): broken for good (until reset()); current and future waiters raise
//   BrokenBarrierError.
// - n_waiting(): tasks inside while filling (0 otherwise); broken(); parties().
// - Cancellation: a task cancelled while it waits for the round to fill leaves the barrier (the
//   round then needs one more arrival); the barrier is NOT broken (unlike threading.Barrier,
//   asyncio.Barrier does not break on cancellation). A task cancelled after its round completed
//   but before it ran raises CancelledError; the others of its round are unaffected.
//
// Where this differs from CPython, on purpose:
// - reset() and abort() are plain functions. In Python they are coroutines only because they
//   take the barrier's internal lock, which is never contended (every critical section is
//   synchronous), so they never suspend; here they simply act at once.
// - A cancelled task leaves the round at the moment it is cancelled (as cancelled waiters of
//   every other primitive do), not when it next runs; so a task arriving in between cannot
//   complete a round with it.
// - Indices are assigned when the round completes, by order of arrival among the tasks still in
//   the round, so they are unique even after a cancellation. (CPython hands out len-so-far at
//   arrival and can give two tasks the same index after a cancellation: CPython issue
//   gh-155233.) Without cancellations the indices are CPython's.
//
// Loop-thread only. A barrier destroyed while tasks wait on it (a bug) leaves them suspended until
// they are cancelled; their cancellation does not touch it.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>

#include "asyncio/coroutine.hpp"
#include "asyncio/detail/waiter.hpp"
#include "asyncio/exceptions.hpp"

namespace asyncio {

class Barrier {
public:
    /// ValueError("parties must be > 0") if parties < 1 (CPython's text).
    explicit Barrier(std::ptrdiff_t parties) : parties_(static_cast<std::size_t>(parties)) {
        if (parties < 1) throw ValueError("parties must be > 0");
    }
    Barrier(const Barrier&) = delete;
    Barrier& operator=(const Barrier&) = delete;
    /// Destroyed while tasks wait (a bug, but no crash): they stay suspended until cancelled, and
    /// then raise CancelledError without touching it.
    ~Barrier() {
        while (detail::WaiterNode* n = arrivals_.pop_front()) static_cast<Party*>(n)->inside = false;
    }

    /// Waits until `parties` tasks are waiting; returns this task's index (see above).
    Coroutine<std::size_t> wait();

    /// Resets the barrier (see above). Python's `await barrier.reset()`.
    void reset() {
        if (count_ > 0)
            state_ = State::resetting;
        else
            state_ = State::filling;
        wake_all();
    }
    /// Breaks the barrier (see above). Python's `await barrier.abort()`.
    void abort() {
        state_ = State::broken;
        wake_all();
    }

    /// The number of tasks needed to complete a round.
    std::size_t parties() const noexcept { return parties_; }
    /// The number of tasks waiting for the round to complete (0 unless filling).
    std::size_t n_waiting() const noexcept { return state_ == State::filling ? count_ : 0; }
    /// True once abort() was called (until reset()).
    bool broken() const noexcept { return state_ == State::broken; }

private:
    enum class State : std::uint8_t { filling, draining, resetting, broken };

    /// A task inside the barrier (arrived, not yet left). Linked in arrivals_ until its round
    /// completes and gives it an index.
    struct Party : detail::WaiterNode {
        std::size_t index = 0;
        bool inside = true;
    };

    /// One suspension of a task on the barrier (Python's `await self._cond.wait()`).
    class Park : public detail::ListWaiter {
    public:
        Park(Barrier& b, Party* party) noexcept : barrier_(b), party_(party) {}
        bool await_ready() const noexcept { return false; }
        template <class P>
        void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            wait_in(barrier_.parked_, h, "Barrier::wait()", &on_cancel);
        }
        void await_resume() const { end_wait(); }

    private:
        static bool on_cancel(detail::CancelHook* h) {
            auto* self = static_cast<Park*>(from_hook(h));
            const bool barrier_alive = self->linked();
            detail::unlink(self);
            self->cancel_wait();
            if (barrier_alive && self->party_ != nullptr) self->barrier_.leave(*self->party_);  // leave at once
            return false;
        }
        Barrier& barrier_;
        Party* party_;
    };

    /// The round is complete: give every party its index, let them go.
    void trip() {
        state_ = State::draining;
        std::size_t index = 0;
        while (detail::WaiterNode* n = arrivals_.pop_front()) static_cast<Party*>(n)->index = index++;
        wake_all();
    }
    /// A party leaves (returns, raises, or is cancelled); idempotent.
    void leave(Party& p) {
        if (!p.inside) return;
        p.inside = false;
        arrivals_.remove(&p);
        --count_;
        if (count_ == 0) {  // the last one out: the barrier fills again (unless broken)
            if (state_ == State::resetting || state_ == State::draining) state_ = State::filling;
            wake_all();
        }
    }
    /// Python's notify_all(): every suspended task re-checks the state.
    void wake_all() {
        parked_.wake_all();
    }

    std::size_t parties_;
    std::size_t count_ = 0;  // tasks inside
    State state_ = State::filling;
    detail::WaitQueue parked_;     // suspended tasks (Park), FIFO
    detail::WaiterList arrivals_;  // parties of the filling round, in arrival order
};

inline Coroutine<std::size_t> Barrier::wait() {
    // Held back while the previous round drains or resets.
    while (state_ == State::draining || state_ == State::resetting) co_await Park(*this, nullptr);
    if (state_ == State::broken) throw BrokenBarrierError("Barrier aborted");

    Party me;
    arrivals_.push_back(&me);
    ++count_;
    try {
        if (count_ == parties_) {
            trip();
        } else {
            while (state_ == State::filling) co_await Park(*this, &me);
            if (state_ == State::broken || state_ == State::resetting)
                throw BrokenBarrierError("Abort or reset of barrier");
        }
    } catch (...) {
        if (me.inside) leave(me);  // (not inside: the barrier was destroyed while we waited)
        throw;
    }
    leave(me);
    co_return me.index;
}

}  // namespace asyncio
