// Seeded chaos (asyncio/testing.hpp): permutations of what asyncio leaves unordered, and the
// faults of a real network, injected where every operation passes (io_submit / io_try).
#include "chaos.hpp"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>

#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "backend/backend.hpp"
#include "backend/op_type.hpp"

namespace asyncio {

namespace detail {

namespace {

std::atomic<std::uint64_t> g_last_seed{0};
std::atomic<bool> g_have_seed{false};

bool is_stream_socket(int fd) noexcept {
    int type = 0;
    socklen_t n = sizeof type;
    return ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) == 0 && type == SOCK_STREAM;
}

/// A byte-stream operation, where any count is a legal result: recv/send/read/write on a
/// stream socket or a pipe (the kind's descriptor says which kinds, op_type.hpp). Never a
/// datagram (its boundaries would be lost).
bool stream_data_op(const IoOp& op) noexcept {
    switch (op_type(op).chaos_split) {
        case ChaosSplit::never:
            return false;
        case ChaosSplit::flagged:
            return op.short_means_not_ready;
        case ChaosSplit::stream_socket:
            return op.short_means_not_ready || is_stream_socket(op.fd);
    }
    return false;
}

/// The length this attempt may move (op.len when no fault applies), counted.
std::size_t cut_length(Chaos& c, const IoOp& op) noexcept {
    const testing::Faults& f = c.config.faults;
    const std::size_t len = op.len;
    if (len <= 1 || !(f.short_reads || f.partial_writes) || !stream_data_op(op)) return len;
    std::size_t n = len;
    if (is_reader(op)) {
        if (!f.short_reads) return len;
        // Half the time a single byte: what breaks parsers that assume whole messages.
        n = c.below(2) == 0 ? 1 : 1 + c.below(len);
        if (n < len) ++c.counts.short_reads;
    } else {
        if (!f.partial_writes) return len;
        n = 1 + c.below(len);
        if (n < len) ++c.counts.partial_writes;
    }
    return n;
}

/// Makes op move at most n bytes: op.len, and the iovecs of a vectored kind (its descriptor's cut).
void shorten(IoOp& op, std::size_t n, OpCut& cut) noexcept {
    if (n == op.len) return;
    if (const auto f = op_type(op).cut) f(op, n, cut);
    op.len = n;
}

/// Undoes shorten(): op's length is len again.
void lengthen(IoOp& op, std::size_t len, const OpCut& cut) noexcept {
    if (cut.active) op_type(op).uncut(op, cut);
    op.len = len;
}

void restore(Chaos& c, IoOp& op) noexcept {
    const auto it = c.saved.find(&op);
    if (it == c.saved.end()) return;
    lengthen(op, it->second.len, it->second.cut);
    op.complete = it->second.complete;
    c.saved.erase(it);
}

/// The completion of an operation chaos changed: restores what its owner set, then completes
/// it (a slow connect first waits on a timer).
void chaos_complete(void* p) {
    auto& op = *static_cast<IoOp*>(p);
    EventLoop* loop = t_running_loop;
    Chaos& c = *loop->chaos();
    const auto it = c.saved.find(&op);
    if (it == c.saved.end()) return;  // (never: every trampolined op has its entry)
    Chaos::Saved& s = it->second;
    if (s.delay && !s.delayed) {
        s.delayed = true;
        try {
            const auto ms = std::chrono::milliseconds(1 + static_cast<long>(c.below(50)));
            (void)loop->call_later(ms, [p] { chaos_complete(p); });
            ++c.counts.slow_connects;
            return;
        } catch (...) {
            // No memory for the timer: complete now.
        }
    }
    const Chaos::Saved saved = s;
    c.saved.erase(it);
    lengthen(op, saved.len, saved.cut);
    op.complete = saved.complete;
    saved.complete(p);
}

thread_local char t_thread_key;

}  // namespace

void chaos_token() noexcept {}

void Chaos::shuffle_ready_tail(ReadyQueue& ready, std::size_t n) noexcept {
    if (n < 2) return;
    for (std::size_t i = n; i > 1; --i) std::swap(ready.from_back(i - 1), ready.from_back(below(i)));
    ++counts.permutations;
}

void Chaos::post(Callback&& cb) {
    std::list<std::pair<std::uintptr_t, Callback>> node;
    node.emplace_back(reinterpret_cast<std::uintptr_t>(&t_thread_key), std::move(cb));
    std::lock_guard lock(posted_mutex);
    posted.splice(posted.end(), node);
}

void Chaos::take_posted(std::size_t k, std::vector<Callback>& out) {
    std::list<std::pair<std::uintptr_t, Callback>> taken;
    {
        std::lock_guard lock(posted_mutex);
        if (k > posted.size()) k = posted.size();  // (never: each token follows its callback)
        auto end = posted.begin();
        std::advance(end, static_cast<std::ptrdiff_t>(k));
        taken.splice(taken.end(), posted, posted.begin(), end);
    }
    std::vector<std::pair<std::uintptr_t, Callback>*> batch;
    batch.reserve(k);
    for (auto& e : taken) batch.push_back(&e);
    // A random interleaving of the threads' sequences, each kept in order: pick the next item
    // uniformly among all those left, then take its thread's next.
    std::vector<std::uintptr_t> keys;
    std::vector<std::vector<std::size_t>> lists;
    for (std::size_t i = 0; i < batch.size(); ++i) {
        std::size_t t = 0;
        while (t < keys.size() && keys[t] != batch[i]->first) ++t;
        if (t == keys.size()) {
            keys.push_back(batch[i]->first);
            lists.emplace_back();
        }
        lists[t].push_back(i);
    }
    std::vector<std::size_t> next(keys.size(), 0);
    out.reserve(out.size() + batch.size());
    if (keys.size() > 1) ++counts.permutations;
    for (std::size_t left = batch.size(); left > 0; --left) {
        std::size_t r = keys.size() > 1 ? below(left) : 0;
        std::size_t t = 0;
        while (r >= lists[t].size() - next[t]) {
            r -= lists[t].size() - next[t];
            ++t;
        }
        out.push_back(std::move(batch[lists[t][next[t]++]]->second));
    }
}

bool chaos_submit(EventLoop& loop, Chaos& c, IoOp& op, bool coop) {
    const testing::Faults& f = c.config.faults;
    const std::size_t len = op.len;
    const std::size_t n = cut_length(c, op);
    const bool delay = coop && f.slow_connect && op.kind == IoKind::connect;
    const bool wrapped = n != len || delay;
    if (wrapped) {
        Chaos::Saved& saved = c.saved[&op];  // may throw: nothing changed yet
        saved = Chaos::Saved{op.complete, len, delay, false, {}};
        shorten(op, n, saved.cut);
        op.complete = &chaos_complete;
    }
    bool at_once;
    try {
        at_once = loop.backend().submit(op);
    } catch (...) {
        if (wrapped) restore(c, op);
        throw;
    }
    if (!at_once) return false;
    if (delay) {
        loop.schedule(&chaos_complete, &op);  // which sets the connect's timer
        return false;
    }
    if (wrapped) restore(c, op);
    if (!coop) return true;
    if (f.eagain && c.below(2) == 0) {
        ++c.counts.eagain;
        loop.schedule(op.complete, &op);
        return false;
    }
    if (loop.consume_io_budget()) return true;
    loop.schedule(op.complete, &op);
    return false;
}

bool chaos_try(EventLoop& loop, Chaos& c, IoOp& op) {
    if (c.config.faults.eagain && c.below(2) == 0) {
        ++c.counts.eagain;
        return false;  // as if EAGAIN: nothing done, the op stays idle
    }
    const std::size_t len = op.len;
    OpCut cut;
    shorten(op, cut_length(c, op), cut);
    const bool done = loop.backend().try_now(op);
    lengthen(op, len, cut);
    return done;
}

void chaos_cancelled(Chaos& c, IoOp& op) noexcept { restore(c, op); }

void chaos_pop_due_timers(Chaos& c, TimerQueue& timers, ReadyQueue& ready, std::int64_t now,
                          void (*run_slot)(void*)) {
    std::vector<std::pair<std::int64_t, TimerId>> due;
    while (timers.has_timers() && timers.next_deadline() <= now) {
        const std::int64_t when = timers.next_deadline();
        TimerId id;
        if (!timers.pop_due(now, id)) break;
        due.emplace_back(when, id);
    }
    for (std::size_t i = 0; i < due.size();) {
        std::size_t j = i + 1;
        while (j < due.size() && due[j].first == due[i].first) ++j;
        if (j - i > 1) {
            c.shuffle(due.data() + i, j - i);
            ++c.counts.permutations;
        }
        i = j;
    }
    for (const auto& d : due) ready.push(run_slot, pack_timer_id(d.second));
}

void chaos_report(Chaos& c) noexcept {
    if (c.reported) return;
    c.reported = true;
    testing::print_seed(c.config.seed);
}

}  // namespace detail

