// asyncio::Queue<T>, PriorityQueue<T, Compare>, LifoQueue<T>: asyncio's queues (Python 3.13), for
// handing items between tasks of one loop.
//
//   asyncio::Queue<Job> q(100);              // maxsize 100; 0 (the default) is unbounded
//   co_await q.put(std::move(job));          // waits while the queue is full
//   Job j = co_await q.get();                // waits while it is empty; the item is moved out
//   q.task_done();  co_await q.join();       // as Python: join waits for a task_done per put
//   q.shutdown();                            // put raises QueueShutDown; get once it is empty
//
// Order: Queue is FIFO, LifoQueue LIFO, PriorityQueue smallest first under Compare (heapq's order;
// equal items come out in no particular order). Tasks waiting in get(), put() and join() wait FIFO;
// a woken task runs later, from the ready queue, never inside the put/get that woke it.
//
// Promises (asyncio's design, bpo-23812 / python/cpython#108042): a waiting getter is only told
// "try again" when an item arrives; it takes the item itself when it runs. So a getter that is
// cancelled never takes an item with it: if it is cancelled after being woken but before it ran,
// the item stays in the queue and the next waiting getter is woken instead (no wake-up is lost).
// Symmetrically, a cancelled putter never inserts its item, and its free slot is passed on to the
// next waiting putter. A woken waiter that finds its item (or slot) taken by someone who did not
// wait waits again, at the back, as in Python.
//
// get() on a non-empty queue and put() on a non-full one complete without suspending (so, as in
// Python, they are not cancellation points); waiting allocates nothing (the waiter's node lives in
// the awaiting coroutine's frame).
//
// Shutdown (3.13): after shutdown(), put()/put_nowait() raise QueueShutDown (blocked putters are
// woken and raise it); get() keeps returning the items left and raises QueueShutDown once the queue
// is empty (blocked getters are woken to re-check). shutdown(true) also drops every queued item,
// decrements the count of unfinished tasks by the number dropped (never below zero) and, if that
// count reaches zero, releases join().
//
// Lifetime: the queue must not move while used (it is neither copyable nor movable). A task still
// waiting on a queue when the queue is destroyed stays suspended (safely detached) until it is
// cancelled, e.g. by asyncio::run()'s final cancellation of leftover tasks.
//
// Loop-thread only, like every asyncio primitive.
#pragma once

#include <algorithm>
#include <cassert>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "asyncio/detail/waiter.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/task.hpp"

namespace asyncio {

namespace detail {

// ---- item stores (the container policy of BasicQueue) ----
//
// A Store holds the items; the queue counts them itself. It provides:
//   template <class U> void push(U&& item);   // constructs a T from item
//   T pop();                                  // precondition: not empty; moves the next item out
//   void clear();                             // destroys every item
// If push() or pop() throws (allocation, T's move), the store is unchanged (the heap store assumes
// a Compare that does not throw).

/// FIFO: a growable ring buffer (no allocation per item once it has grown; the memory of a burst
/// is given back when the queue drains).
template <class T>
class FifoStore {
public:
    FifoStore() = default;
    FifoStore(const FifoStore&) = delete;
    FifoStore& operator=(const FifoStore&) = delete;
    ~FifoStore() {
        clear();
        release();
    }

    template <class U>
    void push(U&& item) {
        if (tail_ - head_ == cap_) grow();
        std::construct_at(buf_ + (tail_ & (cap_ - 1)), std::forward<U>(item));
        ++tail_;
    }
    T pop() {
        T* slot = buf_ + (head_ & (cap_ - 1));
        T item(std::move(*slot));
        std::destroy_at(slot);
        ++head_;
        if (head_ == tail_ && cap_ > kKeepCapacity) [[unlikely]]
            release();
        return item;
    }
    void clear() noexcept {
        for (; head_ != tail_; ++head_) std::destroy_at(buf_ + (head_ & (cap_ - 1)));
    }

private:
    static constexpr std::size_t kKeepCapacity = 1024;

    // Out of line: push() stays small enough to inline into the awaiters (a hand-off's hot path).
    [[gnu::noinline]] void grow() {
        const std::size_t n = tail_ - head_;
        const std::size_t ncap = cap_ == 0 ? 8 : cap_ * 2;
        std::allocator<T> alloc;
        T* nbuf = alloc.allocate(ncap);
        std::size_t i = 0;
        try {
            for (; i < n; ++i)
                std::construct_at(nbuf + i, std::move_if_noexcept(buf_[(head_ + i) & (cap_ - 1)]));
        } catch (...) {
            for (std::size_t j = 0; j < i; ++j) std::destroy_at(nbuf + j);
            alloc.deallocate(nbuf, ncap);
            throw;
        }
        clear();
        release();
        buf_ = nbuf;
        cap_ = ncap;
        head_ = 0;
        tail_ = n;
    }
    void release() noexcept {
        if (buf_ != nullptr) std::allocator<T>().deallocate(buf_, cap_);
        buf_ = nullptr;
        cap_ = 0;
    }

