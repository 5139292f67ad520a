// Readiness-based backend: epoll plus an eventfd for cross-thread wake-ups.
#include "backend/epoll_backend.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>

#include "asyncio/detail/ready_queue.hpp"

namespace asyncio::detail {
namespace {

class EpollBackend final : public Backend {
public:
    EpollBackend() {
        epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
        if (epfd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
        wakefd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wakefd_ < 0) {
            const int err = errno;
            ::close(epfd_);
            throw std::system_error(err, std::generic_category(), "eventfd");
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = nullptr;  // null marks the wake-up fd
        if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) < 0) {
            const int err = errno;
            ::close(wakefd_);
            ::close(epfd_);
            throw std::system_error(err, std::generic_category(), "epoll_ctl");
        }
    }
    ~EpollBackend() override {
        ::close(wakefd_);
        ::close(epfd_);
    }

    std::size_t poll(std::int64_t timeout_ns, ReadyQueue& /*ready*/) override {
        int timeout_ms;
        if (timeout_ns < 0) {
            timeout_ms = -1;
        } else {
            // Round up: a timeout rounded down to 0 turns a short sleep into a busy loop.
            const std::int64_t ms = (timeout_ns + 999'999) / 1'000'000;
            timeout_ms = ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
        }
        epoll_event events[kMaxEvents];
        int n = ::epoll_wait(epfd_, events, kMaxEvents, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) return 0;  // the loop recomputes its timeout and comes back
            throw std::system_error(errno, std::generic_category(), "epoll_wait");
        }
        std::size_t completions = 0;
        for (int i = 0; i < n; ++i) {
            if (events[i].data.ptr == nullptr) {
                std::uint64_t value;
                while (::read(wakefd_, &value, sizeof value) > 0) {
                }
                continue;
            }
            ++completions;
        }
        return completions;
    }

    void wakeup() noexcept override {
        const std::uint64_t one = 1;
        // EAGAIN means the counter is saturated: the loop is being woken anyway.
        [[maybe_unused]] ssize_t r = ::write(wakefd_, &one, sizeof one);
    }

    const char* name() const noexcept override { return "epoll"; }

private:
    static constexpr int kMaxEvents = 256;
    int epfd_ = -1;
    int wakefd_ = -1;
};

}  // namespace

std::unique_ptr<Backend> make_epoll_backend() { return std::make_unique<EpollBackend>(); }

}  // namespace asyncio::detail
