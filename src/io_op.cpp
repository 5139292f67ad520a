// The loop's side of I/O operations (detail/io_op.hpp): thin calls into the loop's backend, its
// I/O component.
#include <cerrno>

#include "asyncio/detail/io_op.hpp"
#include "asyncio/event_loop.hpp"
#include "backend/backend.hpp"
#include "chaos.hpp"
#include "trace.hpp"

namespace asyncio {

namespace detail {

// An operation passes two optional layers on its way to the backend: tracing (what the program
// asked and got) and, below it, seeded chaos (the faults a real network makes). The tracer
// calls the *_untraced functions, so that it records what chaos made of the operation.

bool io_submit_untraced(EventLoop& loop, IoOp& op, bool coop) {
    // Seeded chaos with faults (testing.hpp): the one place where I/O is made to misbehave.
    if (Chaos* chaos = loop.chaos()) [[unlikely]]
        return chaos_submit(loop, *chaos, op, coop);
    if (!loop.backend().submit(op)) return false;
    if (!coop || loop.consume_io_budget()) return true;
    // Budget spent: the task yields once; the completion brings the result back next iteration.
    loop.schedule(op.complete, &op);
    return false;
}

bool io_submit(EventLoop& loop, IoOp& op, bool coop) {
    if (loop.is_closed()) {
        op.result = -EBADF;
        op.state = IoState::done;
        return true;
    }
    if (Tracer* tr = loop.tracer()) [[unlikely]]
        return tr->io_submit(op, coop);
    return io_submit_untraced(loop, op, coop);
}

bool io_try_untraced(EventLoop& loop, IoOp& op) {
    if (Chaos* chaos = loop.chaos()) [[unlikely]]
        return chaos_try(loop, *chaos, op);
    return loop.backend().try_now(op);
}

bool io_try(EventLoop& loop, IoOp& op) {
    if (loop.is_closed()) {
        op.result = -EBADF;
        op.state = IoState::done;
        return true;
    }
    if (Tracer* tr = loop.tracer()) [[unlikely]]
        return tr->io_try(op);
    return io_try_untraced(loop, op);
}

bool io_cancel_untraced(EventLoop& loop, IoOp& op) noexcept {
    if (!loop.backend().cancel(op)) return false;
    if (Chaos* chaos = loop.chaos()) [[unlikely]]
        chaos_cancelled(*chaos, op);
    return true;
}

bool io_cancel(EventLoop& loop, IoOp& op) noexcept {
    if (op.state != IoState::pending) return false;
    if (Tracer* tr = loop.tracer()) [[unlikely]]
        return tr->io_cancel(op);
    return io_cancel_untraced(loop, op);
}

void io_forget_fd(int fd, bool closing) noexcept {
    EventLoop* loop = t_running_loop != nullptr ? t_running_loop : t_thread_loop;
    if (loop == nullptr || loop->is_closed()) return;
    loop->backend().forget_fd(fd, closing, loop->ready_queue());
}

std::size_t io_registrations(EventLoop& loop) noexcept { return loop.backend().registrations(); }

BackendCounters io_counters(EventLoop& loop) noexcept { return loop.backend().counters(); }

}  // namespace detail

}  // namespace asyncio
