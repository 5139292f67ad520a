// echo_load: the load generator of bench/run_echo_bench.sh. One thread, non-blocking sockets, epoll.
//
//   echo_load --port P [--host 127.0.0.1] [--conns C] [--size S]
//             [--duration SECONDS | --messages N] [--warmup SECONDS] [--server-pid PID]
//             [--connect-batch B] [--timeout SECONDS] [--tls --ca CAFILE] [--handshakes]
//             [--ciphersuites LIST]
//
// Opens C TCP connections to HOST:PORT. Each connection has one message outstanding at a time: it
// sends S bytes, waits for all S bytes to come back, checks every byte, records the round trip, and
// sends the next one. Message k of connection c is a pattern no other message has: its first bytes
// are c and k (when S allows), the rest 64-bit words derived from (c, k, position), so an echo that
// is short, late, duplicated, reordered or crossed with another connection's is caught.
//
// Phases, all bounded in time:
//   1. ramp-up: connections are opened at most B at a time (default 64); one counts as opened once
//      its first echo has come back, so no server's accept backlog (asyncio's default is 100)
//      ever overflows; connections already up wait, idle, until all C are up;
//   2. warm-up: all C connections echo for --warmup seconds (default 1; 0 in --messages mode);
//   3. the measured window: --duration seconds (default 5), or until every connection has done
//      --messages round trips. Only round trips that end inside the window are counted;
//   4. drain: no new message is sent, the outstanding ones are awaited (and checked), then every
//      connection is closed, so that servers see an orderly EOF and no reset.
// --timeout (default 60 s) bounds ramp-up, and the whole --messages window; drain is bounded by 10 s.
//
// Prints one line on stdout:
//   conns=C size=S msgs=N msgs_per_s=X p50_us=Y p99_us=Z byte_errors=E conn_errors=K window_s=W
// followed by " server_cpu_s=T" when --server-pid is given: the server's utime+stime (from
// /proc/PID/stat) consumed during the measured window, read at its two ends. byte_errors counts
// bytes that differ from what was sent (in every phase); conn_errors counts connections that failed
// (refused, reset, closed early, or stuck past a timeout). Exit status 0 when both are 0, 1 when
// not (the line is printed all the same), 2 on bad arguments or a setup failure.
//
// --tls: every connection speaks TLS 1.3 (OpenSSL on the socket fd; the server's certificate is
// verified against CAFILE and must name the IP address 127.0.0.1). The same phases and checks apply.
// --ciphersuites LIST: the TLS 1.3 suites offered (OpenSSL's syntax; default: OpenSSL's, which
// lists TLS_AES_256_GCM_SHA384 first). Offer one so that every server does the same work: an
// OpenSSL server takes the client's first choice, Go's crypto/tls its own (AES-128-GCM first).
// --handshakes (needs --tls): the handshake benchmark. Each of the C connections loops: connect, full
// handshake (no session resumption), one echo of S bytes, close_notify, wait for the server's EOF,
// close; then the next connection. No ramp-up: all C start at once. "msgs" then counts the cycles
// completed inside the window (= full handshakes), and p50/p99 are the cycle times.
//
// The soft RLIMIT_NOFILE is raised to the hard limit. Only the host given is connected to; it must
// be a numeric IPv4 address (default 127.0.0.1).
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using u64 = std::uint64_t;

u64 now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<u64>(ts.tv_sec) * 1'000'000'000u + static_cast<u64>(ts.tv_nsec);
}

[[noreturn]] void usage(const char* msg) {
    std::fprintf(stderr,
                 "echo_load: %s\n"
                 "usage: echo_load --port P [--host 127.0.0.1] [--conns C] [--size S]\n"
                 "                 [--duration SECONDS | --messages N] [--warmup SECONDS]\n"
                 "                 [--server-pid PID] [--connect-batch B] [--timeout SECONDS]\n"
                 "                 [--tls --ca CAFILE] [--handshakes] [--ciphersuites LIST]\n",
                 msg);
    std::exit(2);
}

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "echo_load: %s: %s\n", what, std::strerror(errno));
    std::exit(2);
}

