// asyncio's streams: StreamReader, StreamWriter, open_connection (servers: server.hpp).
//
//   auto [reader, writer] = co_await asyncio::open_connection("127.0.0.1", 8888);
//   writer.write("Hello World!");
//   co_await writer.drain();
//   std::string data = co_await reader.read(100);       // "" at EOF
//   writer.close();
//   co_await writer.wait_closed();
//
// Bytes are std::string (binary-safe), as sock_recv's. Every method that waits is a Coroutine (an
// `async def`), or for drain() an awaitable of its own (StreamWriter::DrainAwaiter, which makes no
// coroutine frame when it need not wait): co_await it in a task, or hand it to
// wait_for/create_task/gather.
//
// Ownership. A connection's state (its socket, the read buffer, the write buffer) is shared by its
// StreamReader and StreamWriter, which are cheap handles: copy one to share it (a copy is the same
// stream, as a second Python reference is), move it to hand it over. The connection lives as long as
// any handle (or a pending operation on it) does. When the last handle of a connection goes away,
// the connection is closed as by close(): what is still in the write buffer is sent first (in the
// background, as long as the loop runs: a loop that closes withdraws the send), then the socket is
// closed.
// A handle is used on its loop's thread only; a moved-from handle is empty (operations on it raise
// RuntimeError). A coroutine returned by a method keeps the connection alive until it finishes.
//
// Reading (StreamReader). Data is received into the reader's buffer only when a read asks for more
// than the buffer holds (one recv of up to the buffer's free space, at least 4 KiB, more after
// reads that filled it), so a reader nobody reads from stops receiving and TCP flow control slows
// the peer down: the buffer never holds more than what the current read needs plus one receive.
// One task waits for data at a time: a read that would have to wait while another one waits
// raises RuntimeError (as asyncio); a read that finds bytes buffered takes them even then (as
// asyncio), and the waiting read gets what arrives next. A receive error (ECONNRESET, ...) is raised as std::system_error by the reads once
// the buffered bytes are used up (asyncio raises it at once, dropping them) and again by every read
// after that; EOF is sticky.
//
// Cancel-safety (every co_await in this API is a suspension point where CancelledError can arrive):
//   read, readexactly, readuntil, readline, anext: cancel-safe. Bytes that arrived before the
//       cancellation stay in the buffer and are returned by the next read; nothing is consumed by
//       a read that raised CancelledError (or TimeoutError from wait_for). If the bytes the read
//       was waiting for arrived in the same loop iteration as the cancellation, the read returns
//       them and the cancellation is raised at the task's next suspension point.
//   drain, wait_closed: cancel-safe (they only wait; the buffer keeps flushing in the background).
//   open_connection: a cancelled connect closes its socket; nothing leaks.
//
// Writing (StreamWriter). write() never waits: when nothing is buffered it tries to send at once,
// and whatever the socket does not take is appended to the write buffer, which the stream flushes
// in the background (an operation of its own, no task). drain() is the flow control: it returns at
// once while the buffer is at most the high-water mark (64 KiB by default), else waits until the
// buffer has shrunk to the low-water mark (16 KiB by default): set_write_buffer_limits(high, low).
// So `write(); co_await drain();` in a loop keeps the buffer below high-water + one write. Any number of tasks may wait in drain() at once;
// all of them wake together. A send error (EPIPE, ECONNRESET) is kept and raised as
// std::system_error by the next write(), drain() and wait_closed() of that stream (only that one).
// Sends use MSG_NOSIGNAL: no SIGPIPE.
#pragma once

#include <any>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "asyncio/coroutine.hpp"
#include "asyncio/sock_ops.hpp"
#include "asyncio/socket.hpp"

