// Unix signals: EventLoop::add_signal_handler/remove_signal_handler and the listeners of
// wait_signal (signals.hpp). See docs/design.md, "Signals".
//
// Mechanism (CPython's, without its main-thread rule): while some loop handles a signal, its
// process-wide disposition is on_signal(), installed with sigaction (SA_RESTART). Whatever thread
// the kernel picks runs it; it only does async-signal-safe things: for every loop that handles
// the signal it sets the signal's bit in that loop's `pending` word, and pushes the loop's one
// pre-made "dispatch" node onto the loop's call_soon_threadsafe queue (two atomic operations, no
// allocation), waking the loop if it may be blocked, exactly as call_soon_threadsafe does. The
// loop drains that queue in every iteration anyway, so a loop that handles signals costs nothing
// more per iteration, and one that is busy notices a signal at its next iteration. The dispatch
// runs on the loop, re-arms a new node first, then takes the pending bits: a delivery after that
// point posts the new node, so no delivery between the last one and the handler is lost.
//
// The loops that handle signals are in a global intrusive list that on_signal walks. A loop
// leaves it under g_mutex and then waits until no on_signal is inside (g_inflight), so the
// handler never touches a loop being destroyed.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include "asyncio/event_loop.hpp"
#include "backend/backend.hpp"
#include "signals_internal.hpp"

namespace asyncio {

namespace detail {

namespace {

constexpr int kMaxSignal = 64;  // Linux: signals 1..64 (NSIG is 65)
static_assert(NSIG - 1 <= kMaxSignal, "one bit per signal in a 64-bit word");

constexpr std::uint64_t bit_of(int sig) noexcept { return std::uint64_t{1} << (sig - 1); }

/// Python's _check_signal: signal.valid_signals() is what glibc's sigfillset holds (1..64 without
/// the two real-time signals glibc keeps for itself, 32 and 33).
void check_signal(int sig) {
    bool valid = sig >= 1 && sig < NSIG;
    if (valid) {
        sigset_t all;
        sigfillset(&all);
        valid = sigismember(&all, sig) == 1;
    }
    if (!valid) throw ValueError("invalid signal number " + std::to_string(sig));
}

}  // namespace

using SignalQueue = MpscQueue<Callback>;

/// A loop's signal state (EventLoop::signals_), made when the loop first catches a signal.
struct LoopSignals {
    explicit LoopSignals(EventLoop& l) : loop(&l) {}
    /// The loop's slot (EventLoop::signals_, for the functions below that are not members).
    static LoopSignals*& slot_of(EventLoop& l) noexcept { return l.signals_; }

    EventLoop* loop;
    std::atomic<std::uint64_t> mask{0};     // signals this loop catches (on_signal reads it)
    std::atomic<std::uint64_t> pending{0};  // delivered, not yet dispatched
    std::atomic<SignalQueue::Node*> armed{nullptr};  // the dispatch node on_signal will post
    std::atomic<LoopSignals*> next{nullptr};         // the global list

    struct Entry {
        std::shared_ptr<Callback> handler;  // shared: a handler may replace itself while it runs
        bool runner = false;                // the handler is asyncio::run()'s Ctrl-C handler
        SignalListener* head = nullptr;
        SignalListener* tail = nullptr;
    };
    Entry entries[kMaxSignal + 1];

    // Signal context: async-signal-safe only.
    void notify(std::uint64_t bit) noexcept {
        pending.fetch_or(bit, std::memory_order_acq_rel);
        if (SignalQueue::Node* n = armed.exchange(nullptr, std::memory_order_acq_rel)) {
            loop->ts_queue_.push_node(n);
            // As call_soon_threadsafe: write the wake-up fd only if the loop may be blocked.
            if (loop->polling_.load() && loop->polling_.exchange(false)) {
                loop->ts_wakeups_.fetch_add(1, std::memory_order_relaxed);
                loop->backend_->wakeup();
            }
        }
    }

    void arm() {
        if (armed.load(std::memory_order_relaxed) != nullptr) return;
        armed.store(SignalQueue::new_node(Callback([this] { dispatch(); })), std::memory_order_release);
    }