// utime + stime of a process, in seconds; -1 if it cannot be read.
double process_cpu_s(long pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto rp = s.rfind(')');  // comm may hold spaces and parentheses: fields start after the last ')'
    if (rp == std::string::npos) return -1;
    std::istringstream in(s.substr(rp + 2));
    // Fields 3.. : state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
        if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
        if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
    }
    if (!in) return -1;
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

u64 mix(u64 x) {  // splitmix64 finalizer
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

// Message `seq` of connection `id`: [id: 4 bytes LE][seq: 8 bytes LE] then 64-bit words
// mix(id, seq) + position * odd constant; shorter messages get a prefix of the same layout.
void fill_message(std::vector<unsigned char>& buf, std::uint32_t id, u64 seq) {
    const std::size_t size = buf.size();
    unsigned char* p = buf.data();
    const u64 seed = mix((static_cast<u64>(id) << 40) ^ seq ^ 0x5eed5eed5eedULL);
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        u64 w = seed + static_cast<u64>(i) * 0x9e3779b97f4a7c15ULL;
        std::memcpy(p + i, &w, 8);
    }
    if (i < size) {
        u64 w = seed + static_cast<u64>(i) * 0x9e3779b97f4a7c15ULL;
        std::memcpy(p + i, &w, size - i);
    }
    unsigned char hdr[12];
    std::memcpy(hdr, &id, 4);  // little-endian hosts (x86-64, aarch64)
    std::memcpy(hdr + 4, &seq, 8);
    std::memcpy(p, hdr, std::min<std::size_t>(size, sizeof hdr));
}

enum class State { Idle, Connecting, Handshaking, Sending, Receiving, ShuttingDown, Closed };

struct Conn {
    int fd = -1;
    State state = State::Idle;
    std::uint32_t id = 0;
    u64 seq = 0;           // sequence number of the current message
    u64 done = 0;          // round trips completed (all phases)
    u64 done_window = 0;   // round trips completed inside the measured window
    bool up = false;       // first echo came back (counts as opened)
    bool want_out = false; // EPOLLOUT registered
    std::size_t sent = 0, got = 0;
    u64 t_send = 0;
    u64 t_connect = 0;     // --handshakes: start of this cycle
    SSL* ssl = nullptr;    // --tls
    std::vector<unsigned char> out, in;
};

enum class Phase { Ramp, Warmup, Window, Drain };

struct Options {
    std::string host = "127.0.0.1";
    int port = -1;
    long conns = 100;
    long size = 64;
    double duration = 5;
    long messages = 0;
    double warmup = -1;  // -1: default (1 s, or 0 with --messages)
    long server_pid = 0;
    long connect_batch = 64;
    double timeout = 60;
    bool tls = false;
    bool handshakes = false;
    std::string ca;
    std::string ciphersuites;
};

double parse_double(const char* s, const char* name) {
    char* end = nullptr;
    double v = std::strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= 0)) usage((std::string("bad value for ") + name).c_str());
    return v;
}
long parse_long(const char* s, const char* name, long lo) {
    char* end = nullptr;
    long v = std::strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo) usage((std::string("bad value for ") + name).c_str());
    return v;
}

class Load {
public:
    explicit Load(const Options& o) : o_(o) {}

    int run();

private:
    void start_connect(Conn& c);
    void on_event(Conn& c, std::uint32_t ev);
    void start_message(Conn& c);
    bool do_send(Conn& c);
    void do_recv(Conn& c);
    void complete(Conn& c);
    void fail(Conn& c, const char* why, int err);
    void set_out(Conn& c, bool on);
    void close_conn(Conn& c);
    void do_handshake(Conn& c);
    void do_shutdown(Conn& c);
    void end_cycle(Conn& c);
    bool ssl_wait(Conn& c, int r, const char* what);

    Options o_;
    SSL_CTX* ctx_ = nullptr;
    sockaddr_in addr_{};
    int epfd_ = -1;
    std::vector<Conn> conns_;
    Phase phase_ = Phase::Ramp;
    long next_to_open_ = 0;
    long opening_ = 0;  // connecting, or connected without a first echo yet
    long up_ = 0;
    long open_ = 0;     // fds open
    long finished_ = 0; // connections done with --messages in the window
    u64 byte_errors_ = 0;
    u64 conn_errors_ = 0;
    u64 window_start_ = 0;
    std::vector<std::uint32_t> lat_ns_;  // round trips ending inside the window (capped at ~4.29 s)
};