    T* buf_ = nullptr;
    std::size_t cap_ = 0;   // 0 or a power of two
    std::size_t head_ = 0;  // free-running indices: size is tail_ - head_
    std::size_t tail_ = 0;
};

/// LIFO: a vector used as a stack.
template <class T>
class LifoStore {
public:
    template <class U>
    void push(U&& item) {
        items_.emplace_back(std::forward<U>(item));
    }
    T pop() {
        T item(std::move(items_.back()));
        items_.pop_back();
        return item;
    }
    void clear() noexcept { items_.clear(); }

private:
    std::vector<T> items_;
};

/// Priority: a binary min-heap under Compare (the smallest item first, as heapq).
template <class T, class Compare>
class HeapStore {
public:
    explicit HeapStore(Compare comp = Compare()) : comp_(std::move(comp)) {}

    template <class U>
    void push(U&& item) {
        items_.emplace_back(std::forward<U>(item));
        std::push_heap(items_.begin(), items_.end(), Greater{&comp_});
    }
    T pop() {
        std::pop_heap(items_.begin(), items_.end(), Greater{&comp_});
        T item(std::move(items_.back()));
        items_.pop_back();
        return item;
    }
    void clear() noexcept { items_.clear(); }

private:
    struct Greater {  // std's heap functions keep the largest on top: invert the order
        const Compare* comp;
        bool operator()(const T& a, const T& b) const { return (*comp)(b, a); }
    };
    std::vector<T> items_;
    [[no_unique_address]] Compare comp_;
};

// ---- the type-independent part of every queue ----

class QueueCore;

enum class WaitKind : std::uint8_t { kGet, kPut, kJoin };

/// A task suspended in get(), put() or join(). Constructed inside the awaiter (so in the awaiting
/// coroutine's frame) only when the task really suspends. A woken waiter (past WaitList::next) is
/// only told to try again: it stays linked until its retry runs from the ready queue.
struct QueueWaiter : ListWaiter {
    QueueCore* queue;  // null once the queue is destroyed

    explicit QueueWaiter(QueueCore* q) noexcept : queue(q) {}
    QueueWaiter(const QueueWaiter&) = delete;
    QueueWaiter& operator=(const QueueWaiter&) = delete;
};

/// The waiters of one kind, FIFO. A woken waiter stays linked until its retry runs, so that a queue
/// being destroyed can still reach it: woken waiters form a prefix of the list, and next_ is the
/// first one not woken yet (waking one relinks nothing).
class WaitList {
public:
    bool has_waiting() const noexcept { return next_ != nullptr; }
    void push_back(QueueWaiter* w) noexcept {
        list_.push_back(w);
        if (next_ == nullptr) next_ = w;
    }
    /// The first waiter not woken yet (precondition: has_waiting()).
    QueueWaiter* next() const noexcept { return static_cast<QueueWaiter*>(next_); }
    /// The first waiter (woken or not; null if none): its loop is the queue's.
    QueueWaiter* front() const noexcept { return static_cast<QueueWaiter*>(list_.front()); }
    /// Marks next() as woken; it stays linked.
    void advance() noexcept { next_ = next_->next; }
    void remove(QueueWaiter* w) noexcept {
        if (next_ == w) next_ = w->next;
        list_.remove(w);
    }
    /// Unlinks every waiter (the queue is going away).
    void detach_all() noexcept {
        while (WaiterNode* n = list_.pop_front()) static_cast<QueueWaiter*>(n)->queue = nullptr;
        next_ = nullptr;
    }

private:
    WaiterList list_;
    WaiterNode* next_ = nullptr;
};

class QueueCore {
public:
    QueueCore(const QueueCore&) = delete;
    QueueCore& operator=(const QueueCore&) = delete;

    /// Number of items in the queue.
    std::size_t qsize() const noexcept { return size_; }
    /// The capacity given at construction (0: unbounded).
    std::size_t maxsize() const noexcept { return maxsize_; }
    bool empty() const noexcept { return size_ == 0; }
    /// True when maxsize items are queued; never for an unbounded queue.
    bool full() const noexcept { return maxsize_ != 0 && size_ >= maxsize_; }
    /// True once shutdown() was called (as Python's queue.Queue.is_shutdown).
    bool is_shutdown() const noexcept { return shutdown_; }