namespace asyncio {

namespace ssl {
class Context;
class SSLObject;
struct Certificate;
struct Cipher;
}

/// The default limit of a StreamReader's readline()/readuntil() (Python's 2**16).
inline constexpr std::size_t kDefaultStreamLimit = 64 * 1024;

namespace detail {
class StreamCore;
struct FromCore {};  // the internal constructors of the handles
void stream_retain(StreamCore* c, bool handle) noexcept;
void stream_release(StreamCore* c, bool handle) noexcept;
// StreamWriter::DrainAwaiter's steps (streams.cpp).
bool drain_ready(StreamCore& c);
void drain_wait(StreamCore& c, ListWaiter& w, std::coroutine_handle<> h);
void drain_woken(StreamCore& c);

/// A counted reference to a connection; `Handle` references also count as handles (see the top of
/// the file: the connection closes when the last handle goes).
template <bool Handle>
class StreamRef {
public:
    StreamRef() noexcept = default;
    explicit StreamRef(StreamCore* c) noexcept : c_(c) {  // adopts nothing: takes a new reference
        if (c_ != nullptr) stream_retain(c_, Handle);
    }
    StreamRef(const StreamRef& o) noexcept : StreamRef(o.c_) {}
    StreamRef(StreamRef&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
    StreamRef& operator=(StreamRef o) noexcept {
        std::swap(c_, o.c_);
        return *this;
    }
    ~StreamRef() {
        if (c_ != nullptr) stream_release(c_, Handle);
    }
    StreamCore* get() const noexcept { return c_; }
    StreamCore* operator->() const noexcept { return c_; }
    StreamCore& operator*() const noexcept { return *c_; }
    explicit operator bool() const noexcept { return c_ != nullptr; }

private:
    StreamCore* c_ = nullptr;
};
}  // namespace detail

/// Python's asyncio.StreamReader: reads from a connection (or from what feed_data() gives it).
class StreamReader {
public:
    /// A reader with no connection, fed by feed_data()/feed_eof() (Python's StreamReader()).
    StreamReader();
    /// The same, with another limit for readline()/readuntil().
    explicit StreamReader(std::size_t limit);

    /// Up to n bytes; n < 0: everything up to EOF. Waits only when the buffer is empty: returns
    /// what is buffered (at most n) at once, else the bytes of the next receive. "" at EOF (and for
    /// n == 0).
    Coroutine<std::string> read(std::ptrdiff_t n = -1);
    /// Exactly n bytes. IncompleteReadError (holding the bytes read, which are consumed) if EOF
    /// comes first.
    Coroutine<std::string> readexactly(std::size_t n);
    /// Up to and including the next "\n"; at EOF the rest without it; "" at EOF. A line longer
    /// than limit() raises LimitOverrunError and leaves the data in the buffer (asyncio raises
    /// ValueError and discards it; here read(e.consumed()) skips it).
    Coroutine<std::string> readline();
    /// Up to and including separator (not empty: ValueError). IncompleteReadError (with the rest,
    /// consumed) at EOF without it; LimitOverrunError, data left in the buffer, when the separator
    /// is not within limit() bytes.
    Coroutine<std::string> readuntil(std::string separator = "\n");
    /// Async iteration (Python's `async for line in reader`): the next line, nullopt at EOF.
    ///   while (auto line = co_await reader.anext()) use(*line);
    Coroutine<std::optional<std::string>> anext();

    /// True when EOF was received and the buffer is empty.
    bool at_eof() const noexcept;
    /// The limit of readline()/readuntil().
    std::size_t limit() const noexcept;
    /// Bytes received and not yet read (not in Python's API).
    std::size_t buffered() const noexcept;
    /// The exception set by set_exception() or by a failed receive (null if none).
    std::exception_ptr exception() const noexcept;

    // ---- what Python's protocol calls; for readers without a connection (tests, adapters) ----
    /// Appends data to the buffer and wakes a waiting read. RuntimeError after feed_eof() and on a
    /// reader of a connection.
    void feed_data(std::string_view data);
    /// Marks EOF and wakes a waiting read.
    void feed_eof();
    /// Makes the reads raise e (after the buffered bytes are read) and wakes a waiting read.
    void set_exception(std::exception_ptr e);

    explicit operator bool() const noexcept { return static_cast<bool>(core_); }

    // ---- internals ----
    StreamReader(detail::StreamCore* core, detail::FromCore) noexcept : core_(core) {}
    detail::StreamCore* core() const noexcept { return core_.get(); }

private:
    detail::StreamRef<true> core_;
};

/// Python's asyncio.StreamWriter: writes to a connection.
class StreamWriter {
public:
    /// No connection (every operation raises RuntimeError); assign one to use it.
    StreamWriter() noexcept = default;