namespace testing {

namespace {
std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}
}  // namespace

Faults Faults::parse(std::string_view text) {
    Faults f;
    while (true) {
        const std::size_t comma = text.find(',');
        const std::string_view name = trim(text.substr(0, comma));
        if (name == "short_reads") {
            f.short_reads = true;
        } else if (name == "partial_writes") {
            f.partial_writes = true;
        } else if (name == "eagain") {
            f.eagain = true;
        } else if (name == "slow_connect") {
            f.slow_connect = true;
        } else if (name == "all") {
            f = all();
        } else if (!name.empty() && name != "none") {
            throw ValueError("ASYNCIO_FAULTS: unknown fault '" + std::string(name) +
                             "' (short_reads, partial_writes, eagain, slow_connect, all, none)");
        }
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
    }
    return f;
}

std::optional<Chaos> chaos_from_environment() {
    const char* seed = std::getenv("ASYNCIO_SEED");
    const char* faults = std::getenv("ASYNCIO_FAULTS");
    const bool have_seed = seed != nullptr && *seed != '\0';
    const bool have_faults = faults != nullptr && *faults != '\0';
    if (!have_seed && !have_faults) return std::nullopt;
    Chaos c;
    if (have_seed) {
        char* end = nullptr;
        errno = 0;
        const unsigned long long v = std::strtoull(seed, &end, 10);
        if (errno != 0 || end == seed || *end != '\0' || *seed == '-')
            throw ValueError(std::string("ASYNCIO_SEED: not a number from 0 to 2^64-1: '") + seed + "'");
        c.seed = v;
    }
    if (have_faults) c.faults = Faults::parse(faults);
    return c;
}

void enable_chaos(EventLoop& loop, std::optional<Chaos> chaos) {
    if (!chaos) {
        loop.set_chaos(nullptr);
        return;
    }
    loop.set_chaos(std::make_unique<detail::Chaos>(*chaos));
    detail::g_last_seed.store(chaos->seed, std::memory_order_relaxed);
    detail::g_have_seed.store(true, std::memory_order_release);
}

std::optional<Chaos> chaos_of(const EventLoop& loop) noexcept {
    if (loop.chaos() == nullptr) return std::nullopt;
    return loop.chaos()->config;
}

std::optional<std::uint64_t> last_seed() noexcept {
    if (!detail::g_have_seed.load(std::memory_order_acquire)) return std::nullopt;
    return detail::g_last_seed.load(std::memory_order_relaxed);
}

void print_seed(std::uint64_t seed) noexcept {
    std::fprintf(stderr, "asyncio::testing: seed %llu (rerun with ASYNCIO_SEED=%llu)\n",
                 static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
    std::fflush(stderr);
}

FaultCounts fault_counts(const EventLoop& loop) noexcept {
    if (loop.chaos() == nullptr) return {};
    return loop.chaos()->counts;
}

}  // namespace testing

}  // namespace asyncio