    /// One item taken from the queue has been fully processed (Python's task_done): when every
    /// item put has been, join() returns. ValueError if called more times than items were put.
    void task_done() {
        if (unfinished_ == 0) throw ValueError("task_done() called too many times");
        if (--unfinished_ == 0) wake_all<WaitKind::kJoin>();
    }

    /// The common part of the awaiters: the waiter node, built only when the task suspends.
    template <WaitKind K>
    class AwaiterBase {
    public:
        /// Movable until it is awaited (create_task, gather, wait_for, ... keep it in a frame).
        AwaiterBase(AwaiterBase&& o) noexcept : queue_(o.queue_) { assert(o.phase_ == kFresh); }
        AwaiterBase(const AwaiterBase&) = delete;
        AwaiterBase& operator=(const AwaiterBase&) = delete;
        template <class P>
        [[gnu::always_inline]] void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
            detail::note_await(h, line);
            check_wait_loop(queue_->list<K>().front(), kWhat[static_cast<int>(K)]);
            std::construct_at(&node_, queue_);
            phase_ = kSuspended;
            node_.begin_wait(h, kWhat[static_cast<int>(K)], &on_cancel<K>);
            queue_->list<K>().push_back(&node_);
        }

    protected:
        enum Phase : std::uint8_t { kFresh, kDone, kSuspended };
        static constexpr const char* kWhat[] = {"Queue::get()", "Queue::put()", "Queue::join()"};

        explicit AwaiterBase(QueueCore& q) noexcept : queue_(&q) {}
// GCC 12 at -O3 loses track of phase_ across the thread check in PutAwaiter::await_ready and
// warns that node_ (constructed only once phase_ is kSuspended) may be read uninitialized here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
        ~AwaiterBase() {
            if (phase_ != kSuspended) return;
            // Unlinked already, unless the frame is destroyed while it waits (the loop closed).
            // A dead queue has unlinked it too (detach_all).
            if (node_.linked()) [[unlikely]]
                node_.queue->list<K>().remove(&node_);
            std::destroy_at(&node_);
        }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
        /// After a suspension: raises CancelledError if the wait was cancelled. A waiter that had
        /// been woken passes its wake-up on first, so that none is lost (asyncio's "wake up the
        /// next in line").
        void end_wait() const {
            node_.end_wait([this] { pass_on<K>(node_); });
        }

        QueueCore* queue_;
        Phase phase_ = kFresh;
        union {
            QueueWaiter node_;
        };
    };

    class [[nodiscard]] JoinAwaiter : public AwaiterBase<WaitKind::kJoin> {
    public:
        explicit JoinAwaiter(QueueCore& q) noexcept : AwaiterBase(q) {}
        bool await_ready() const noexcept { return queue_->unfinished_ == 0; }
        void await_resume() const {
            if (phase_ == kSuspended) end_wait();
        }
    };

    /// Waits until every item put has been marked done with task_done() (at once if none is
    /// unfinished). Cancel-safe.
    [[nodiscard]] JoinAwaiter join() noexcept { return JoinAwaiter(*this); }

protected:
    explicit QueueCore(std::size_t maxsize) noexcept : maxsize_(maxsize) {}
    ~QueueCore() {
        // Detach whoever still waits: their cancel hooks and pending retries see a null queue.
        getters_.detach_all();
        putters_.detach_all();
        joiners_.detach_all();
    }

    /// Called before an item is added (K = kGet) or removed (kPut), so that nothing changes if it
    /// throws: RuntimeError if the waiter to wake belongs to a loop running on another thread
    /// (put_nowait from a plain thread: post it with call_soon_threadsafe).
    template <WaitKind K>
    void check_wake_thread(const char* what) const {
        const WaitList& l = K == WaitKind::kGet ? getters_ : putters_;
        if (l.has_waiting()) [[unlikely]]
            check_waker_thread(l.next(), what);
    }
    /// An item was added (put_nowait).
    void item_added() {
        ++size_;
        ++unfinished_;
        if (getters_.has_waiting()) wake_next<WaitKind::kGet>();
    }
    /// An item was removed (get_nowait).
    void item_removed() {
        --size_;
        if (putters_.has_waiting()) wake_next<WaitKind::kPut>();
    }
    /// shutdown(): `dropped` items were discarded by an immediate shutdown.
    void finish_shutdown(std::size_t dropped) {
        if (dropped > 0) {
            unfinished_ -= std::min(dropped, unfinished_);
            if (unfinished_ == 0) wake_all<WaitKind::kJoin>();
        }
        wake_all<WaitKind::kGet>();  // they re-check: take what is left, or raise QueueShutDown
        wake_all<WaitKind::kPut>();  // they raise QueueShutDown
    }

