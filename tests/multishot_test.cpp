// Multishot I/O (io_uring: a multishot recv per stream reading into the loop's provided-buffer
// ring, a multishot accept per serving listener) seen through the public API. Every test runs on
// both backends (CTest); the io_uring-only facts (what the ring and the multishots hold) are
// checked through debug::backend_counters, which reports zeros on epoll.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <any>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/debug.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/server.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/sock_ops.hpp"
#include "asyncio/streams.hpp"
#include "asyncio/task.hpp"
#include "asyncio/timeout.hpp"
#include "stream_test_support.hpp"
#include "test_support.hpp"

namespace {

using asyncio::Address;
using asyncio::Coroutine;
using asyncio::Server;
using asyncio::Socket;
using asyncio::StreamReader;
using asyncio::StreamWriter;
using asyncio::Task;
using stream_test::pattern;
using stream_test::until;
using namespace std::chrono_literals;

class Multishot : public asyncio_test::LeakChecked {};

using Streams = std::pair<StreamReader, StreamWriter>;

std::pair<Streams, Streams> stream_socketpair() {
    auto [a, b] = asyncio::socketpair();
    return {asyncio::open_connection(std::move(a)), asyncio::open_connection(std::move(b))};
}

asyncio::detail::BackendCounters counters() { return asyncio::debug::backend_counters(asyncio::get_running_loop()); }

bool on_uring() { return std::strcmp(asyncio::get_running_loop().backend_name(), "io_uring") == 0; }

/// Sets an environment variable for the life of the object (read when a loop sets its ring up).
class ScopedEnv {
public:
    ScopedEnv(const char* name, const char* value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old, had_ = true;
        ::setenv(name, value, 1);
    }
    ~ScopedEnv() {
        if (had_)
            ::setenv(name_, old_.c_str(), 1);
        else
            ::unsetenv(name_);
    }

private:
    const char* name_;
    std::string old_;
    bool had_ = false;
};

/// Writes `data` in chunks of varied sizes, draining after each.
Coroutine<> write_varied(StreamWriter w, const std::string& data) {
    std::size_t off = 0;
    std::size_t step = 1;
    while (off < data.size()) {
        const std::size_t n = std::min(data.size() - off, step);
        w.write(std::string_view(data).substr(off, n));
        co_await w.drain();
        off += n;
        step = step * 7 % 40000 + 1;
    }
    w.close();
}

/// Reads to EOF in reads of varied sizes.
Coroutine<std::string> read_varied(StreamReader r) {
    std::string all;
    std::size_t n = 3;
    for (;;) {
        std::string part = co_await r.read(static_cast<std::ptrdiff_t>(n));
        if (part.empty()) break;
        all += part;
        n = n * 5 % 30000 + 1;
    }
    co_return all;
}

// ---- bytes in order across many completions ----

TEST_F(Multishot, BytesArriveInOrderAcrossManyCompletions) {
    asyncio::run([]() -> Coroutine<> {
        auto pairs = stream_socketpair();
        const std::string data = pattern(4 << 20, 11);
        Task<> writer = asyncio::create_task(write_varied(pairs.first.second, data));
        Task<std::string> reader = asyncio::create_task(read_varied(pairs.second.first));
        co_await writer;
        const std::string got = co_await reader;
        CO_ASSERT(got.size() == data.size());
        CO_ASSERT(stream_test::first_difference(got, data) == -1);
        CO_ASSERT(counters().multishot_recv == 0);  // EOF ended it
        CO_ASSERT(counters().stashed_bytes == 0);
    }());
}

TEST_F(Multishot, ATinyRingRunsDryWithoutStallingOrReordering) {
    ScopedEnv env("ASYNCIO_URING_BUFFERS", "2:64");
    asyncio::run([]() -> Coroutine<> {
        std::vector<std::pair<Streams, Streams>> pairs;
        std::vector<std::string> data;
        std::vector<Task<>> writers;
        std::vector<Task<std::string>> readers;
        for (int i = 0; i < 8; ++i) {
            pairs.push_back(stream_socketpair());
            data.push_back(pattern(256 * 1024, static_cast<std::uint32_t>(i + 1)));
        }
        for (int i = 0; i < 8; ++i) {
            writers.push_back(asyncio::create_task(write_varied(pairs[static_cast<std::size_t>(i)].first.second,
                                                                data[static_cast<std::size_t>(i)])));
            readers.push_back(asyncio::create_task(read_varied(pairs[static_cast<std::size_t>(i)].second.first)));
        }
        for (std::size_t i = 0; i < 8; ++i) {
            co_await writers[i];
            const std::string got = co_await readers[i];
            CO_ASSERT(got == data[i]);
        }
        if (on_uring()) {
            CO_ASSERT(counters().buffers == 2);
            CO_ASSERT(counters().buffer_size == 64);
            CO_ASSERT(counters().enobufs > 0);  // the fallback receive ran
        }
    }());
}

// ---- 10,000 idle connections ----

// Both ends are in this process (two descriptors per connection): with the usual hard limit of
// 20,000 descriptors that is 9,950 connections, else 10,000.
int g_connections = 10'000;

TEST_F(Multishot, TenThousandIdleReadersPinNoReceiveBuffer) {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    const rlimit saved = rl;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 2 * 10'000 + 100)
        g_connections = static_cast<int>((rl.rlim_max - 100) / 2);
    if (g_connections < 5'000) GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << rl.rlim_max << " is too low";
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 2 * 10'000 + 100 : rl.rlim_max;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &rl), 0);
    struct Restore {
        rlimit r;
        ~Restore() { ::setrlimit(RLIMIT_NOFILE, &r); }
    } restore{saved};
    asyncio::run([]() -> Coroutine<> {
        std::vector<std::pair<Streams, Streams>> pairs;
        pairs.reserve(static_cast<std::size_t>(g_connections));
        std::vector<Task<std::string>> readers;
        readers.reserve(static_cast<std::size_t>(g_connections));
        for (int i = 0; i < g_connections; ++i) pairs.push_back(stream_socketpair());
        const std::size_t heap0 = ::mallinfo2().uordblks;
        for (auto& p : pairs)
            readers.push_back(asyncio::create_task([](StreamReader r) -> Coroutine<std::string> {
                co_return co_await r.read(100);
            }(p.second.first)));
        CO_ASSERT(co_await until([] { return asyncio::debug::io_registrations(asyncio::get_running_loop()) >= static_cast<std::size_t>(g_connections); }));
        const std::size_t heap = ::mallinfo2().uordblks - heap0;
        if (on_uring()) {
            CO_ASSERT(counters().multishot_recv == static_cast<std::size_t>(g_connections));
            CO_ASSERT(counters().stashed_bytes == 0);
            // A reader waiting with a buffer of its own would hold 16 KiB (160 MB for all):
            // here each holds its task, its frame and its waiting receive only.
            if (!stream_test::kSanitized) CO_ASSERT(heap < static_cast<std::size_t>(g_connections) * 4096);
        }
        std::printf("[          ] %d idle readers: %zu heap bytes each, %zu provided buffers of %zu bytes\n",
                    g_connections, heap / static_cast<std::size_t>(g_connections), counters().buffers, counters().buffer_size);
        for (auto& p : pairs) p.first.second.write("x");
        for (auto& t : readers) CO_ASSERT(co_await t == "x");
        for (auto& p : pairs) {
            p.first.second.close();
            p.second.second.close();
        }
        for (auto& p : pairs) {
            co_await p.first.second.wait_closed();
            co_await p.second.second.wait_closed();
        }
    }());
}

// ---- flow control: a slow reader pauses the multishot, reading resumes it ----

TEST_F(Multishot, ASlowReaderPausesTheMultishotAndResumesIt) {
    asyncio_test::run_virtual([]() -> Coroutine<> {
        auto pairs = stream_socketpair();
        const std::string data = pattern(1 << 20, 5);
        Task<> writer = asyncio::create_task(write_varied(pairs.first.second, data));
        StreamReader r = pairs.second.first;
        std::string got;
        bool paused = false;
        bool resumed = false;
        std::size_t max_stash = 0;
        for (;;) {
            std::string part = co_await r.read(4096);
            if (part.empty()) break;
            got += part;
            const auto c = counters();
            max_stash = std::max(max_stash, c.stashed_bytes);
            if (c.multishot_recv == 0 && c.stashed_bytes > 0) paused = true;
            if (paused && c.multishot_recv == 1) resumed = true;
            co_await asyncio::sleep(1ms);
        }
        co_await writer;
        CO_ASSERT(got == data);
        if (on_uring()) {
            CO_ASSERT(paused);
            CO_ASSERT(resumed);
            // The pause threshold (16 KiB) plus what the kernel posts in one burst (at most 32
            // buffers of 16 KiB) before the cancel takes effect.
            CO_ASSERT(max_stash <= 16 * 1024 + 32 * 16 * 1024);
        }
    }());
}

// ---- large receives: the provided buffer itself goes to the reader (IoOp::adopt) ----

/// Writes `count` messages of `size` bytes (message k = pattern(size, k + 1)), draining after each,
/// then closes.
Coroutine<> write_messages(StreamWriter w, std::size_t count, std::size_t size) {
    for (std::size_t k = 0; k < count; ++k) {
        w.write(pattern(size, static_cast<std::uint32_t>(k + 1)));
        co_await w.drain();
    }
    w.close();
}

// Request and answer, as an echo server sees them: each 16 KiB message arrives while the reader
// waits for it, with its reader's buffer empty.
TEST_F(Multishot, ALargeReceiveIsHandedToTheReaderWithoutACopy) {
    asyncio::run([]() -> Coroutine<> {
        auto pairs = stream_socketpair();
        constexpr std::size_t kCount = 200;
        constexpr std::size_t kSize = 16 * 1024;
        Task<> writer = asyncio::create_task([](Streams client) -> Coroutine<> {
            for (std::size_t k = 0; k < kCount; ++k) {
                client.second.write(pattern(kSize, static_cast<std::uint32_t>(k + 1)));
                co_await client.second.drain();
                CO_ASSERT(co_await client.first.readexactly(1) == "k");
            }
            client.second.close();
        }(pairs.first));
        StreamReader r = pairs.second.first;
        StreamWriter w = pairs.second.second;
        std::string got;
        std::size_t reads = 0;
        for (;;) {
            std::string part = co_await r.read(65536);
            if (part.empty()) break;
            ++reads;
            got += part;
            if (got.size() % kSize == 0) w.write("k");
        }
        co_await writer;
        std::string want;
        for (std::size_t k = 0; k < kCount; ++k) want += pattern(kSize, static_cast<std::uint32_t>(k + 1));
        CO_ASSERT(got.size() == want.size());
        CO_ASSERT(stream_test::first_difference(got, want) == -1);
        const auto c = counters();
        if (on_uring()) {
            // A message that comes in one piece fills a 16 KiB buffer that the reader takes whole.
            CO_ASSERT(c.handed_over >= kCount / 2);
            CO_ASSERT(c.handed_over <= reads);
            CO_ASSERT(c.buffers == 256);  // each buffer handed over was replaced in the ring
        } else {
            CO_ASSERT(c.handed_over == 0);
        }
    }());
}

TEST_F(Multishot, SmallReceivesAreCopiedNotHandedOver) {
    asyncio::run([]() -> Coroutine<> {
        auto pairs = stream_socketpair();
        Task<> writer = asyncio::create_task(write_messages(pairs.first.second, 100, 64));
        StreamReader r = pairs.second.first;
        std::string got;
        for (;;) {
            std::string part = co_await r.read(65536);
            if (part.empty()) break;
            got += part;
        }
        co_await writer;
        std::string want;
        for (std::size_t k = 0; k < 100; ++k) want += pattern(64, static_cast<std::uint32_t>(k + 1));
        CO_ASSERT(got == want);
        CO_ASSERT(counters().handed_over == 0);  // a 64-byte copy is cheaper than a new 16 KiB buffer
    }());
}

// A reader that leaves bytes in its buffer (small reads, readexactly, readline) gets the next
// large receive appended behind them, never handed over in front of them.
TEST_F(Multishot, HandedOverBuffersKeepByteOrderWithPartialReads) {
    ScopedEnv env("ASYNCIO_URING_BUFFERS", "4:16384");  // few buffers: each slot is replaced many times
    asyncio::run([]() -> Coroutine<> {
        auto pairs = stream_socketpair();
        constexpr std::size_t kCount = 300;
        constexpr std::size_t kSize = 16 * 1024;
        Task<> writer = asyncio::create_task(write_messages(pairs.first.second, kCount, kSize));
        StreamReader r = pairs.second.first;
        std::string got;
        std::size_t step = 0;
        for (;;) {
            std::string part;
            switch (step++ % 4) {
                case 0:
                    part = co_await r.read(65536);
                    break;
                case 1:
                    part = co_await r.read(1000);
                    break;
                case 2:
                    try {
                        part = co_await r.readexactly(20000);
                    } catch (const asyncio::IncompleteReadError& e) {
                        part = e.partial();
                    }
                    break;
                default:
                    part = co_await r.read(16 * 1024 - 7);
                    break;
            }
            if (part.empty()) break;
            got += part;
        }
        co_await writer;
        std::string want;
        for (std::size_t k = 0; k < kCount; ++k) want += pattern(kSize, static_cast<std::uint32_t>(k + 1));
        CO_ASSERT(got.size() == want.size());
        CO_ASSERT(stream_test::first_difference(got, want) == -1);
        if (on_uring()) {
            const auto c = counters();
            CO_ASSERT(c.handed_over > 0);
            CO_ASSERT(c.buffers == 4);
        }
    }());
}

// ---- cancel and close ----

TEST_F(Multishot, ACancelledReadLosesNothingTheKernelDeliveredAfterIt) {
    asyncio::run([]() -> Coroutine<> {
        auto pairs = stream_socketpair();
        StreamReader r = pairs.second.first;
        Task<std::string> t = asyncio::create_task([](StreamReader r) -> Coroutine<std::string> {
            co_return co_await r.read(100);
        }(r));
        co_await stream_test::yield_a_few();
        t.cancel();
        bool cancelled = false;
        try {
            (void)co_await t;
        } catch (const asyncio::CancelledError&) {
            cancelled = true;
        }
        CO_ASSERT(cancelled);
        // The multishot is still armed: what arrives now is kept for the next read.
        pairs.first.second.write("after the cancel");
        co_await asyncio::sleep(20ms);  // the loop waits in the kernel: the multishot delivers
        if (on_uring()) CO_ASSERT(counters().stashed_bytes == 16);
        CO_ASSERT(co_await r.read(100) == "after the cancel");
        CO_ASSERT(counters().stashed_bytes == 0);
    }());
}

// wait_readable (an op of kind readable) on a socket whose stream read with a multishot: the
// bytes the multishot kept are no longer in the socket, so a poll on it would never fire. The
// wait is ready at once while the backend keeps bytes for the fd, and they are still read in
// order. (Found making TLS receive after readiness: start_tls on such a socket hung.)
TEST_F(Multishot, RegressionWaitReadableSeesWhatAStreamsMultishotKept) {
    asyncio::run([]() -> Coroutine<> {
        auto pairs = stream_socketpair();
        StreamReader r = pairs.second.first;
        const int fd = std::any_cast<int>(pairs.second.second.get_extra_info("socket"));
        pairs.first.second.write("first");
        CO_ASSERT(co_await r.read(100) == "first");  // the multishot is armed now (io_uring)
        pairs.first.second.write("kept");
        co_await asyncio::sleep(20ms);  // the loop waits in the kernel: the multishot delivers
        if (on_uring()) CO_ASSERT(counters().stashed_bytes == 4);
        co_await asyncio::wait_for(asyncio::wait_readable(fd), 5s);  // TimeoutError before the fix
        CO_ASSERT(co_await r.read(100) == "kept");
        pairs.first.second.write("after");
        CO_ASSERT(co_await r.read(100) == "after");
        CO_ASSERT(counters().stashed_bytes == 0);
    }());
}

TEST_F(Multishot, ClosingAStreamWithAReceiveInFlightEndsItAndLeaksNothing) {
    asyncio::run([]() -> Coroutine<> {
        auto pairs = stream_socketpair();
        StreamReader r = pairs.second.first;
        StreamWriter w = pairs.second.second;
        Task<std::string> t = asyncio::create_task([](StreamReader r) -> Coroutine<std::string> {
            co_return co_await r.read(100);
        }(r));
        co_await stream_test::yield_a_few();
        if (on_uring()) CO_ASSERT(counters().multishot_recv == 1);
        w.close();
        co_await w.wait_closed();
        CO_ASSERT(co_await t == "");  // as on epoll: the closed stream reads EOF
        CO_ASSERT(counters().multishot_recv == 0);
        CO_ASSERT(asyncio::debug::io_registrations(asyncio::get_running_loop()) == 0);
        // The peer sees the close at once (the kernel let go of the socket).
        CO_ASSERT(co_await pairs.first.first.read(10) == "");
    }());
}

// ---- multishot accept ----

Coroutine<> hold(StreamReader r, StreamWriter w) {
    (void)co_await r.read(1);  // until the client closes
    w.close();
}

/// A client socket connected with a blocking connect(2): the kernel completes the handshake
/// from the listener's backlog whether or not anything accepts it.
int blocking_connect(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

/// What a client sees of a connection the server closed without serving: EOF or a reset.
bool closed_by_peer(int fd) {
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    const ssize_t n = ::recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

TEST_F(Multishot, AMultishotAcceptQueuesConnectionsAndClosingTheListenerClosesThem) {
    asyncio::run([]() -> Coroutine<> {
        Socket listener(AF_INET, SOCK_STREAM);
        listener.bind(Address::parse("127.0.0.1", 0));
        listener.listen(32);
        const std::uint16_t port = listener.getsockname().port();
        // The first accept waits, which arms the multishot (as a server's accept loop does).
        Task<std::uint16_t> t = asyncio::create_task([](Socket& l) -> Coroutine<std::uint16_t> {
            asyncio::detail::AcceptAwaiter accept = asyncio::sock_accept(l);
            accept.multishot = true;
            auto [conn, peer] = co_await accept;
            co_return peer.port();
        }(listener));
        co_await stream_test::yield_a_few();
        const int first = blocking_connect(port);
        CO_ASSERT(first >= 0);
        CO_ASSERT(co_await t != 0);
        co_await asyncio::sleep(20ms);
        if (on_uring()) CO_ASSERT(counters().multishot_accept == 1);
        std::vector<int> clients;
        for (int i = 0; i < 5; ++i) clients.push_back(blocking_connect(port));
        co_await asyncio::sleep(20ms);  // the loop waits in the kernel: the multishot accepts them
        if (on_uring()) CO_ASSERT(counters().queued_accepts == 5);
        // The next accept takes the oldest one at once, with its peer's address.
        {
            asyncio::detail::AcceptAwaiter accept = asyncio::sock_accept(listener);
            accept.multishot = true;
            auto [conn, peer] = co_await accept;
            sockaddr_in mine{};
            socklen_t len = sizeof mine;
            ::getsockname(clients.front(), reinterpret_cast<sockaddr*>(&mine), &len);
            CO_ASSERT(peer.port() == ntohs(mine.sin_port));
        }
        if (on_uring()) CO_ASSERT(counters().queued_accepts == 4);
        listener.close();  // the 4 accepted that nobody took are closed, not leaked
        CO_ASSERT(counters().multishot_accept == 0);
        CO_ASSERT(counters().queued_accepts == 0);
        for (std::size_t i = 1; i < clients.size(); ++i) CO_ASSERT(closed_by_peer(clients[i]));
        for (int fd : clients) ::close(fd);
        ::close(first);
    }());
}

TEST_F(Multishot, ClosingAServerWithConnectionsNotYetAcceptedLeaksNothing) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::ServerOptions opts;
        opts.backlog = 32;
        Server server = co_await asyncio::start_server(hold, "127.0.0.1", 0, opts);
        const std::uint16_t port = server.sockets().front().getsockname().port();
        co_await stream_test::yield_a_few();
        if (on_uring()) CO_ASSERT(counters().multishot_accept == 1);
        // Connected while the loop does not run: the server closes before it reaps the accepts.
        std::vector<int> clients;
        for (int i = 0; i < 20; ++i) clients.push_back(blocking_connect(port));
        server.close();
        CO_ASSERT(counters().multishot_accept == 0);
        CO_ASSERT(counters().queued_accepts == 0);
        for (int fd : clients) CO_ASSERT(fd >= 0 && closed_by_peer(fd));
        for (int fd : clients) ::close(fd);
        co_await server.wait_closed();
        // The listener is gone: new connections are refused.
        CO_ASSERT(blocking_connect(port) == -1);
    }());
}

TEST_F(Multishot, ServedConnectionsKnowTheirPeer) {
    asyncio::run([]() -> Coroutine<> {
        std::vector<std::string> peers;
        Server server = co_await asyncio::start_server(
            [&peers](StreamReader r, StreamWriter w) -> Coroutine<> {
                peers.push_back(std::any_cast<Address>(w.get_extra_info("peername")).to_string());
                (void)co_await r.read(1);
                w.close();
            },
            "127.0.0.1", 0);
        const std::uint16_t port = server.sockets().front().getsockname().port();
        std::vector<Streams> clients;
        std::vector<std::string> names;
        for (int i = 0; i < 5; ++i) {
            clients.push_back(co_await asyncio::open_connection("127.0.0.1", port));
            names.push_back(std::any_cast<Address>(clients.back().second.get_extra_info("sockname")).to_string());
        }
        CO_ASSERT(co_await until([&peers] { return peers.size() == 5; }));
        std::sort(peers.begin(), peers.end());
        std::sort(names.begin(), names.end());
        CO_ASSERT(peers == names);
        for (Streams& c : clients) c.second.close();
        server.close();
        co_await server.wait_closed();
    }());
}

}  // namespace