void Load::set_out(Conn& c, bool on) {
    if (c.want_out == on) return;
    epoll_event ev{};
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
    ev.data.u32 = c.id;
    if (epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev) < 0) die("epoll_ctl(MOD)");
    c.want_out = on;
}

void Load::close_conn(Conn& c) {
    if (c.ssl != nullptr) {
        SSL_free(c.ssl);
        c.ssl = nullptr;
    }
    if (c.fd >= 0) {
        ::close(c.fd);
        c.fd = -1;
        --open_;
    }
    if (!c.up && c.state != State::Idle) --opening_;
    c.state = State::Closed;
}

void Load::fail(Conn& c, const char* why, int err) {
    if (conn_errors_ < 5) {
        std::fprintf(stderr, "echo_load: connection %u: %s%s%s\n", c.id, why, err ? ": " : "",
                     err ? std::strerror(err) : "");
    }
    ++conn_errors_;
    close_conn(c);
}

void Load::start_connect(Conn& c) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c.fd = fd;
    ++open_;
    ++opening_;
    c.state = State::Connecting;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u32 = c.id;
    c.want_out = true;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl(ADD)");
    int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_);
    if (r < 0 && errno != EINPROGRESS) {
        fail(c, "connect", errno);
        return;
    }
    c.t_connect = now_ns();
    if (o_.tls) {
        c.ssl = SSL_new(ctx_);
        if (c.ssl == nullptr || SSL_set_fd(c.ssl, fd) != 1) die("SSL_new");
        SSL_set_connect_state(c.ssl);
        // The server's certificate must name 127.0.0.1 (the --host we connect to).
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c.ssl), o_.host.c_str()) != 1) die("set1_ip_asc");
    }
    // Completion (or failure) is reported as EPOLLOUT/EPOLLERR.
}

void Load::start_message(Conn& c) {
    ++c.seq;
    fill_message(c.out, c.id, c.seq);
    c.sent = 0;
    c.got = 0;
    c.state = State::Sending;
    c.t_send = now_ns();
    if (do_send(c)) c.state = State::Receiving;
}

// Sends what is left of c.out. True when all of it is sent.
bool Load::do_send(Conn& c) {
    while (c.ssl != nullptr && c.sent < c.out.size()) {
        std::size_t w = 0;
        ERR_clear_error();
        const int r = SSL_write_ex(c.ssl, c.out.data() + c.sent, c.out.size() - c.sent, &w);
        if (r == 1) {
            c.sent += w;
            continue;
        }
        ssl_wait(c, r, "SSL_write");
        return false;
    }
    while (c.sent < c.out.size()) {
        ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) {
            c.sent += static_cast<std::size_t>(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_out(c, true);
            return false;
        } else {
            fail(c, "send", errno);
            return false;
        }
    }
    set_out(c, false);
    return true;
}

