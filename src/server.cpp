// asyncio::Server: accept loops (one task per listening socket) that turn connections into
// stream pairs and run the client callback as a task per connection.
#include "asyncio/server.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <optional>
#include <system_error>
#include <utility>

#include "asyncio/dns.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/sock_ops.hpp"
#include "asyncio/task.hpp"
#include "asyncio/ssl.hpp"
#include "stream_core.hpp"
#include "tls_transport.hpp"

namespace asyncio {

namespace detail {

class ServerState : public std::enable_shared_from_this<ServerState> {
public:
    ServerState(ClientConnectedCallback cb, std::vector<Socket> socks, ServerOptions opts)
        : cb_(std::move(cb)), opts_(opts), sockets_(std::move(socks)) {
        if (opts.ssl != nullptr) {
            check_tls_timeouts(opts.ssl_handshake_timeout, opts.ssl_shutdown_timeout);
            tls_.emplace(*opts.ssl);
        }
        opts_.ssl = nullptr;  // (the caller's; ours is tls_)
    }
    ServerState(const ServerState&) = delete;
    ServerState& operator=(const ServerState&) = delete;
    ~ServerState() { close(); }

    ClientConnectedCallback cb_;
    ServerOptions opts_;
    std::optional<ssl::Context> tls_;  // TLS server context
    std::vector<Socket> sockets_;
    std::vector<Task<>> accept_tasks_;
    bool listening_ = false;
    bool serving_ = false;
    bool closed_ = false;
    bool forever_ = false;
    CreationSite site_;  // debug mode: where it was made ("unclosed <Server ...>")
    std::size_t active_ = 0;
    StreamCore* conns_ = nullptr;  // open connections (intrusive list through srv_prev_/srv_next_)
    WaitQueue closed_waiters_;     // wait_closed()
    WaitQueue forever_waiters_;    // serve_forever()
    // A Unix server's socket file, removed by close() if it is still ours.
    std::string unix_path_;
    dev_t unix_dev_ = 0;
    ino_t unix_ino_ = 0;

