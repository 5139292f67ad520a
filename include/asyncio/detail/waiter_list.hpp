// An intrusive FIFO list of suspended tasks, for the synchronization primitives. Nodes live in the
// awaiters (in the waiting coroutine's frame), so waiting never allocates, and a cancelled waiter
// unlinks itself in O(1). A node still linked when it is destroyed (its frame was freed because
// the loop closed with the task waiting) unlinks itself, so the primitive is left consistent.
#pragma once

#include "asyncio/detail/promise.hpp"

namespace asyncio::detail {

class WaiterList;

struct WaiterNode {
    WaiterNode* prev = nullptr;
    WaiterNode* next = nullptr;
    WaiterList* list = nullptr;  // the list it is linked in, if any

    WaiterNode() noexcept = default;
    WaiterNode(const WaiterNode&) noexcept {}  // a copy is a fresh, unlinked node
    WaiterNode& operator=(const WaiterNode&) noexcept { return *this; }
    inline ~WaiterNode();
    bool linked() const noexcept { return list != nullptr; }
};

class WaiterList {
public:
    WaiterList() = default;
    WaiterList(const WaiterList&) = delete;
    WaiterList& operator=(const WaiterList&) = delete;
    /// A primitive destroyed while tasks still wait on it (a bug in the program, but not a crash):
    /// its waiters are detached; they stay suspended until cancelled, and their cancellation does
    /// not touch the dead primitive (see unlink()).
    ~WaiterList() {
        while (head_ != nullptr) {
            WaiterNode* n = head_;
            head_ = n->next;
            n->prev = n->next = nullptr;
            n->list = nullptr;
        }
    }

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
        n->list = this;
    }
    void remove(WaiterNode* n) noexcept {
        if (n->list != this) return;
        if (n->prev != nullptr)
            n->prev->next = n->next;
        else
            head_ = n->next;
        if (n->next != nullptr)
            n->next->prev = n->prev;
        else
            tail_ = n->prev;
        n->prev = n->next = nullptr;
        n->list = nullptr;
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

/// Unlinks n from whatever list holds it (if any), without naming the list's owner.
inline void unlink(WaiterNode* n) noexcept {
    if (n->list != nullptr) n->list->remove(n);
}

inline WaiterNode::~WaiterNode() {
    if (list != nullptr) list->remove(this);
}

}  // namespace asyncio::detail