void Load::do_recv(Conn& c) {
    // Read at most what is still expected, so a server that sends too much is caught by the
    // next message's check (or as unexpected data).
    std::size_t want = c.in.size() - c.got;
    if (c.ssl != nullptr) {
        // SSL_read until the message is complete or the socket is drained: a record already
        // decrypted into OpenSSL's buffer would never wake epoll again.
        while (c.got < c.in.size()) {
            std::size_t n = 0;
            ERR_clear_error();
            const int r = SSL_read_ex(c.ssl, c.in.data() + c.got, c.in.size() - c.got, &n);
            if (r != 1) {
                if (SSL_get_error(c.ssl, r) == SSL_ERROR_ZERO_RETURN) {
                    fail(c, "closed by the server before the echo was complete", 0);
                    return;
                }
                ssl_wait(c, r, "SSL_read");
                return;
            }
            c.got += n;
        }
        if (c.sent == c.out.size()) complete(c);
        return;
    }
    ssize_t n;
    do {
        n = ::recv(c.fd, c.in.data() + c.got, want, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        fail(c, "recv", errno);
        return;
    }
    if (n == 0) {
        fail(c, "closed by the server before the echo was complete", 0);
        return;
    }
    c.got += static_cast<std::size_t>(n);
    if (c.got == c.in.size() && c.sent == c.out.size()) complete(c);
}

// After an SSL call that did not complete: wait for the socket direction OpenSSL asks for (true),
// or fail the connection (false).
bool Load::ssl_wait(Conn& c, int r, const char* what) {
    const int err = SSL_get_error(c.ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
        set_out(c, c.state == State::Sending);  // (a send still waiting keeps its EPOLLOUT)
        return true;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        set_out(c, true);
        return true;
    }
    char buf[256] = "";
    const unsigned long e = ERR_get_error();
    if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
    if (conn_errors_ < 5) {
        std::fprintf(stderr, "echo_load: connection %u: %s failed (SSL error %d%s%s%s%s)\n", c.id, what, err,
                     buf[0] ? ": " : "", buf, err == SSL_ERROR_SYSCALL && errno ? ": " : "",
                     err == SSL_ERROR_SYSCALL && errno ? std::strerror(errno) : "");
    }
    ++conn_errors_;
    close_conn(c);
    return false;
}

void Load::do_handshake(Conn& c) {
    ERR_clear_error();
    const int r = SSL_do_handshake(c.ssl);
    if (r == 1) {
        start_message(c);
        return;
    }
    ssl_wait(c, r, "handshake");
}

// --handshakes: close_notify sent, waiting for the server's close_notify or EOF.
void Load::do_shutdown(Conn& c) {
    for (;;) {
        unsigned char buf[256];
        std::size_t n = 0;
        ERR_clear_error();
        const int r = SSL_read_ex(c.ssl, buf, sizeof buf, &n);
        if (r == 1) {
            fail(c, "data from the server after the echo", 0);
            return;
        }
        const int err = SSL_get_error(c.ssl, r);
        if (err == SSL_ERROR_WANT_READ) {
            set_out(c, false);
            return;
        }
        // close_notify, or a bare EOF (or a reset: the server closed without reading ours).
        ERR_clear_error();
        end_cycle(c);
        return;
    }
}

void Load::end_cycle(Conn& c) {
    if (phase_ == Phase::Window) {
        const u64 d = now_ns() - c.t_connect;
        lat_ns_.push_back(d > 0xffffffffULL ? 0xffffffffU : static_cast<std::uint32_t>(d));
    }
    c.state = State::Idle;
    close_conn(c);
    c.want_out = false;
    if (phase_ == Phase::Warmup || phase_ == Phase::Window) start_connect(c);
}

void Load::complete(Conn& c) {
    const u64 t = now_ns();
    if (std::memcmp(c.in.data(), c.out.data(), c.in.size()) != 0) {
        u64 bad = 0;
        for (std::size_t i = 0; i < c.in.size(); ++i) bad += c.in[i] != c.out[i];
        if (byte_errors_ == 0) {
            std::fprintf(stderr, "echo_load: connection %u message %llu: %llu byte(s) differ\n", c.id,
                         static_cast<unsigned long long>(c.seq), static_cast<unsigned long long>(bad));
        }
        byte_errors_ += bad;
    }
    ++c.done;
    if (o_.handshakes) {
        // One echo per connection: close_notify, then wait for the server's side to end.
        c.state = State::ShuttingDown;
        ERR_clear_error();
        SSL_shutdown(c.ssl);
        ERR_clear_error();
        do_shutdown(c);
        return;
    }
    if (!c.up) {
        c.up = true;
        --opening_;
        ++up_;
    }
    if (phase_ == Phase::Window) {
        ++c.done_window;
        const u64 d = t - c.t_send;
        lat_ns_.push_back(d > 0xffffffffULL ? 0xffffffffU : static_cast<std::uint32_t>(d));
        if (o_.messages > 0 && c.done_window == static_cast<u64>(o_.messages)) {
            ++finished_;
            c.state = State::Idle;  // done: sends nothing more
            close_conn(c);
            return;
        }
    }
    if (phase_ == Phase::Drain) {
        c.state = State::Idle;
        close_conn(c);
        return;
    }
    if (phase_ == Phase::Ramp) {
        c.state = State::Idle;  // waits, connected, for the others (see run())
        return;
    }
    start_message(c);
}

void Load::on_event(Conn& c, std::uint32_t ev) {
    if (c.fd < 0) return;
    if (c.state == State::Connecting) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            fail(c, "connect", err);
            return;
        }
        if (c.ssl != nullptr) {
            c.state = State::Handshaking;
            do_handshake(c);
        } else {
            start_message(c);
        }
        return;
    }
    if (c.state == State::Handshaking) {
        do_handshake(c);
        return;
    }
    if (c.state == State::ShuttingDown) {
        do_shutdown(c);
        return;
    }
    if (c.ssl != nullptr) {
        // OpenSSL may want either direction for either call: retry both.
        if (c.state == State::Sending && do_send(c)) c.state = State::Receiving;
        if (c.fd >= 0 && (c.state == State::Receiving || c.state == State::Sending)) {
            do_recv(c);
        } else if (c.fd >= 0 && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
            // Idle (waiting for the ramp-up): only handshake messages (session tickets) may come.
            unsigned char scratch[64];
            std::size_t n = 0;
            ERR_clear_error();
            const int r = SSL_read_ex(c.ssl, scratch, sizeof scratch, &n);
            if (r == 1 || SSL_get_error(c.ssl, r) != SSL_ERROR_WANT_READ)
                fail(c, "data or hang-up from the server while no message was outstanding", 0);
        }
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (c.state == State::Receiving || c.state == State::Sending) {
            do_recv(c);
        } else {
            fail(c, "data or hang-up from the server while no message was outstanding", 0);
        }
        if (c.fd < 0) return;
    }
    if ((ev & EPOLLOUT) && c.state == State::Sending) {
        if (do_send(c)) {
            c.state = State::Receiving;
            if (c.got == c.in.size()) complete(c);
        }
    }
}

