// An intrusive FIFO list of suspended tasks, for the synchronization primitives. Nodes live in the
// awaiters (in the waiting coroutine's frame), so waiting never allocates, and a cancelled waiter
// unlinks itself in O(1).
#pragma once

#include "asyncio/detail/promise.hpp"

namespace asyncio::detail {

struct WaiterNode {
    WaiterNode* prev = nullptr;
    WaiterNode* next = nullptr;
    bool linked = false;
};

class WaiterList {
public:
    bool empty() const noexcept { return head_ == nullptr; }
    WaiterNode* front() const noexcept { return head_; }

    void push_back(WaiterNode* n) noexcept {
        n->prev = tail_;
        n->next = nullptr;
        if (tail_ != nullptr)
            tail_->next = n;
        else
            head_ = n;
        tail_ = n;
        n->linked = true;
    }
    void remove(WaiterNode* n) noexcept {
        if (!n->linked) return;
        if (n->prev != nullptr)
            n->prev->next = n->next;
        else
            head_ = n->next;
        if (n->next != nullptr)
            n->next->prev = n->prev;
        else
            tail_ = n->prev;
        n->prev = n->next = nullptr;
        n->linked = false;
    }
    WaiterNode* pop_front() noexcept {
        WaiterNode* n = head_;
        if (n != nullptr) remove(n);
        return n;
    }

private:
    WaiterNode* head_ = nullptr;
    WaiterNode* tail_ = nullptr;
};

}  // namespace asyncio::detail
