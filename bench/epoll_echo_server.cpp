// epoll_echo_server PORT: the reference echo server for bench/run_echo_bench.sh, written by hand on
// raw epoll, the way a careful C programmer would, so that it shows what one thread on epoll allows.
//
// One thread, non-blocking sockets, level-triggered epoll. Listens on 127.0.0.1:PORT (PORT 0: the
// kernel picks one) and prints "serving on 127.0.0.1:PORT" with the real port once it listens.
// Every connection is echoed byte for byte until the peer closes it:
//
//   * readable: one read(2) of up to 64 KiB into a buffer shared by all connections (level-triggered
//     epoll reports the fd again if more is left, so one read per wake-up is enough and never ends
//     in a wasted EAGAIN), then one write(2) of what was read;
//   * a partial write keeps the rest in the connection's own buffer, stops reading that connection
//     (EPOLLOUT instead of EPOLLIN: the peer cannot make us buffer more than one read) and writes
//     the rest when the socket is writable again, then reads again;
//   * EOF: the connection is closed once everything read has been written back; an error
//     (ECONNRESET, EPIPE, ...) closes it at once.
//
// Accepted sockets get TCP_NODELAY, as Python's asyncio (and uvloop) set it on every TCP transport.
// Sends use MSG_NOSIGNAL, so a peer that is gone never raises SIGPIPE. accept4 runs until EAGAIN on
// each wake-up; when the process is out of descriptors (EMFILE/ENFILE) the listener is taken out of
// epoll for 100 ms instead of spinning. RLIMIT_NOFILE's soft limit is raised to the hard limit.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
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
    bool open = false;
    std::string out;         // bytes read but not yet written back
    std::size_t out_pos = 0; // first byte of `out` still to write
};

int g_epfd = -1;
int g_listen_fd = -1;
std::vector<Conn> g_conns;  // indexed by fd
char g_buf[kReadSize];

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "epoll_echo_server: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

void raise_nofile_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void set_events(int fd, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (epoll_ctl(g_epfd, EPOLL_CTL_MOD, fd, &ev) < 0) die("epoll_ctl(MOD)");
}

void close_conn(int fd) {
    // close(2) also removes the fd from the epoll set (we never dup it).
    ::close(fd);
    Conn& c = g_conns[static_cast<std::size_t>(fd)];
    c.open = false;
    std::string().swap(c.out);
    c.out_pos = 0;
}

// Writes as much of c.out as the socket takes. Returns false if the connection was closed.
bool flush(int fd, Conn& c) {
    while (c.out_pos < c.out.size()) {
        ssize_t n = ::send(fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos, MSG_NOSIGNAL);
        if (n > 0) {
            c.out_pos += static_cast<std::size_t>(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return true;  // still pending: stay on EPOLLOUT
        } else {
            close_conn(fd);
            return false;
        }
    }
    c.out.clear();
    c.out_pos = 0;
    set_events(fd, EPOLLIN);  // everything written: read again
    return true;
}

void on_readable(int fd, Conn& c) {
    ssize_t n;
    do {
        n = ::read(fd, g_buf, sizeof g_buf);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // spurious wake-up
        close_conn(fd);                                      // ECONNRESET, ...
        return;
    }
    if (n == 0) {  // EOF; nothing is pending (we only read when `out` is empty)
        close_conn(fd);
        return;
    }
    std::size_t len = static_cast<std::size_t>(n);
    std::size_t done = 0;
    while (done < len) {
        ssize_t w = ::send(fd, g_buf + done, len - done, MSG_NOSIGNAL);
        if (w > 0) {
            done += static_cast<std::size_t>(w);
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            // Keep the rest, stop reading until it is written.
            c.out.assign(g_buf + done, len - done);
            c.out_pos = 0;
            set_events(fd, EPOLLOUT);
            return;
        } else {
            close_conn(fd);
            return;
        }
    }
}

bool g_listener_paused = false;
timespec g_resume_at{};  // when a paused listener goes back into epoll

void accept_all() {
    for (;;) {
        int fd = ::accept4(g_listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // Out of descriptors: level-triggered epoll would report the listener again at
                // once. Take it out for a while instead of spinning.
                std::fprintf(stderr, "epoll_echo_server: accept: %s; pausing accepts for 100 ms\n",
                             std::strerror(errno));
                if (epoll_ctl(g_epfd, EPOLL_CTL_DEL, g_listen_fd, nullptr) < 0) die("epoll_ctl(DEL)");
                g_listener_paused = true;
                clock_gettime(CLOCK_MONOTONIC, &g_resume_at);
                g_resume_at.tv_nsec += 100'000'000;
                if (g_resume_at.tv_nsec >= 1'000'000'000) {
                    g_resume_at.tv_sec += 1;
                    g_resume_at.tv_nsec -= 1'000'000'000;
                }
                return;
            }
            die("accept4");
        }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (static_cast<std::size_t>(fd) >= g_conns.size()) g_conns.resize(static_cast<std::size_t>(fd) * 2 + 64);
        Conn& c = g_conns[static_cast<std::size_t>(fd)];
        c.open = true;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl(ADD)");
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    char* end = nullptr;
    long port = std::strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        std::fprintf(stderr, "epoll_echo_server: bad port '%s'\n", argv[1]);
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);  // belt and braces; every send uses MSG_NOSIGNAL
    raise_nofile_limit();

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
        int n = ::epoll_wait(g_epfd, events, kMaxEvents, g_listener_paused ? 100 : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        if (g_listener_paused) {
            timespec now{};
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > g_resume_at.tv_sec ||
                (now.tv_sec == g_resume_at.tv_sec && now.tv_nsec >= g_resume_at.tv_nsec)) {
                if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_listen_fd, &lev) < 0) die("epoll_ctl(ADD listener)");
                g_listener_paused = false;
            }
        }
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            std::uint32_t ev = events[i].events;
            if (fd == g_listen_fd) {
                accept_all();
                continue;
            }
            Conn& c = g_conns[static_cast<std::size_t>(fd)];
            if (!c.open) continue;  // closed earlier in this batch
            if (c.out.empty()) {
                // Reading. EPOLLERR/EPOLLHUP: the read reports the EOF or the error.
                if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(fd, c);
            } else if (ev & (EPOLLERR | EPOLLHUP)) {
                close_conn(fd);
            } else if (ev & EPOLLOUT) {
                flush(fd, c);
            }
        }
    }
}
