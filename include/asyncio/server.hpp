// asyncio::start_server and asyncio::Server (Python's asyncio.start_server and asyncio.Server).
//
//   asyncio::Coroutine<> handle(asyncio::StreamReader reader, asyncio::StreamWriter writer) {
//       std::string data = co_await reader.read(100);
//       writer.write(data);
//       co_await writer.drain();
//       writer.close();
//       co_await writer.wait_closed();
//   }
//   asyncio::Server server = co_await asyncio::start_server(handle, "127.0.0.1", 8888);
//   std::uint16_t port = server.sockets()[0].getsockname().port();   // (port 0: the real one)
//   co_await server.serve_forever();
//
// Each accepted connection becomes a StreamReader/StreamWriter pair (streams.hpp) and the callback
// runs as a task of its own. If it raises, the error goes to the loop's exception handler
// ("Unhandled exception in client_connected_cb") and the connection is closed; if it is cancelled,
// the connection is closed. When it returns, the connection stays open as long as a handle to it
// is kept elsewhere (a chat server keeps its writers), and is closed (flushed first) when the last
// handle goes.
//
// Serving: one accept loop per listening socket, on the loop, accepting until the backlog is empty
// (yielding to other tasks after `backlog` connections in a row). Out of file descriptors (EMFILE,
// ENFILE) or memory (ENOBUFS, ENOMEM), accept reports "socket.accept() out of system resource" to
// the loop's exception handler and stops accepting for accept_retry_delay (100 ms by default; the
// pending connections wait in the kernel's backlog), then tries again: no busy loop, and serving
// resumes by itself once descriptors are free. Other accept errors are reported the same way.
//
// Lifetime (Python 3.12 semantics): close() stops accepting and closes the listening sockets;
// connections already accepted are not touched and their tasks run on until they finish
// (close_clients()/abort_clients(), from Python 3.13, close them). wait_closed() returns once the
// server is closed and every one of its connections is closed. The Server object is a move-only
// handle; destroying it closes the server (the connections are again not touched). Loop thread only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/socket.hpp"
#include "asyncio/streams.hpp"

namespace asyncio {

/// What start_server calls for each connection: Python's client_connected_cb.
using ClientConnectedCallback = std::function<Coroutine<>(StreamReader, StreamWriter)>;

struct ServerOptions {
    /// listen() backlog (Python's default 100; capped at SOMAXCONN).
    int backlog = 100;
    /// SO_REUSEADDR on TCP listening sockets (Python's default on POSIX).
    bool reuse_address = true;
    /// SO_REUSEPORT: several sockets (processes) share the port.
    bool reuse_port = false;
    /// The StreamReader limit of each connection.
    std::size_t limit = kDefaultStreamLimit;
    /// AF_UNSPEC (all that getaddrinfo returns), AF_INET or AF_INET6.
    int family = AF_UNSPEC;
    /// Start accepting at once (Python's start_serving=True); else call start_serving().
    bool start_serving = true;
    /// How long accepting pauses after EMFILE/ENFILE/ENOBUFS/ENOMEM (Python waits 1 s).
    std::chrono::milliseconds accept_retry_delay{100};
    /// TLS with this server context (ssl.hpp; copied by start_server): each connection's
    /// handshake runs before client_connected_cb is called. A connection whose handshake fails
    /// (not TLS, certificate refused, ssl_handshake_timeout passed) is closed and the callback is
    /// never called; the server goes on. As asyncio 3.13 the failure is not reported, except in
    /// the loop's debug mode (set_debug(true)): then "SSL handshake failed" (or "... on verifying
    /// the certificate") goes to the loop's exception handler.
    const ssl::Context* ssl = nullptr;
    /// The handshake's time limit (Python's default 60 s).
    std::chrono::duration<double> ssl_handshake_timeout{60.0};
    /// How long a connection's close() keeps flushing to a client that does not read (Python's
    /// default 30 s; as ConnectionOptions::ssl_shutdown_timeout).
    std::chrono::duration<double> ssl_shutdown_timeout{30.0};
};
static_assert(std::is_trivially_copyable_v<ServerOptions>, "docs/design.md: GCC 12 and braced arguments");

namespace detail {
class ServerState;
}

class Server {
public:
    /// An empty handle (operations raise RuntimeError).
    Server() noexcept = default;
    Server(Server&&) noexcept = default;
    Server& operator=(Server&& o) noexcept;
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    /// Closes the server (see above).
    ~Server();

    /// The listening sockets (empty once closed). sockets()[i].getsockname() is the bound address.
    const std::vector<Socket>& sockets() const noexcept;
    /// True while accepting.
    bool is_serving() const noexcept;
    /// Starts accepting (if not yet).
    void start_serving();
    /// Stops accepting and closes the listening sockets (a Unix server also removes its socket
    /// file, as Python 3.13). Idempotent.
    void close();
    /// Waits until the server is closed and all its connections are closed.
    Coroutine<> wait_closed();
    /// Starts accepting and waits until the server is closed: returns when close() is called
    /// (Python raises CancelledError there instead). If the awaiting task is cancelled: closes the
    /// server, waits for wait_closed(), and raises CancelledError. RuntimeError if it is already
    /// being awaited or the server is closed.
    Coroutine<> serve_forever();
    /// Closes every connection of the server (close(): flushed first) (Python 3.13).
    void close_clients();
    /// Aborts every connection of the server (Python 3.13).
    void abort_clients();
    /// Connections of this server that are not closed yet.
    std::size_t active_connections() const noexcept;

    explicit operator bool() const noexcept { return static_cast<bool>(state_); }

    // ---- internals ----
    explicit Server(std::shared_ptr<detail::ServerState> state) noexcept : state_(std::move(state)) {}
    const std::shared_ptr<detail::ServerState>& state() const noexcept { return state_; }

private:
    std::shared_ptr<detail::ServerState> state_;
};

/// Python's asyncio.start_server(client_connected_cb, host, port): binds every address getaddrinfo
/// gives for host (AI_PASSIVE; "" is every interface, as Python's None), IPV6_V6ONLY on IPv6
/// sockets, listens and starts serving. Port 0: the kernel picks a port (per socket); read it from
/// sockets(). std::system_error if binding fails (EADDRINUSE, ...).
Coroutine<Server> start_server(ClientConnectedCallback client_connected_cb, std::string host,
                               std::uint16_t port, ServerOptions options = {});
/// Serves on a socket of your own, bound already (Python's start_server(sock=...)); listen() is
/// called on it.
Coroutine<Server> start_server(ClientConnectedCallback client_connected_cb, Socket sock,
                               ServerOptions options = {});
/// Python's asyncio.start_unix_server(client_connected_cb, path): a stale socket file at path is
/// removed first; close() removes the file again (if it is still this server's).
Coroutine<Server> start_unix_server(ClientConnectedCallback client_connected_cb, std::string path,
                                    ServerOptions options = {});

}  // namespace asyncio