    void dispatch();
    void update(int sig);  // catch sig while it has a handler or a listener, else let it go
    void start(int sig);
    void stop(int sig) noexcept;
};

namespace {

std::mutex g_mutex;                     // the fields below but g_head's readers, and the dispositions
int g_users[kMaxSignal + 1];            // loops catching each signal
struct sigaction g_previous[kMaxSignal + 1];  // its disposition before the first of them
std::atomic<LoopSignals*> g_head{nullptr};    // loops that catch signals (on_signal walks it)
std::atomic<int> g_inflight{0};               // on_signal calls walking the list
std::atomic<bool> g_runner_armed{false};      // asyncio::run()'s second-Ctrl-C rule
std::atomic<unsigned> g_runner_hits{0};

void die_by_sigint() noexcept {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    ::sigaction(SIGINT, &dfl, nullptr);
    // Blocked while this handler runs: delivered (and fatal) as soon as it returns.
    ::raise(SIGINT);
}

void on_signal(int sig) {
    const int saved_errno = errno;
    if (sig == SIGINT && g_runner_armed.load()) {
        // asyncio::run(): the first Ctrl-C cancels the main task, a second one interrupts at
        // once (Python raises KeyboardInterrupt from its handler; we die by SIGINT, as Python
        // does when that KeyboardInterrupt is not caught).
        if (g_runner_hits.fetch_add(1) >= 1) {
            die_by_sigint();
            errno = saved_errno;
            return;
        }
    }
    const std::uint64_t bit = bit_of(sig);
    g_inflight.fetch_add(1);
    for (LoopSignals* s = g_head.load(); s != nullptr; s = s->next.load()) {
        if ((s->mask.load() & bit) != 0) s->notify(bit);
    }
    g_inflight.fetch_sub(1);
    errno = saved_errno;
}

}  // namespace

void LoopSignals::start(int sig) {
    std::lock_guard lock(g_mutex);
    const std::uint64_t bit = bit_of(sig);
    // The bit first: a delivery right after sigaction finds this loop.
    mask.fetch_or(bit);
    if (g_users[sig]++ > 0) return;
    struct sigaction sa {};
    sa.sa_handler = &on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // as Python's siginterrupt(sig, False): fewer EINTRs elsewhere
    if (::sigaction(sig, &sa, &g_previous[sig]) != 0) {
        const int err = errno;
        --g_users[sig];
        mask.fetch_and(~bit);
        if (err == EINVAL) throw RuntimeError("sig " + std::to_string(sig) + " cannot be caught");
        throw std::system_error(err, std::generic_category(), "sigaction");
    }
}

void LoopSignals::stop(int sig) noexcept {
    std::lock_guard lock(g_mutex);
    if (--g_users[sig] == 0) ::sigaction(sig, &g_previous[sig], nullptr);
    mask.fetch_and(~bit_of(sig));
}

void LoopSignals::update(int sig) {
    const Entry& e = entries[sig];
    const bool want = e.handler != nullptr || e.head != nullptr;
    const bool have = (mask.load(std::memory_order_relaxed) & bit_of(sig)) != 0;
    if (want && !have)
        start(sig);
    else if (!want && have)
        stop(sig);
}

void LoopSignals::dispatch() {
    // Re-arm before taking the bits: a delivery from here on posts the new node, so it is seen
    // by the next dispatch if not by this one. (No memory for the node: the bits wait for the
    // next dispatch that can be posted; nothing better to do in that state.)
    try {
        arm();
    } catch (...) {
    }
    std::uint64_t bits = pending.exchange(0, std::memory_order_acq_rel);
    while (bits != 0) {
        const int sig = __builtin_ctzll(bits) + 1;
        bits &= bits - 1;
        Entry& e = entries[sig];
        if (std::shared_ptr<Callback> h = e.handler) {
            try {
                (*h)();
            } catch (...) {
                loop->call_exception_handler({"Exception in callback", std::current_exception(), {}});
            }
        }
        // Listeners are one-shot: take the list as it is now, each is unlinked before it is told.
        SignalListener* l = e.head;
        e.head = e.tail = nullptr;
        while (l != nullptr) {
            SignalListener* next = l->next;
            l->linked = false;
            l->prev = l->next = nullptr;
            try {
                l->fn(l, sig);
            } catch (...) {
                loop->call_exception_handler({"Exception in callback", std::current_exception(), {}});
            }
            l = next;
        }
        try {
            update(sig);
        } catch (...) {
        }
    }
}

/// The loop's signal state, made (and listed for on_signal) on first use.
static LoopSignals& signals_of(EventLoop& loop, LoopSignals*& slot) {
    if (slot == nullptr) {
        auto s = std::make_unique<LoopSignals>(loop);
        s->arm();
        {
            std::lock_guard lock(g_mutex);
            s->next.store(g_head.load());
            g_head.store(s.get());
        }
        slot = s.release();
    }
    return *slot;
}

}  // namespace detail

namespace {
void check_loop_thread(const EventLoop& loop, const char* what) {
    if (detail::t_running_loop != &loop && loop.is_running())
        throw RuntimeError(std::string(what) +
                           ": Non-thread-safe operation invoked on an event loop other than the "
                           "current one");
}
}  // namespace

void EventLoop::add_signal_handler_cb(int sig, detail::Callback cb) {
    detail::check_signal(sig);
    if (closed_) throw RuntimeError("Event loop is closed");
    check_loop_thread(*this, "add_signal_handler()");
    detail::LoopSignals& s = detail::signals_of(*this, signals_);
    detail::LoopSignals::Entry& e = s.entries[sig];
    // The old handler lives on until this returns (and while it runs, if it replaced itself).
    std::shared_ptr<detail::Callback> old = std::move(e.handler);
    e.handler = std::make_shared<detail::Callback>(std::move(cb));
    try {
        s.update(sig);  // catches the signal if it was not caught yet: what may fail
    } catch (...) {
        e.handler = std::move(old);
        throw;
    }
    if (sig == SIGINT) {
        // A program's own SIGINT handler replaces asyncio::run()'s (as signal.signal does in
        // Python, which the Runner then leaves alone).
        e.runner = false;
        detail::g_runner_armed.store(false);
    }
}

bool EventLoop::remove_signal_handler(int sig) {
    detail::check_signal(sig);
    if (signals_ == nullptr) return false;
    check_loop_thread(*this, "remove_signal_handler()");
    detail::LoopSignals::Entry& e = signals_->entries[sig];
    if (!e.handler) return false;
    e.handler.reset();
    if (sig == SIGINT) {
        e.runner = false;
        detail::g_runner_armed.store(false);
    }
    signals_->update(sig);  // stopping never fails
    return true;
}

void EventLoop::add_signal_listener(detail::SignalListener& l) {
    detail::check_signal(l.sig);
    if (closed_) throw RuntimeError("Event loop is closed");
    check_loop_thread(*this, "wait_signal()");
    detail::LoopSignals& s = detail::signals_of(*this, signals_);
    detail::LoopSignals::Entry& e = s.entries[l.sig];
    if (l.sig == SIGINT && e.runner) {
        // Waiting for Ctrl-C is the program's own SIGINT handling: asyncio::run()'s steps aside.
        e.handler.reset();
        e.runner = false;
        detail::g_runner_armed.store(false);
    }
    l.prev = e.tail;
    l.next = nullptr;
    (e.tail != nullptr ? e.tail->next : e.head) = &l;
    e.tail = &l;
    l.linked = true;
    try {
        s.update(l.sig);
    } catch (...) {
        remove_signal_listener(l);
        throw;
    }
}

void EventLoop::remove_signal_listener(detail::SignalListener& l) noexcept {
    if (!l.linked || signals_ == nullptr) return;
    detail::LoopSignals::Entry& e = signals_->entries[l.sig];
    (l.prev != nullptr ? l.prev->next : e.head) = l.next;
    (l.next != nullptr ? l.next->prev : e.tail) = l.prev;
    l.prev = l.next = nullptr;
    l.linked = false;
    signals_->update(l.sig);  // stopping never fails
}

namespace detail {

void close_loop_signals(EventLoop& loop) noexcept {
    LoopSignals* s = LoopSignals::slot_of(loop);
    if (s == nullptr) return;
    for (int sig = 1; sig <= kMaxSignal; ++sig) {
        LoopSignals::Entry& e = s->entries[sig];
        if (e.runner) g_runner_armed.store(false);
        e.handler.reset();
        e.runner = false;
        for (SignalListener* l = e.head; l != nullptr;) {
            SignalListener* next = l->next;
            l->linked = false;
            l->prev = l->next = nullptr;
            l = next;
        }
        e.head = e.tail = nullptr;
        if ((s->mask.load() & bit_of(sig)) != 0) s->stop(sig);
    }
    {
        std::lock_guard lock(g_mutex);
        // Unlink from the list on_signal walks, then wait until no on_signal is inside it.
        std::atomic<LoopSignals*>* link = &g_head;
        while (link->load() != s) link = &link->load()->next;
        link->store(s->next.load());
        while (g_inflight.load() != 0) std::this_thread::yield();
    }
    if (SignalQueue::Node* n = s->armed.exchange(nullptr)) SignalQueue::delete_node(n);
    // A node already posted stays in the loop's queue: close() drops it without running it.
    LoopSignals::slot_of(loop) = nullptr;
    delete s;
}

// ---- the library's threads ----

AsyncSignalsBlocked::AsyncSignalsBlocked() noexcept {
    sigset_t set;
    sigfillset(&set);
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT, SIGPROF})
        sigdelset(&set, sig);
    pthread_sigmask(SIG_BLOCK, &set, &old_);
}

AsyncSignalsBlocked::~AsyncSignalsBlocked() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

// ---- asyncio::run()'s Ctrl-C ----

bool runner_sigint_begin(EventLoop& loop, Callback cb) {
    if (::getpid() != static_cast<pid_t>(::syscall(SYS_gettid))) return false;  // not the main thread
    struct sigaction current {};
    if (::sigaction(SIGINT, nullptr, &current) != 0) return false;
    if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL) return false;
    loop.add_signal_handler(SIGINT, std::move(cb));
    LoopSignals::slot_of(loop)->entries[SIGINT].runner = true;
    g_runner_hits.store(0);
    g_runner_armed.store(true);
    return true;
}

void runner_sigint_end(EventLoop& loop) noexcept {
    g_runner_armed.store(false);
    LoopSignals* s = LoopSignals::slot_of(loop);
    if (s == nullptr || !s->entries[SIGINT].runner) return;
    s->entries[SIGINT].runner = false;
    s->entries[SIGINT].handler.reset();
    s->update(SIGINT);
}

unsigned runner_sigint_hits() noexcept { return g_runner_hits.load(); }

}  // namespace detail

}  // namespace asyncio