    void start_serving();
    void close() noexcept;
    void on_connection(Socket sock, const Address& peer);
    /// Registers a connection and starts its callback task.
    void attach(StreamReader reader, StreamWriter writer);
    void detach(StreamCore& c) noexcept;
    /// TLS connections still in their handshake (counted as connections by wait_closed(), as
    /// asyncio attaches the transport before its handshake).
    std::size_t handshaking_ = 0;
    bool fully_closed() const noexcept { return closed_ && active_ == 0 && handshaking_ == 0; }
};

namespace {

bool out_of_resources(int err) noexcept {
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

Coroutine<> accept_loop(std::shared_ptr<ServerState> st, std::size_t index) {
    EventLoop& loop = get_running_loop();
    std::uint64_t iteration = ~std::uint64_t{0};
    int burst = 0;
    for (;;) {
        if (st->closed_) co_return;
        Socket& listener = st->sockets_[index];
        std::pair<Socket, Address> conn;
        bool failed = false;
        try {
            // One multishot accept for the life of the listener where the backend has them
            // (io_uring): connections are accepted while this task runs the callbacks.
            detail::AcceptAwaiter accept = sock_accept(listener);
            accept.multishot = true;
            conn = co_await accept;
        } catch (const std::system_error& e) {
            if (st->closed_ || !listener) co_return;
            loop.call_exception_handler({out_of_resources(e.code().value())
                                             ? "socket.accept() out of system resource"
                                             : "Error on accepting a connection",
                                         std::current_exception(), {}});
            failed = true;
        }
        if (failed) {
            // Descriptors (or memory) will only come back when something else closes: wait instead
            // of retrying at once (level-triggered readiness would report the listener forever).
            co_await sleep(st->opts_.accept_retry_delay);
            continue;
        }
        st->on_connection(std::move(conn.first), conn.second);
        // Fairness: accept at most `backlog` connections in one iteration of the loop.
        const std::uint64_t now = loop.stats().iterations;
        burst = now == iteration ? burst + 1 : 1;
        iteration = now;
        if (burst >= std::max(st->opts_.backlog, 1)) {
            burst = 0;
            co_await sleep(std::chrono::seconds(0));
        }
    }
}

/// The task of one connection: runs the callback; reports its failure and closes the connection.
/// It holds the server state, so the callback object (a lambda's captures) outlives its coroutine.
Coroutine<> client_task(std::shared_ptr<ServerState> st, Coroutine<> callback, StreamWriter writer) {
    (void)st;
    std::exception_ptr error;
    try {
        co_await callback;
    } catch (const CancelledError&) {
        writer.close();
        throw;
    } catch (...) {
        error = std::current_exception();
    }
    if (error) {
        get_running_loop().call_exception_handler(
            {"Unhandled exception in client_connected_cb", error, current_task().get_name()});
        writer.close();
    }
}

}  // namespace

void ServerState::start_serving() {
    if (closed_) throw RuntimeError("Server is closed");
    if (serving_) return;
    EventLoop& loop = get_running_loop();
    if (!listening_) {
        for (Socket& s : sockets_) s.listen(opts_.backlog);
        listening_ = true;
    }
    serving_ = true;
    for (std::size_t i = 0; i < sockets_.size(); ++i)
        accept_tasks_.push_back(loop.create_task(accept_loop(shared_from_this(), i)));
}

void ServerState::close() noexcept {
    if (closed_) return;
    closed_ = true;
    serving_ = false;
    // Withdraw the pending accepts before the sockets go (the tasks end at their next step). The
    // handles are dropped: each task holds the state, and the state must not hold the tasks.
    for (Task<>& t : accept_tasks_) {
        try {
            t.cancel();
        } catch (...) {
            // (its loop is not running: it can no longer accept anything either)
        }
    }
    accept_tasks_.clear();
    for (Socket& s : sockets_) s.close();
    if (!unix_path_.empty()) {
        struct stat st {};
        if (::stat(unix_path_.c_str(), &st) == 0 && st.st_dev == unix_dev_ && st.st_ino == unix_ino_)
            ::unlink(unix_path_.c_str());
    }
    ListWait::wake_all(forever_waiters_);
    if (fully_closed()) ListWait::wake_all(closed_waiters_);
}

namespace {

/// The TLS handshake of one accepted connection, then the callback (ServerState::attach).
Coroutine<> tls_accept(std::shared_ptr<ServerState> st, Socket sock, Address peer) {
    struct Handshaking {
        ServerState& st;
        explicit Handshaking(ServerState& s) : st(s) { ++st.handshaking_; }
        ~Handshaking() {
            if (--st.handshaking_ == 0 && st.fully_closed()) ListWait::wake_all(st.closed_waiters_);
        }
    };
    std::optional<Handshaking> counted(std::in_place, *st);
    std::unique_ptr<TlsTransport> tls;
    std::exception_ptr error;
    bool verify = false;
    try {
        tls = std::make_unique<TlsTransport>(std::make_unique<SocketTransport>(std::move(sock), peer), *st->tls_,
                                             true, std::string(), st->opts_.ssl_shutdown_timeout);
        co_await tls_handshake(*tls, st->opts_.ssl_handshake_timeout);
    } catch (const CancelledError&) {
        throw;
    } catch (const ssl::SSLCertVerificationError&) {
        error = std::current_exception();
        verify = true;
    } catch (...) {
        error = std::current_exception();
    }
    if (error) {
        // As asyncio 3.13's SSLProtocol._fatal_error: an OSError (every handshake failure) is
        // only logged in debug mode.
        EventLoop& loop = get_running_loop();
        if (loop.get_debug())
            loop.call_exception_handler({verify ? "SSL handshake failed on verifying the certificate"
                                                : "SSL handshake failed",
                                         error, {}});
        co_return;  // tls (and the socket) closed here
    }
    auto [reader, writer] = make_streams(std::move(tls), st->opts_.limit);
    st->attach(std::move(reader), std::move(writer));  // (counted in active_ first)
    counted.reset();
}

}  // namespace

void ServerState::on_connection(Socket sock, const Address& peer) {
    if (tls_) {
        (void)get_running_loop().create_task(tls_accept(shared_from_this(), std::move(sock), peer));
        return;
    }
    auto [reader, writer] = make_streams(std::move(sock), opts_.limit, peer);
    attach(std::move(reader), std::move(writer));
}

void ServerState::attach(StreamReader reader, StreamWriter writer) {
    EventLoop& loop = get_running_loop();
    StreamCore* c = reader.core();
    c->server_ = shared_from_this();
    c->srv_next_ = conns_;
    if (conns_ != nullptr) conns_->srv_prev_ = c;
    conns_ = c;
    ++active_;
    try {
        Coroutine<> callback = cb_(reader, writer);
        (void)loop.create_task(client_task(shared_from_this(), std::move(callback), std::move(writer)));
    } catch (...) {
        loop.call_exception_handler({"Unhandled exception in client_connected_cb", std::current_exception(), {}});
        writer.close();
    }
}

void ServerState::detach(StreamCore& c) noexcept {
    if (c.srv_prev_ != nullptr)
        c.srv_prev_->srv_next_ = c.srv_next_;
    else
        conns_ = c.srv_next_;
    if (c.srv_next_ != nullptr) c.srv_next_->srv_prev_ = c.srv_prev_;
    c.srv_prev_ = c.srv_next_ = nullptr;
    --active_;
    if (fully_closed()) ListWait::wake_all(closed_waiters_);
}

void server_connection_closed(StreamCore& c) noexcept {
    std::shared_ptr<ServerState> st = std::move(c.server_);
    st->detach(c);
}

namespace {

std::shared_ptr<ServerState> need(const std::shared_ptr<ServerState>& st) {
    if (!st) throw RuntimeError("empty Server");
    return st;
}

Server make_server(ClientConnectedCallback cb, std::vector<Socket> socks, const ServerOptions& opts) {
    if (!cb) throw ValueError("start_server() needs a client_connected_cb");
    auto st = std::make_shared<ServerState>(std::move(cb), std::move(socks), opts);
    if (opts.start_serving) st->start_serving();
    return Server(std::move(st));
}

Coroutine<> serve_forever_impl(std::shared_ptr<ServerState> st) {
    if (st->forever_) throw RuntimeError("server is already being awaited on serve_forever()");
    if (st->closed_) throw RuntimeError("server is closed");
    st->start_serving();
    st->forever_ = true;
    std::exception_ptr cancelled;
    try {
        while (!st->closed_) co_await ListWait(st->forever_waiters_, "Server::serve_forever()");
    } catch (const CancelledError&) {
        cancelled = std::current_exception();
    }
    st->forever_ = false;
    if (cancelled) {
        st->close();
        while (!st->fully_closed()) co_await ListWait(st->closed_waiters_, "Server::wait_closed()");
        std::rethrow_exception(cancelled);
    }
}

Coroutine<> wait_closed_impl(std::shared_ptr<ServerState> st) {
    while (!st->fully_closed()) co_await ListWait(st->closed_waiters_, "Server::wait_closed()");
}

}  // namespace

}  // namespace detail

// ---- Server ----

Server& Server::operator=(Server&& o) noexcept {
    if (this != &o) {
        if (state_) state_->close();
        state_ = std::move(o.state_);
    }
    return *this;
}

Server::~Server() {
    if (!state_) return;
    if (!state_->closed_ && state_->site_.recorded()) [[unlikely]] {  // as a ResourceWarning
        std::string what = "<Server sockets=(";
        for (const Socket& s : state_->sockets_) what += "fd=" + std::to_string(s.fileno()) + ",";
        state_->site_.report_unclosed(what + ")>");
    }
    state_->close();
}

const std::vector<Socket>& Server::sockets() const noexcept {
    static const std::vector<Socket> none;
    if (!state_ || state_->closed_) return none;
    return state_->sockets_;
}

bool Server::is_serving() const noexcept { return state_ && state_->serving_; }
void Server::start_serving() { detail::need(state_)->start_serving(); }
void Server::close() {
    if (state_) state_->close();
}
Coroutine<> Server::wait_closed() { return detail::wait_closed_impl(detail::need(state_)); }
Coroutine<> Server::serve_forever() { return detail::serve_forever_impl(detail::need(state_)); }

void Server::close_clients() {
    if (!state_) return;
    // Hold a handle to each first: closing one may unlink it from the list.
    std::vector<StreamWriter> writers;
    for (detail::StreamCore* c = state_->conns_; c != nullptr; c = c->srv_next_) writers.emplace_back(c, detail::FromCore{});
    for (StreamWriter& w : writers) w.close();
}

void Server::abort_clients() {
    if (!state_) return;
    std::vector<StreamWriter> writers;
    for (detail::StreamCore* c = state_->conns_; c != nullptr; c = c->srv_next_) writers.emplace_back(c, detail::FromCore{});
    for (StreamWriter& w : writers) w.abort();
}

std::size_t Server::active_connections() const noexcept { return state_ ? state_->active_ : 0; }

// ---- start_server ----

Coroutine<Server> start_server(ClientConnectedCallback client_connected_cb, std::string host,
                               std::uint16_t port, ServerOptions options) {
    const std::vector<AddrInfo> infos =
        co_await getaddrinfo(host, port, options.family, SOCK_STREAM, 0, AI_PASSIVE);
    std::vector<Socket> socks;
    std::vector<Address> seen;
    for (const AddrInfo& ai : infos) {
        if (std::find(seen.begin(), seen.end(), ai.address) != seen.end()) continue;
        seen.push_back(ai.address);
        Socket s;
        try {
            s = Socket(ai.family, SOCK_STREAM, ai.protocol);
        } catch (const std::system_error&) {
            continue;  // a family this host does not have (as asyncio: skipped)
        }
        if (options.reuse_address) s.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1);
        if (options.reuse_port) s.setsockopt(SOL_SOCKET, SO_REUSEPORT, 1);
        if (ai.family == AF_INET6) s.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 1);
        try {
            s.bind(ai.address);
        } catch (const std::system_error& e) {
            throw std::system_error(e.code(),
                                    "error while attempting to bind on address " + ai.address.to_string());
        }
        socks.push_back(std::move(s));
    }
    if (socks.empty())
        throw std::system_error(std::make_error_code(std::errc::address_family_not_supported),
                                "start_server(): no address to listen on for '" + host + "'");
    co_return detail::make_server(std::move(client_connected_cb), std::move(socks), options);
}

Coroutine<Server> start_server(ClientConnectedCallback client_connected_cb, Socket sock, ServerOptions options) {
    if (!sock) throw ValueError("start_server() of a closed socket");
    std::vector<Socket> socks;
    socks.push_back(std::move(sock));
    co_return detail::make_server(std::move(client_connected_cb), std::move(socks), options);
}

Coroutine<Server> start_unix_server(ClientConnectedCallback client_connected_cb, std::string path,
                                    ServerOptions options) {
    const Address address = Address::unix_path(path);
    const bool abstract = !path.empty() && path[0] == '\0';
    if (!abstract) {
        // A socket file left by an earlier server: remove it (as asyncio).
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
    }
    Socket s(AF_UNIX, SOCK_STREAM);
    s.bind(address);
    std::vector<Socket> socks;
    socks.push_back(std::move(s));
    Server server = detail::make_server(std::move(client_connected_cb), std::move(socks), options);
    if (!abstract) {
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0) {
            detail::ServerState& state = *server.state();
            state.unix_path_ = path;
            state.unix_dev_ = st.st_dev;
            state.unix_ino_ = st.st_ino;
        }
    }
    co_return server;
}

}  // namespace asyncio
