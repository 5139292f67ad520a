// tls_epoll_echo_server PORT --cert CERT --key KEY: the reference TLS echo server for
// bench/run_tls_bench.sh, hand-written on OpenSSL and raw epoll the way a competent C programmer
// would, to show what one thread with OpenSSL on epoll allows. It is epoll_echo_server.cpp with TLS.
//
// One thread, non-blocking sockets, level-triggered epoll, OpenSSL directly on the socket fd
// (SSL_set_fd: no memory BIOs, no copies besides OpenSSL's own). Listens on 127.0.0.1:PORT (0: the
// kernel picks one) and prints "serving on 127.0.0.1:PORT" once it listens. Per connection:
//
//   * handshake: SSL_do_handshake, waiting on EPOLLIN or EPOLLOUT as OpenSSL asks;
//   * readable: SSL_read_ex into a 64 KiB buffer shared by all connections, each record read is
//     written back at once with SSL_write_ex (one record, one send(2)). read_ahead is on, so one
//     recv(2) fetches a whole record (header and body) or several; the loop goes on while OpenSSL
//     still holds unprocessed bytes (SSL_has_pending), as level-triggered epoll cannot know of them;
//   * a write that would block keeps the rest in the connection's buffer (partial writes and a
//     moving write buffer allowed), switches the fd to EPOLLOUT and stops reading until it is sent;
//   * close_notify: our close_notify back, then close; EOF or an error: close.
//
// The context is OpenSSL's defaults for a server (TLS_server_method, TLS 1.2 minimum: the load
// generator asks for 1.3; two session tickets after each handshake, as our library and Python's
// ssl module send). Accepted sockets get TCP_NODELAY, as every other server of the benchmark.
// KTLS=1 in the environment sets SSL_OP_ENABLE_KTLS (only useful where the kernel has the tls ULP;
// it prints whether the kernel took each direction for the first connection). TLS_TICKETS=N sends N
// session tickets instead of 2 (as every OpenSSL-based server of the benchmark).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kReadSize = 65536;

struct Conn {
    SSL* ssl = nullptr;
    bool handshaking = false;
    std::string out;          // plaintext read but not yet accepted by SSL_write
    std::size_t out_pos = 0;
};

int g_epfd = -1;
int g_listen_fd = -1;
SSL_CTX* g_ctx = nullptr;
bool g_ktls_reported = false;
std::vector<Conn> g_conns;  // indexed by fd
char g_buf[kReadSize];

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "tls_epoll_echo_server: %s: %s\n", what, std::strerror(errno));
    ERR_print_errors_fp(stderr);
    std::exit(1);
}

void set_events(int fd, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (epoll_ctl(g_epfd, EPOLL_CTL_MOD, fd, &ev) < 0) die("epoll_ctl(MOD)");
}

void close_conn(int fd) {
    Conn& c = g_conns[static_cast<std::size_t>(fd)];
    SSL_free(c.ssl);
    c.ssl = nullptr;
    ::close(fd);  // (also leaves the epoll set)
    std::string().swap(c.out);
    c.out_pos = 0;
    ERR_clear_error();
}

// After an SSL call that did not complete: wait for the direction OpenSSL wants (true), or close
// the connection (false). A close_notify from the peer is answered with ours.
bool wait_or_close(int fd, Conn& c, int r) {
    switch (SSL_get_error(c.ssl, r)) {
        case SSL_ERROR_WANT_READ: set_events(fd, EPOLLIN); return true;
        case SSL_ERROR_WANT_WRITE: set_events(fd, EPOLLOUT); return true;
        case SSL_ERROR_ZERO_RETURN: SSL_shutdown(c.ssl); close_conn(fd); return false;
        default: close_conn(fd); return false;
    }
}

// Writes what is left of c.out. True when all of it went (the fd is back on EPOLLIN).
bool flush(int fd, Conn& c) {
    while (c.out_pos < c.out.size()) {
        std::size_t w = 0;
        const int r = SSL_write_ex(c.ssl, c.out.data() + c.out_pos, c.out.size() - c.out_pos, &w);
        if (r != 1) {
            wait_or_close(fd, c, r);
            return false;
        }
        c.out_pos += w;
    }
    c.out.clear();
    c.out_pos = 0;
    set_events(fd, EPOLLIN);
    return true;
}

void on_readable(int fd, Conn& c);

void report_ktls(Conn& c) {
    if (g_ktls_reported) return;
    g_ktls_reported = true;
    std::fprintf(stderr, "tls_epoll_echo_server: kTLS send %s, receive %s\n",
                 BIO_get_ktls_send(SSL_get_wbio(c.ssl)) ? "on" : "off",
                 BIO_get_ktls_recv(SSL_get_rbio(c.ssl)) ? "on" : "off");
}