int Load::run() {
    if (inet_pton(AF_INET, o_.host.c_str(), &addr_.sin_addr) != 1) usage("--host must be a numeric IPv4 address");
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(static_cast<std::uint16_t>(o_.port));

    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) die("epoll_create1");
    if (o_.tls) {
        ctx_ = SSL_CTX_new(TLS_client_method());
        if (ctx_ == nullptr) die("SSL_CTX_new");
        SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
        SSL_CTX_set_max_proto_version(ctx_, TLS1_3_VERSION);
        if (!o_.ciphersuites.empty() && SSL_CTX_set_ciphersuites(ctx_, o_.ciphersuites.c_str()) != 1) {
            std::fprintf(stderr, "echo_load: bad --ciphersuites '%s'\n", o_.ciphersuites.c_str());
            std::exit(2);
        }
        // No session cache: every handshake is a full one.
        SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
        if (SSL_CTX_load_verify_locations(ctx_, o_.ca.c_str(), nullptr) != 1) {
            std::fprintf(stderr, "echo_load: cannot load the CA file '%s'\n", o_.ca.c_str());
            std::exit(2);
        }
    }
    conns_.resize(static_cast<std::size_t>(o_.conns));
    for (long i = 0; i < o_.conns; ++i) {
        Conn& c = conns_[static_cast<std::size_t>(i)];
        c.id = static_cast<std::uint32_t>(i);
        c.out.resize(static_cast<std::size_t>(o_.size));
        c.in.resize(static_cast<std::size_t>(o_.size));
    }
    if (o_.messages > 0) lat_ns_.reserve(static_cast<std::size_t>(std::min<long>(o_.messages * o_.conns, 50'000'000)));
    else lat_ns_.reserve(1 << 20);

    const double warmup = o_.warmup >= 0 ? o_.warmup : (o_.messages > 0 ? 0.0 : 1.0);
    const u64 t0 = now_ns();
    const u64 timeout_ns = static_cast<u64>(o_.timeout * 1e9);
    u64 phase_end = 0;  // end of warm-up / window / drain, once known
    if (o_.handshakes) {
        // No ramp-up: every connection starts its connect-handshake-echo-close loop at once.
        phase_ = Phase::Warmup;
        phase_end = t0 + static_cast<u64>(warmup * 1e9);
        for (Conn& c : conns_) start_connect(c);
        next_to_open_ = o_.conns;
    }
    double cpu0 = 0, cpu1 = 0;
    u64 window_end = 0;
    bool timed_out = false;

    std::vector<epoll_event> events(1024);
    for (;;) {
        const u64 now = now_ns();
        // ---- phase transitions
        if (phase_ == Phase::Ramp) {
            while (opening_ < o_.connect_batch && next_to_open_ < o_.conns) {
                start_connect(conns_[static_cast<std::size_t>(next_to_open_++)]);
            }
            if (next_to_open_ == o_.conns && opening_ == 0) {
                if (open_ == 0) break;  // every connection failed
                phase_ = Phase::Warmup;
                phase_end = now + static_cast<u64>(warmup * 1e9);
                for (Conn& c : conns_) {
                    if (c.fd >= 0 && c.state == State::Idle) start_message(c);
                }
            } else if (now - t0 > timeout_ns) {
                std::fprintf(stderr, "echo_load: ramp-up did not finish in %.0f s (%ld of %ld up)\n",
                             o_.timeout, up_, o_.conns);
                timed_out = true;
                break;
            }
        }
        if (phase_ == Phase::Warmup && now >= phase_end) {
            phase_ = Phase::Window;
            if (o_.server_pid > 0) cpu0 = process_cpu_s(o_.server_pid);
            window_start_ = now_ns();
            phase_end = o_.messages > 0 ? window_start_ + timeout_ns
                                        : window_start_ + static_cast<u64>(o_.duration * 1e9);
        }
        if (phase_ == Phase::Window) {
            const bool all_done = o_.messages > 0 && finished_ + static_cast<long>(conn_errors_) >= o_.conns;
            if (all_done || open_ == 0 || now >= phase_end) {
                window_end = now_ns();
                if (o_.server_pid > 0) cpu1 = process_cpu_s(o_.server_pid);
                if (o_.messages > 0 && !all_done) {
                    std::fprintf(stderr, "echo_load: --messages %ld not done within %.0f s\n",
                                 o_.messages, o_.timeout);
                    timed_out = true;
                }
                phase_ = Phase::Drain;
                phase_end = window_end + 10'000'000'000ULL;
                // Connections with nothing outstanding close now; the others when their echo is back.
                for (Conn& c : conns_) {
                    if (c.fd >= 0 && c.state != State::Sending && c.state != State::Receiving &&
                        !(o_.handshakes && c.state != State::Idle)) {
                        c.state = State::Idle;
                        close_conn(c);
                    }
                }
            }
        }
        if (phase_ == Phase::Drain) {
            if (open_ == 0) break;
            if (now >= phase_end) {
                std::fprintf(stderr, "echo_load: %ld connection(s) still waiting for an echo 10 s after the end\n",
                             open_);
                for (Conn& c : conns_) {
                    if (c.fd >= 0) {
                        ++conn_errors_;
                        close_conn(c);
                    }
                }
                break;
            }
        }

        // ---- wait
        int wait_ms = 100;
        if (phase_ == Phase::Warmup || phase_ == Phase::Window || phase_ == Phase::Drain) {
            const u64 t = now_ns();
            const u64 left = phase_end > t ? phase_end - t : 0;
            wait_ms = static_cast<int>(std::min<u64>(100, (left + 999'999) / 1'000'000));
        }
        int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), wait_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            on_event(conns_[events[static_cast<std::size_t>(i)].data.u32], events[static_cast<std::size_t>(i)].events);
        }
    }
    if (window_end == 0) window_end = now_ns();  // never reached the window (ramp-up failed)
    for (Conn& c : conns_) {
        if (c.fd >= 0) close_conn(c);
    }

    // ---- report
    const u64 msgs = lat_ns_.size();
    const double window_s = window_start_ ? static_cast<double>(window_end - window_start_) / 1e9 : 0.0;
    auto pct = [&](double q) -> double {
        if (lat_ns_.empty()) return 0;
        std::size_t k = static_cast<std::size_t>(q * static_cast<double>(lat_ns_.size() - 1) + 0.5);
        std::nth_element(lat_ns_.begin(), lat_ns_.begin() + static_cast<std::ptrdiff_t>(k), lat_ns_.end());
        return static_cast<double>(lat_ns_[k]) / 1000.0;
    };
    const double p50 = pct(0.50);
    const double p99 = pct(0.99);
    if (o_.handshakes) std::printf("mode=handshakes ");
    else if (o_.tls) std::printf("mode=tls ");
    std::printf("conns=%ld size=%ld msgs=%llu msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f byte_errors=%llu "
                "conn_errors=%llu window_s=%.3f",
                o_.conns, o_.size, static_cast<unsigned long long>(msgs),
                window_s > 0 ? static_cast<double>(msgs) / window_s : 0.0, p50, p99,
                static_cast<unsigned long long>(byte_errors_), static_cast<unsigned long long>(conn_errors_),
                window_s);
    if (o_.server_pid > 0) {
        if (cpu0 >= 0 && cpu1 >= 0 && window_start_) std::printf(" server_cpu_s=%.2f", cpu1 - cpu0);
        else std::printf(" server_cpu_s=n/a");
    }
    std::printf("\n");
    std::fflush(stdout);
    if (timed_out && conn_errors_ == 0) conn_errors_ = 1;
    return (byte_errors_ == 0 && conn_errors_ == 0 && !timed_out && window_start_) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    bool have_duration = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto val = [&]() -> const char* {
            if (i + 1 >= argc) usage((a + " needs a value").c_str());
            return argv[++i];
        };
        if (a == "--host") o.host = val();
        else if (a == "--port") o.port = static_cast<int>(parse_long(val(), "--port", 1));
        else if (a == "--conns") o.conns = parse_long(val(), "--conns", 1);
        else if (a == "--size") o.size = parse_long(val(), "--size", 1);
        else if (a == "--duration") { o.duration = parse_double(val(), "--duration"); have_duration = true; }
        else if (a == "--messages") o.messages = parse_long(val(), "--messages", 1);
        else if (a == "--warmup") o.warmup = parse_double(val(), "--warmup");
        else if (a == "--server-pid") o.server_pid = parse_long(val(), "--server-pid", 1);
        else if (a == "--connect-batch") o.connect_batch = parse_long(val(), "--connect-batch", 1);
        else if (a == "--timeout") o.timeout = parse_double(val(), "--timeout");
        else if (a == "--tls") o.tls = true;
        else if (a == "--ca") o.ca = val();
        else if (a == "--handshakes") o.handshakes = true;
        else if (a == "--ciphersuites") o.ciphersuites = val();
        else if (a == "-h" || a == "--help") usage("help");
        else usage(("unknown argument " + a).c_str());
    }
    if (o.port < 1 || o.port > 65535) usage("--port is required (1..65535)");
    if (have_duration && o.messages > 0) usage("give --duration or --messages, not both");
    if (o.tls && o.ca.empty()) usage("--tls needs --ca CAFILE");
    if (o.handshakes && !o.tls) usage("--handshakes needs --tls");
    if (!o.ciphersuites.empty() && !o.tls) usage("--ciphersuites needs --tls");
    if (o.handshakes && o.messages > 0) usage("--handshakes measures a --duration window");
    if (o.conns > 1'000'000) usage("--conns is too large");
    if (o.size > (64L << 20)) usage("--size is too large (64 MiB at most)");
    if (o.duration > 3600 || o.timeout > 3600 || o.warmup > 3600) usage("durations are capped at one hour");

    std::signal(SIGPIPE, SIG_IGN);
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < static_cast<rlim_t>(o.conns) + 16) {
        std::fprintf(stderr, "echo_load: RLIMIT_NOFILE is %llu, too low for %ld connections\n",
                     static_cast<unsigned long long>(rl.rlim_cur), o.conns);
        return 2;
    }
    Load load(o);
    return load.run();
}
