// Introspection for tests and debugging (not for program logic: these report the library's
// bookkeeping, which may change meaning with it).
//
//   debug::live_frames()           coroutine frames (coroutines, tasks, futures, generators)
//                                  allocated and not yet freed by this thread; a test that
//                                  compares it before and after proves that no frame leaked
//   debug::io_registrations(loop)  loop's outstanding I/O registrations: pending socket
//                                  operations plus add_reader/add_writer watchers (0: the loop
//                                  makes no system call when it would not block)
//   debug::backend_counters(loop)  what loop's backend holds for multishot I/O (io_uring: the
//                                  provided-buffer ring, multishot receives/accepts armed, bytes
//                                  and connections kept for nobody yet; all 0 on epoll)
//   debug::kCallbackInlineBytes    a callback (call_soon, call_later, ...) whose callable is at
//                                  most this big is stored without a heap allocation
//   debug::frame_pooled<Promise>   true when frames of that promise type come from the library's
//                                  frame allocator (every coroutine type of the library)
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "asyncio/detail/callback.hpp"
#include "asyncio/detail/frame_allocator.hpp"
#include "asyncio/detail/io_op.hpp"

namespace asyncio::debug {

inline std::int64_t live_frames() noexcept { return detail::live_frames(); }

inline std::size_t io_registrations(EventLoop& loop) noexcept { return detail::io_registrations(loop); }

inline detail::BackendCounters backend_counters(EventLoop& loop) noexcept { return detail::io_counters(loop); }

inline constexpr std::size_t kCallbackInlineBytes = detail::Callback::kInline;

template <class Promise>
inline constexpr bool frame_pooled = std::is_base_of_v<detail::FrameAllocated, Promise>;

}  // namespace asyncio::debug