void on_handshake(int fd, Conn& c) {
    const int r = SSL_do_handshake(c.ssl);
    if (r != 1) {
        wait_or_close(fd, c, r);
        return;
    }
    c.handshaking = false;
    if (SSL_get_options(c.ssl) & SSL_OP_ENABLE_KTLS) report_ktls(c);
    set_events(fd, EPOLLIN);
    // read_ahead may already have pulled the first application data out of the socket.
    if (SSL_has_pending(c.ssl)) on_readable(fd, c);
}

void on_readable(int fd, Conn& c) {
    for (;;) {
        std::size_t n = 0;
        const int r = SSL_read_ex(c.ssl, g_buf, sizeof g_buf, &n);
        if (r != 1) {
            wait_or_close(fd, c, r);
            return;
        }
        std::size_t done = 0;
        while (done < n) {
            std::size_t w = 0;
            const int wr = SSL_write_ex(c.ssl, g_buf + done, n - done, &w);
            if (wr != 1) {
                if (SSL_get_error(c.ssl, wr) == SSL_ERROR_WANT_WRITE) {
                    // Keep the rest (the retry passes the same bytes, from c.out), stop reading.
                    c.out.assign(g_buf + done, n - done);
                    c.out_pos = 0;
                    set_events(fd, EPOLLOUT);
                } else {
                    wait_or_close(fd, c, wr);
                }
                return;
            }
            done += w;
        }
        if (!SSL_has_pending(c.ssl)) return;  // the rest, if any, is still in the socket
    }
}

void accept_all() {
    for (;;) {
        int fd = ::accept4(g_listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            die("accept4");  // (the benchmark never runs out of descriptors here)
        }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (static_cast<std::size_t>(fd) >= g_conns.size()) g_conns.resize(static_cast<std::size_t>(fd) * 2 + 64);
        Conn& c = g_conns[static_cast<std::size_t>(fd)];
        c.ssl = SSL_new(g_ctx);
        if (c.ssl == nullptr || SSL_set_fd(c.ssl, fd) != 1) die("SSL_new");
        SSL_set_accept_state(c.ssl);
        c.handshaking = true;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl(ADD)");
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 6 || std::string(argv[2]) != "--cert" || std::string(argv[4]) != "--key") {
        std::fprintf(stderr, "usage: %s PORT --cert CERT --key KEY\n", argv[0]);
        return 2;
    }
    char* end = nullptr;
    long port = std::strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        std::fprintf(stderr, "tls_epoll_echo_server: bad port '%s'\n", argv[1]);
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);  // OpenSSL's socket BIO writes with write(2)
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    g_ctx = SSL_CTX_new(TLS_server_method());
    if (g_ctx == nullptr) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(g_ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(g_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(g_ctx, 1);
    const char* ktls = std::getenv("KTLS");
    if (ktls != nullptr && std::string(ktls) == "1") SSL_CTX_set_options(g_ctx, SSL_OP_ENABLE_KTLS);
    // TLS_TICKETS=N: session tickets per handshake (OpenSSL's default 2; Go's crypto/tls sends 1).
    if (const char* t = std::getenv("TLS_TICKETS")) SSL_CTX_set_num_tickets(g_ctx, std::strtoul(t, nullptr, 10));
    if (SSL_CTX_use_certificate_chain_file(g_ctx, argv[3]) != 1) die("certificate");
    if (SSL_CTX_use_PrivateKey_file(g_ctx, argv[5], SSL_FILETYPE_PEM) != 1) die("private key");

    g_listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (g_listen_fd < 0) die("socket");
    int one = 1;
    ::setsockopt(g_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(g_listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) die("bind");
    if (::listen(g_listen_fd, SOMAXCONN) < 0) die("listen");
    socklen_t alen = sizeof addr;
    if (::getsockname(g_listen_fd, reinterpret_cast<sockaddr*>(&addr), &alen) < 0) die("getsockname");

    g_epfd = ::epoll_create1(EPOLL_CLOEXEC);
    if (g_epfd < 0) die("epoll_create1");
    epoll_event lev{};
    lev.events = EPOLLIN;
    lev.data.fd = g_listen_fd;
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_listen_fd, &lev) < 0) die("epoll_ctl(ADD listener)");
    g_conns.resize(1024);

    std::printf("serving on 127.0.0.1:%u\n", static_cast<unsigned>(ntohs(addr.sin_port)));
    std::fflush(stdout);

    constexpr int kMaxEvents = 1024;
    epoll_event events[kMaxEvents];
    for (;;) {
        int n = ::epoll_wait(g_epfd, events, kMaxEvents, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            const int fd = events[i].data.fd;
            if (fd == g_listen_fd) {
                accept_all();
                continue;
            }
            Conn& c = g_conns[static_cast<std::size_t>(fd)];
            if (c.ssl == nullptr) continue;  // closed earlier in this batch
            ERR_clear_error();
            // EPOLLERR/EPOLLHUP: the next SSL call reports it.
            if (c.handshaking) on_handshake(fd, c);
            else if (!c.out.empty()) {
                if (flush(fd, c) && SSL_has_pending(c.ssl)) on_readable(fd, c);
            }
            else on_readable(fd, c);
        }
    }
}
