// Large blocks for the loop's own big tables (frame slabs, the ready ring): 2 MiB-aligned anonymous
// mappings advised to use transparent huge pages. A program with a million tasks otherwise spends
// about half its time in page faults, one per 4 KiB of frames; with huge pages it takes one per
// 2 MiB. Where THP is off or the advice fails, these are plain page-backed mappings.
#pragma once

#include <cstddef>

namespace asyncio::detail {

inline constexpr std::size_t kLargeBlock = std::size_t{2} << 20;

/// A zero-filled block of `bytes` (a multiple of kLargeBlock), aligned to kLargeBlock; nullptr if
/// the system refuses the mapping.
void* allocate_large_block(std::size_t bytes) noexcept;
/// Returns a block of allocate_large_block(bytes).
void free_large_block(void* p, std::size_t bytes) noexcept;

/// Memory for a growable table of `bytes` (the ready ring, the timer lane): a large block, rounded
/// up to whole blocks, from kLargeBlock on; operator new below. Throws std::bad_alloc.
void* allocate_table(std::size_t bytes);
/// Returns the memory of allocate_table(bytes) (nullptr: nothing).
void free_table(void* p, std::size_t bytes) noexcept;

}  // namespace asyncio::detail