    std::size_t maxsize_;
    std::size_t size_ = 0;
    std::size_t unfinished_ = 0;
    bool shutdown_ = false;

private:
    template <WaitKind K>
    WaitList& list() noexcept {
        if constexpr (K == WaitKind::kGet)
            return getters_;
        else if constexpr (K == WaitKind::kPut)
            return putters_;
        else
            return joiners_;
    }
    /// Whether a woken waiter of kind K may go on now (else it waits again).
    template <WaitKind K>
    bool may_proceed() const noexcept {
        if constexpr (K == WaitKind::kGet)
            return size_ != 0 || shutdown_;
        else if constexpr (K == WaitKind::kPut)
            return !full() || shutdown_;
        else
            return true;  // join: released once, returns even if new items came since
    }

    /// Tells the first waiter of kind K not woken yet to try again, through the ready queue.
    /// Precondition: list<K>().has_waiting().
    template <WaitKind K>
    void wake_next() {
        WaitList& l = list<K>();
        QueueWaiter* w = l.next();
        w->wake_via(&retry<K>, w);  // first: if it throws, nothing changed
        l.advance();
    }
    template <WaitKind K>
    void wake_all() {
        while (list<K>().has_waiting()) wake_next<K>();
    }

    /// A woken waiter's turn (from the ready queue): resume the task if it can go on (or must
    /// raise CancelledError), else make it wait again, at the back (as Python's loop in get/put).
    template <WaitKind K>
    static void retry(void* ctx) {
        auto* w = static_cast<QueueWaiter*>(ctx);
        QueueCore* q = w->queue;
        PromiseBase* t = w->task();
        if (q != nullptr) [[likely]] {
            q->list<K>().remove(w);
            if (q->may_proceed<K>() || t->has(kMustCancel)) [[likely]] {
                step_task_now(t);  // may free the frame that holds w
                return;
            }
            q->list<K>().push_back(w);
        } else if (K == WaitKind::kJoin || t->has(kMustCancel)) {
            step_task_now(t);
            return;
        }
        // Wait again (detached if the queue is gone: until the task is cancelled).
        w->wait_again();
    }

    /// Task::cancel() of a task waiting here: unlink it and wake it to raise CancelledError.
    template <WaitKind K>
    static bool on_cancel(CancelHook* h) {
        auto* w = static_cast<QueueWaiter*>(ListWaiter::from_hook(h));
        if (w->queue != nullptr) w->queue->list<K>().remove(w);
        return w->cancel_wait();
    }

    /// A waiter woken for an item (a slot) but cancelled before it ran: wake the next one instead.
    template <WaitKind K>
    static void pass_on(const QueueWaiter& w) {
        if (w.queue == nullptr) return;
        QueueCore& q = *w.queue;
        if constexpr (K == WaitKind::kGet) {
            if (!q.empty() && q.getters_.has_waiting()) q.wake_next<K>();
        } else if constexpr (K == WaitKind::kPut) {
            if (!q.full() && q.putters_.has_waiting()) q.wake_next<K>();
        }
    }

    WaitList getters_;
    WaitList putters_;
    WaitList joiners_;
};

}  // namespace detail

/// The queue over a given item store; Queue, PriorityQueue and LifoQueue are this with FIFO, heap
/// and stack stores. T must be move-constructible; get() moves the item out.
template <class T, class Store>
class BasicQueue : public detail::QueueCore {
    using Kind = detail::WaitKind;

public:
    using value_type = T;

    /// An unbounded queue (not explicit, so that a queue can be a member initialized with {}).
    BasicQueue() : QueueCore(0) {}
    /// A queue of at most maxsize items (0: unbounded).
    explicit BasicQueue(std::size_t maxsize) : QueueCore(maxsize) {}
    BasicQueue(std::size_t maxsize, Store store) : QueueCore(maxsize), store_(std::move(store)) {}

    /// Adds item without waiting: QueueShutDown after shutdown(), QueueFull if the queue is full
    /// (either way the item is left untouched). Wakes the first waiting getter.
    void put_nowait(const T& item) { put_impl(item); }
    void put_nowait(T&& item) { put_impl(std::move(item)); }