    /// Sends data or buffers it (see the top of the file). Never waits. RuntimeError after
    /// write_eof() or close(); std::system_error if an earlier send failed or this one fails at once.
    void write(ConstBuffer data);
    /// The same for a std::string given by value (an rvalue): what is not sent at once is kept by
    /// moving the string into the write buffer instead of copying it (a large payload is then
    /// never copied in user space).
    template <class S>
        requires std::same_as<S, std::string>
    void write(S&& data) {
        write_owned(std::move(data));
    }
    /// write() of each element of a range of byte strings.
    template <class Range>
    void writelines(const Range& lines) {
        for (const auto& line : lines) write(ConstBuffer(line));
    }
    class DrainAwaiter;
    /// Flow control: returns at once while the write buffer is at most the high-water mark, else
    /// waits until it is at most the low-water mark. Raises the stream's error (a failed send, or a
    /// failed receive, as asyncio) as std::system_error, and ECONNRESET "Connection lost" once the
    /// connection has been closed. All of it when awaited, as Python's coroutine; see DrainAwaiter.
    DrainAwaiter drain();
    /// True: sockets can half-close.
    bool can_write_eof() const noexcept;
    /// Half-close: shutdown(SHUT_WR) once the buffer is flushed (at once if it is empty). The peer
    /// reads EOF; this side can still read. Idempotent.
    void write_eof();
    /// Closes the connection: nothing more is received (reads see EOF once the buffer is read),
    /// the write buffer is flushed in the background, then the socket is closed. Idempotent.
    void close();
    /// Closes at once, dropping the write buffer (Python's transport.abort()).
    void abort();
    /// True once close() or abort() was called (or the connection was lost).
    bool is_closing() const noexcept;
    /// Waits until the socket is closed (after close(): once the buffer is flushed). Raises the
    /// error the connection was lost with, if any (as asyncio).
    Coroutine<> wait_closed();

    /// Python's StreamWriter.start_tls(sslcontext, server_hostname=, ssl_handshake_timeout=)
    /// (3.11): upgrades the connection to TLS in place (STARTTLS). Waits until the write buffer
    /// is sent, then runs the handshake (the server side for a connection of start_server); the
    /// reader and writer then carry plaintext over TLS. Bytes already in the reader's buffer stay
    /// there (as asyncio). server_hostname: null = none (ValueError "check_hostname requires
    /// server_hostname" for a client context that checks hostnames). RuntimeError while a read is
    /// waiting or after close(); on a failed handshake the connection is closed and the error
    /// raised (as open_connection's). The context is copied when start_tls is called.
    /// ssl_shutdown_timeout: as ConnectionOptions'.
    Coroutine<> start_tls(const ssl::Context& sslcontext, const char* server_hostname = nullptr,
                          std::chrono::duration<double> ssl_handshake_timeout = std::chrono::seconds(60),
                          std::chrono::duration<double> ssl_shutdown_timeout = std::chrono::seconds(30));

    /// The TLS session (Python's get_extra_info("ssl_object")): peer certificate, cipher,
    /// negotiated ALPN protocol, TLS version, server_hostname (ssl.hpp). Empty (false) for a
    /// plain connection.
    ssl::SSLObject ssl_object() const;
    /// Python's get_extra_info("peercert"), typed: nullopt for a plain connection, no
    /// certificate, or one that was not verified (a server with CERT_NONE).
    std::optional<ssl::Certificate> peercert() const;
    /// Python's get_extra_info("cipher"), typed: nullopt for a plain connection.
    std::optional<ssl::Cipher> cipher() const;

    /// Python's transport.get_extra_info(name, default):
    ///   "peername", "sockname"  -> asyncio::Address (the peer's address is known from the start
    ///                              and stays available after close)
    ///   "socket"                -> int, the socket's fd (-1 once closed); do not close it
    /// default_value for any other name or when unavailable.
    std::any get_extra_info(std::string_view name, std::any default_value = {}) const;

    /// Bytes in the write buffer (Python's transport.get_write_buffer_size(); TLS: with the
    /// ciphertext not yet sent, as asyncio's SSL transport counts it).
    std::size_t get_write_buffer_size() const noexcept;
    /// The {low, high} water marks (Python's transport.get_write_buffer_limits()).
    std::pair<std::size_t, std::size_t> get_write_buffer_limits() const noexcept;
    /// Python's transport.set_write_buffer_limits(high, low): high nullopt -> 64 KiB (or 4 * low
    /// if low is given); low nullopt -> high / 4. ValueError unless high >= low.
    void set_write_buffer_limits(std::optional<std::size_t> high = std::nullopt,
                                 std::optional<std::size_t> low = std::nullopt);

    explicit operator bool() const noexcept { return static_cast<bool>(core_); }

