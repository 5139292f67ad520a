#include "asyncio/detail/large_block.hpp"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace asyncio::detail {

void* allocate_large_block(std::size_t bytes) noexcept {
    // Map one extra 2 MiB so that an aligned block fits, then give the ends back.
    void* raw = ::mmap(nullptr, bytes + kLargeBlock, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const auto start = reinterpret_cast<std::uintptr_t>(raw);
    const std::uintptr_t aligned = (start + kLargeBlock - 1) & ~(std::uintptr_t{kLargeBlock} - 1);
    const std::size_t head = aligned - start;
    if (head > 0) ::munmap(raw, head);
    if (kLargeBlock - head > 0) ::munmap(reinterpret_cast<char*>(aligned) + bytes, kLargeBlock - head);
    auto* block = reinterpret_cast<void*>(aligned);
#ifdef MADV_HUGEPAGE
    ::madvise(block, bytes, MADV_HUGEPAGE);  // advice only: a failure leaves normal pages
#endif
    return block;
}

void free_large_block(void* p, std::size_t bytes) noexcept {
    if (p != nullptr) ::munmap(p, bytes);
}

namespace {
std::size_t whole_blocks(std::size_t bytes) noexcept {
    return (bytes + kLargeBlock - 1) / kLargeBlock * kLargeBlock;
}
}  // namespace

void* allocate_table(std::size_t bytes) {
    if (bytes < kLargeBlock) return ::operator new(bytes);
    void* p = allocate_large_block(whole_blocks(bytes));
    if (p == nullptr) throw std::bad_alloc();
    return p;
}

void free_table(void* p, std::size_t bytes) noexcept {
    if (p == nullptr) return;
    if (bytes < kLargeBlock)
        ::operator delete(p);
    else
        free_large_block(p, whole_blocks(bytes));
}

}  // namespace asyncio::detail
