// The loop's side of I/O operations and fd watchers: thin calls into the backend.
#include <cerrno>
#include <memory>

#include "asyncio/detail/io_op.hpp"
#include "asyncio/event_loop.hpp"
#include "backend/backend.hpp"

namespace asyncio {

namespace detail {

bool io_submit(EventLoop& loop, IoOp& op, bool coop) {
    if (loop.is_closed()) {
        op.result = -EBADF;
        op.state = IoState::done;
        return true;
    }
    if (!loop.backend().submit(op)) return false;
    if (!coop || loop.consume_io_budget()) return true;
    // Budget spent: the task yields once; the completion brings the result back next iteration.
    loop.schedule(op.complete, &op);
    return false;
}

bool io_cancel(EventLoop& loop, IoOp& op) noexcept {
    if (op.state != IoState::pending) return false;
    return loop.backend().cancel(op);
}

void io_forget_fd(int fd, bool closing) noexcept {
    EventLoop* loop = t_running_loop != nullptr ? t_running_loop : t_thread_loop;
    if (loop == nullptr || loop->is_closed()) return;
    loop->backend().forget_fd(fd, closing, loop->ready_queue());
}

std::size_t io_registrations(EventLoop& loop) noexcept { return loop.backend().registrations(); }

}  // namespace detail

void EventLoop::add_reader(int fd, detail::Callback cb) {
    if (closed_) throw RuntimeError("Event loop is closed");
    backend_->set_watcher(fd, false, std::make_shared<detail::Callback>(std::move(cb)));
}

bool EventLoop::remove_reader(int fd) {
    if (closed_) return false;
    return backend_->set_watcher(fd, false, nullptr);
}

void EventLoop::add_writer(int fd, detail::Callback cb) {
    if (closed_) throw RuntimeError("Event loop is closed");
    backend_->set_watcher(fd, true, std::make_shared<detail::Callback>(std::move(cb)));
}

bool EventLoop::remove_writer(int fd) {
    if (closed_) return false;
    return backend_->set_watcher(fd, true, nullptr);
}

}  // namespace asyncio