    /// Removes and returns the next item without waiting: QueueEmpty if the queue is empty
    /// (QueueShutDown if it is also shut down). Wakes the first waiting putter.
    T get_nowait() {
        if (size_ == 0) [[unlikely]]
            throw_empty();
        check_wake_thread<Kind::kPut>("Queue::get_nowait()");
        T item = store_.pop();
        item_removed();
        return item;
    }

    /// Puts the queue in shutdown mode (Python 3.13; see the top of this header). Idempotent; an
    /// immediate shutdown after a normal one still drops the items left.
    void shutdown(bool immediate = false) {
        shutdown_ = true;
        std::size_t dropped = 0;
        if (immediate) {
            dropped = size_;
            size_ = 0;
            store_.clear();
        }
        finish_shutdown(dropped);
    }

    class [[nodiscard]] GetAwaiter : public AwaiterBase<Kind::kGet> {
    public:
        explicit GetAwaiter(BasicQueue& q) noexcept : AwaiterBase<Kind::kGet>(q) {}
        bool await_ready() const noexcept { return !queue_->empty() || queue_->is_shutdown(); }
        T await_resume() {
            if (this->phase_ == this->kSuspended) this->end_wait();
            return static_cast<BasicQueue*>(queue_)->get_nowait();
        }

    private:
        using AwaiterBase<Kind::kGet>::queue_;
    };

    class [[nodiscard]] PutAwaiter : public AwaiterBase<Kind::kPut> {
    public:
        template <class U>
        PutAwaiter(BasicQueue& q, U&& item) : AwaiterBase<Kind::kPut>(q), item_(std::forward<U>(item)) {}
        /// Puts at once when there is room (no suspension).
        bool await_ready() {
            auto& q = *static_cast<BasicQueue*>(queue_);
            if (q.shutdown_) return true;  // await_resume raises QueueShutDown
            if (q.full()) return false;
            q.template check_wake_thread<Kind::kGet>("Queue::put()");
            q.store_.push(std::move(item_));
            q.item_added();
            this->phase_ = this->kDone;
            return true;
        }
        void await_resume() {
            if (this->phase_ == this->kDone) return;
            if (this->phase_ == this->kSuspended) this->end_wait();
            static_cast<BasicQueue*>(queue_)->put_nowait(std::move(item_));
        }

    private:
        using AwaiterBase<Kind::kPut>::queue_;
        T item_;
    };

    /// Removes and returns the next item, waiting while the queue is empty. QueueShutDown once the
    /// queue is shut down and empty. Cancel-safe: a cancelled get() takes nothing.
    [[nodiscard]] GetAwaiter get() noexcept { return GetAwaiter(*this); }
    /// Adds item, waiting while the queue is full. QueueShutDown after shutdown(). Cancel-safe: a
    /// cancelled put() inserts nothing (the item is destroyed with the awaiter).
    [[nodiscard]] PutAwaiter put(const T& item) { return PutAwaiter(*this, item); }
    [[nodiscard]] PutAwaiter put(T&& item) { return PutAwaiter(*this, std::move(item)); }

private:
    template <class U>
    void put_impl(U&& item) {
        if (shutdown_) throw QueueShutDown();
        if (full()) throw QueueFull();
        check_wake_thread<Kind::kGet>("Queue::put_nowait()");
        store_.push(std::forward<U>(item));
        item_added();
    }
    [[noreturn, gnu::noinline]] void throw_empty() const {
        if (shutdown_) throw QueueShutDown();
        throw QueueEmpty();
    }

    Store store_;
};

/// asyncio.Queue: first in, first out.
template <class T>
class Queue : public BasicQueue<T, detail::FifoStore<T>> {
public:
    Queue() = default;
    explicit Queue(std::size_t maxsize) : BasicQueue<T, detail::FifoStore<T>>(maxsize) {}
};

/// asyncio.PriorityQueue: the smallest item under Compare first (heapq order).
template <class T, class Compare = std::less<T>>
class PriorityQueue : public BasicQueue<T, detail::HeapStore<T, Compare>> {
public:
    PriorityQueue() = default;
    explicit PriorityQueue(std::size_t maxsize, Compare comp = Compare())
        : BasicQueue<T, detail::HeapStore<T, Compare>>(
              maxsize, detail::HeapStore<T, Compare>(std::move(comp))) {}
};

/// asyncio.LifoQueue: last in, first out.
template <class T>
class LifoQueue : public BasicQueue<T, detail::LifoStore<T>> {
public:
    LifoQueue() = default;
    explicit LifoQueue(std::size_t maxsize) : BasicQueue<T, detail::LifoStore<T>>(maxsize) {}
};

}  // namespace asyncio
