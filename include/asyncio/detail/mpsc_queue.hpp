// The multi-producer single-consumer FIFO behind EventLoop::call_soon_threadsafe: Vyukov's
// non-intrusive linked queue. Every item is a heap node; the node the consumer took last stays as
// the head (a dummy whose value was moved out) until its successor is taken.
//
// Why a list of nodes rather than segments of slots: a producer is wait-free apart from its
// allocation (one exchange on the tail, one store that links the previous node) and never touches
// a node again once it has linked it, while the consumer frees a node only after reading that
// node's successor, so no node can be freed under a producer and no reclamation scheme is needed.
// A segment-based queue saves the allocation per item, but a producer that has read the tail
// segment and is preempted may touch it after the consumer retired it: that needs hazard pointers
// or epochs. One malloc/free pair per item is what this costs (bench/core_bench threadsafe_post).
//
// Order: items come out in the order of their exchanges on the tail, so the items of one producer
// come out in the order it pushed them. A push between its exchange and its link hides itself and
// every later item from the consumer until it links: the consumer sees a gap, not an empty queue
// (maybe_nonempty() stays true). The window is two instructions unless the producer is preempted
// there.
#pragma once

#include <atomic>
#include <cstddef>
#include <utility>

namespace asyncio::detail {

template <class T>
class MpscQueue {
public:
    MpscQueue() : tail_(new Node), head_(tail_.load(std::memory_order_relaxed)) {}
    MpscQueue(const MpscQueue&) = delete;
    MpscQueue& operator=(const MpscQueue&) = delete;
    /// No producer may be inside.
    ~MpscQueue() {
        clear();
        delete head_;
    }

    /// Any thread. The exchange is seq_cst: EventLoop orders it against its polling_ flag (a
    /// producer either sees that the loop may block, or the loop sees this push).
    void push(T&& value) { push_node(new Node(std::move(value))); }

    struct Node;
    /// A node made ahead of time, for push_node() where allocating is not allowed (a signal
    /// handler: EventLoop's signal wake-up). Once pushed, the queue owns it; else delete_node().
    static Node* new_node(T&& value) { return new Node(std::move(value)); }
    static void delete_node(Node* n) noexcept { delete n; }
    /// push() of a node from new_node(): two atomic operations, no allocation, so it is
    /// async-signal-safe (also when the signal interrupts a push or a drain on the same thread:
    /// either is only ever "between two steps", a state the queue already allows).
    void push_node(Node* n) noexcept {
        Node* prev = tail_.exchange(n, std::memory_order_seq_cst);
        prev->next.store(n, std::memory_order_release);  // prev is alive until this link is read
    }

    // ---- consumer only ----

    /// True while a push has begun (its exchange done) whose item has not been taken.
    bool maybe_nonempty(std::memory_order order = std::memory_order_seq_cst) const noexcept {
        return tail_.load(order) != head_;
    }

    /// Hands the items pushed before the call to take(T&), in order: at most those (an item pushed
    /// meanwhile waits for the next drain, so a busy producer cannot keep the consumer here).
    /// Returns false if it stopped early at a push still linking (the items behind it wait for a
    /// later drain). take moves the value out; if it throws, that item is dropped, never taken
    /// twice.
    template <class F>
    bool drain(F&& take) {
        Node* const last = tail_.load(std::memory_order_acquire);
        while (head_ != last) {
            Node* next = head_->next.load(std::memory_order_acquire);
            if (next == nullptr) return false;  // a push between its exchange and its link
            delete head_;
            head_ = next;  // next is the dummy from here on, whether take moves its value or throws
            take(next->value);
        }
        return true;
    }

    /// Destroys every item (on the calling thread) and returns how many. No producer may be inside
    /// (otherwise the items behind a push still linking are missed).
    std::size_t clear() noexcept {
        std::size_t n = 0;
        while (Node* next = head_->next.load(std::memory_order_acquire)) {
            delete head_;
            head_ = next;
            [[maybe_unused]] T dropped = std::move(next->value);
            ++n;
        }
        return n;
    }

    struct Node {
        Node() = default;
        explicit Node(T&& v) : value(std::move(v)) {}
        std::atomic<Node*> next{nullptr};
        T value{};
    };

private:
    // tail_ is written by every producer, head_ only by the consumer: kept a cache line apart
    // (by padding, not alignas, so that the queue needs no over-aligned storage).
    std::atomic<Node*> tail_;
    [[maybe_unused]] unsigned char pad_[64]{};
    Node* head_;
};

}  // namespace asyncio::detail