    // ---- internals ----
    StreamWriter(detail::StreamCore* core, detail::FromCore) noexcept : core_(core) {}
    detail::StreamCore* core() const noexcept { return core_.get(); }

private:
    void write_owned(std::string&& data);
    detail::StreamRef<true> core_;
};

/// What drain() returns: `co_await writer.drain()`, or hand it to create_task, wait_for, gather
/// (they take any awaitable). It does everything when awaited, as Python's coroutine does when
/// awaited: raises the stream's error, returns at once (without suspending, and without the
/// coroutine frame a Coroutine would make) below the high-water mark, else waits in the stream's
/// queue of drain waiters until the buffer is at most the low-water mark or the connection is
/// lost, once, as asyncio's _drain_helper. It keeps the connection alive while it exists.
/// Cancel-safe; movable until awaited; awaited once.
class [[nodiscard]] StreamWriter::DrainAwaiter : public detail::ListWaiter {
public:
    explicit DrainAwaiter(detail::StreamCore* core) noexcept : core_(core) {}
    bool await_ready() const { return detail::drain_ready(*core_); }
    template <class P>
    void await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        detail::drain_wait(*core_, *this, h);
        waited_ = true;
    }
    void await_resume() const {
        end_wait();  // cancelled: CancelledError
        if (waited_) detail::drain_woken(*core_);
    }

private:
    detail::StreamRef<false> core_;
    bool waited_ = false;
};

/// open_connection's keyword arguments (Python's limit=, ssl=, server_hostname=,
/// ssl_handshake_timeout=). Trivially copyable on purpose (docs/design.md, "GCC 12 and braced
/// arguments"): the context and the hostname are pointers, read (and copied) when
/// open_connection is called, so they only need to live through that call.
///   co_await asyncio::open_connection("example.com", 443, {.ssl = &ctx});
struct ConnectionOptions {
    std::size_t limit = kDefaultStreamLimit;
    /// TLS with this context (ssl.hpp); null: plain TCP.
    const ssl::Context* ssl = nullptr;
    /// The name sent (SNI) and checked against the certificate; null: host. "" : neither (and
    /// ValueError "check_hostname requires server_hostname" if the context checks hostnames).
    /// ValueError "server_hostname is only meaningful with ssl" without ssl.
    const char* server_hostname = nullptr;
    /// The handshake's time limit (Python's default 60 s): std::system_error ECONNABORTED "SSL
    /// handshake is taking longer than 60.0 seconds: aborting the connection".
    std::chrono::duration<double> ssl_handshake_timeout{60.0};
    /// How long close() keeps sending what is buffered (and close_notify) to a peer that does
    /// not read (Python's default 30 s): then the connection is closed, and wait_closed() and the
    /// reader raise TimeoutError "SSL shutdown timed out", as asyncio 3.13.
    std::chrono::duration<double> ssl_shutdown_timeout{30.0};
};
static_assert(std::is_trivially_copyable_v<ConnectionOptions>, "docs/design.md: GCC 12 and braced arguments");

/// Python's asyncio.open_connection(host, port, limit=...): resolves host (getaddrinfo; numeric
/// hosts at once, names on the executor), then connects to each address in turn until one accepts.
/// If all fail: the error (std::system_error: ECONNREFUSED, ...), or, when they differ, one
/// std::system_error listing them all. TCP sockets get TCP_NODELAY, as in asyncio.
Coroutine<std::pair<StreamReader, StreamWriter>> open_connection(std::string host, std::uint16_t port,
                                                                 std::size_t limit = kDefaultStreamLimit);
/// The same with options; with .ssl: the TLS handshake runs before the streams are returned, and
/// fails with ssl::SSLCertVerificationError (certificate not trusted, hostname mismatch),
/// ssl::SSLError (any other TLS failure), std::system_error ECONNRESET (the peer closed during the
/// handshake) or ECONNABORTED (ssl_handshake_timeout passed). The streams then carry plaintext;
/// can_write_eof() is false (as asyncio's SSL transport); close() sends close_notify after the
/// buffered data; a peer that closes without close_notify reads as EOF (as asyncio 3.13).
/// get_extra_info: "peercert" (std::map<std::string, std::string>: subject, issuer, version,
/// serialNumber, notBefore, notAfter, subjectAltName; empty if the certificate was not verified),
/// "cipher" (std::tuple<std::string, std::string, int>: name, protocol, secret bits),
/// "ssl_object" (SSL*), "sslcontext" (ssl::Context), "selected_alpn_protocol" (std::string), and
/// the socket's keys.
Coroutine<std::pair<StreamReader, StreamWriter>> open_connection(std::string host, std::uint16_t port,
                                                                 ConnectionOptions options);
/// Python's open_unix_connection(path).
Coroutine<std::pair<StreamReader, StreamWriter>> open_unix_connection(std::string path,
                                                                      std::size_t limit = kDefaultStreamLimit);
/// The same with options; with .ssl, server_hostname is required (there is no host name to take
/// it from: ValueError "you have to pass server_hostname when using ssl", as Python).
Coroutine<std::pair<StreamReader, StreamWriter>> open_unix_connection(std::string path, ConnectionOptions options);
/// Streams over a socket that is already connected (Python's open_connection(sock=...)).
std::pair<StreamReader, StreamWriter> open_connection(Socket sock, std::size_t limit = kDefaultStreamLimit);

}  // namespace asyncio
