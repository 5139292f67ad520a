// The library's configuration macros, in one place. Every header that uses one includes this.
//
//   ASYNCIO_TLS                 how the library declares its thread-locals (see below)
//   ASYNCIO_FRAME_POOL          1: coroutine frames come from the per-thread pool
//                               (detail/frame_allocator.hpp); 0 under ASan/TSan, so that a
//                               use-after-free of a frame is still caught
//   ASYNCIO_SYMMETRIC_TRANSFER  1: a Coroutine is started by symmetric transfer (Clang); 0: from
//                               its awaiter's await_suspend (GCC, see below)
//   ASYNCIO_ORIGIN_SOURCE_LOCATION  1: a coroutine's origin (name, file, line) is kept as one
//                               std::source_location (GCC); 0: as two pointers (Clang 14 has no
//                               std::source_location; see PromiseBase in detail/promise.hpp)
#pragma once

#include <version>

// The library's thread-locals are constant-initialized (constinit: no TLS wrapper call on access)
// and use the initial-exec model (no __tls_get_addr call from position-independent code). They are
// read on every task step.
#define ASYNCIO_TLS constinit thread_local __attribute__((tls_model("initial-exec")))

// Sanitizers see frames only if they come from operator new/delete.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ASYNCIO_FRAME_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ASYNCIO_FRAME_POOL 0
#endif
#endif
#ifndef ASYNCIO_FRAME_POOL
#define ASYNCIO_FRAME_POOL 1
#endif

// Symmetric transfer (await_suspend returning the next handle) only avoids stack growth when the
// compiler makes the resume a tail call. Clang always does; GCC before 15 does only when it
// optimizes sibling calls (not at -O0/-O1/-Og, not under ASan), so a loop of a million synchronous
// co_awaits overflowed the stack in debug builds. With GCC, a Coroutine is therefore run from its
// awaiter's await_suspend, and one that completes synchronously returns there (kInlineRun) so the
// awaiter continues without suspending: no stack growth for awaits in a row, in every build
// (nested synchronous awaits do use stack, one level per nesting).
#if defined(__clang__)
#define ASYNCIO_SYMMETRIC_TRANSFER 1
#else
#define ASYNCIO_SYMMETRIC_TRANSFER 0
#endif

// A frame's origin in one pointer where the compiler makes std::source_location (GCC; its
// function_name() is the full signature, from which src/graph.cpp takes the name the way
// __builtin_FUNCTION() gives it, a format only checked against GCC's).
#if defined(__cpp_lib_source_location) && !defined(__clang__)
#define ASYNCIO_ORIGIN_SOURCE_LOCATION 1
#else
#define ASYNCIO_ORIGIN_SOURCE_LOCATION 0
#endif
