// uring_echo_server PORT: the second reference echo server for bench/run_echo_bench.sh, written by
// hand on liburing the way a careful C programmer would, to show what one thread on io_uring allows
// (as epoll_echo_server.cpp does for epoll). Same command line, output and behaviour:
// listens on 127.0.0.1:PORT (0: the kernel picks one) with a SOMAXCONN backlog, prints
// "serving on 127.0.0.1:PORT" once it listens, echoes every connection byte for byte until the peer
// closes it, sets TCP_NODELAY on accepted sockets, raises RLIMIT_NOFILE's soft limit to the hard one.
//
// One ring, one thread, no system call besides io_uring_enter on the steady path:
//
//   * one multishot ACCEPT on the listener: one CQE per connection. When it ends (no
//     IORING_CQE_F_MORE) it is re-armed; out of descriptors (EMFILE/ENFILE/ENOBUFS/ENOMEM) it is
//     re-armed 100 ms later by a TIMEOUT request, instead of spinning (as the epoll reference);
//   * per connection one multishot RECV with buffer selection from a provided-buffer ring shared by
//     all connections (4096 buffers of 16 KiB, populated up front: 10,000 idle connections pin no
//     buffer); each CQE names the buffer the kernel filled;
//   * the filled buffer is sent back as it is (IORING_OP_SEND, MSG_NOSIGNAL, no copy) and given
//     back to the buffer ring once the send has completed. At most one send per connection is in
//     flight (two sends on one socket could complete out of order); received buffers queue behind
//     it. A short send is resubmitted for the rest;
//   * -ENOBUFS (the buffer ring ran dry): the multishot recv has ended; it is re-armed at the top
//     of the loop once the ring has buffers again, so no connection stalls;
//   * EOF (res 0) or an error: the connection is closed once its send in flight (if any) has
//     completed and its recv has ended, so no request ever refers to a closed (and maybe reused)
//     fd. A failed send shuts the socket down, which ends the recv;
//   * a full SQ is submitted and the SQE taken again; the CQ ring is 8× the SQ ring and the
//     kernel keeps overflowing CQEs (IORING_FEAT_NODROP) until they are reaped.
//
// The ring is set up with IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (completion work
// runs when we enter the kernel to wait, in our context, batched), else IORING_SETUP_COOP_TASKRUN,
// else plainly; the ring fd is registered (io_uring_register_ring_fd) to spare the fd lookup on each
// enter. liburing 2.3 (Debian 12) has no io_uring_setup_buf_ring, so the buffer ring is mmap()ed and
// registered with io_uring_register_buf_ring, which is what that helper does. Sockets are plain
// (blocking) fds, not registered "direct" descriptors: what an ordinary program has.
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

namespace {

constexpr unsigned kSqEntries = 2048;
constexpr unsigned kCqEntries = kSqEntries * 8;
// The buffer ring: g_buf_count buffers of g_buf_size bytes (URING_ECHO_BUFS, a power of two, and
// URING_ECHO_BUF_SIZE override them, for experiments). A buffer is held only from its recv's CQE to
// its send's CQE, so the count bounds the messages in flight, not the connections.
unsigned g_buf_count = 4096;
unsigned g_buf_size = 16384;  // one 16 KiB message fits one buffer
constexpr unsigned kBufGroup = 0;

// user_data: the request kind in the top byte, the fd below.
enum Kind : std::uint64_t { kAccept = 1, kRecv = 2, kSend = 3, kAcceptRetry = 4 };
std::uint64_t tag(Kind k, int fd) { return (static_cast<std::uint64_t>(k) << 56) | static_cast<std::uint32_t>(fd); }
Kind kind_of(std::uint64_t ud) { return static_cast<Kind>(ud >> 56); }
int fd_of(std::uint64_t ud) { return static_cast<int>(ud & 0xffffffffu); }

struct Pending {
    std::uint16_t bid;       // buffer id
    std::uint32_t len;       // bytes received into it
    std::uint32_t off;       // bytes of it already sent
};

struct Conn {
    bool open = false;
    bool recv_armed = false;   // a multishot recv is in the ring
    bool send_in_flight = false;
    bool eof = false;          // recv saw EOF or an error: close once the queue is flushed
    bool waiting_buffers = false;  // recv ended with -ENOBUFS, waiting to be re-armed
    std::deque<Pending> queue; // received buffers, front one being sent
};

io_uring g_ring;
io_uring_buf_ring* g_br = nullptr;
char* g_bufs = nullptr;
unsigned g_free_bufs = g_buf_count;   // buffers the kernel may fill
unsigned g_bufs_to_advance = 0;     // given back since the last io_uring_buf_ring_advance
int g_listen_fd = -1;
std::vector<Conn> g_conns;          // indexed by fd
std::vector<int> g_starved;         // connections whose recv ended with -ENOBUFS
__kernel_timespec g_retry_delay{0, 100'000'000};
// Diagnostic variants (environment), to measure what each io_uring feature is worth; both off
// for the reference itself:
//   URING_ECHO_SEND_SYSCALL=1  send(2) at once from the loop, as a readiness-based program does;
//                              a send request only for what the socket did not take;
//   URING_ECHO_SINGLESHOT=1    one-shot recv requests (still with buffer selection), re-armed
//                              after each completion, instead of one multishot recv.
bool g_send_syscall = false;
bool g_singleshot = false;

[[noreturn]] void die(const char* what, int err) {
    std::fprintf(stderr, "uring_echo_server: %s: %s\n", what, std::strerror(err));
    std::exit(1);
}

void raise_nofile_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

// An SQE, submitting what is queued when the SQ is full.
io_uring_sqe* get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&g_ring);
    while (sqe == nullptr) {
        int r = io_uring_submit(&g_ring);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) die("io_uring_submit", -r);
        sqe = io_uring_get_sqe(&g_ring);
    }
    return sqe;
}

Conn& conn(int fd) {
    if (static_cast<std::size_t>(fd) >= g_conns.size()) g_conns.resize(static_cast<std::size_t>(fd) * 2 + 64);
    return g_conns[static_cast<std::size_t>(fd)];
}

char* buf_addr(unsigned bid) { return g_bufs + static_cast<std::size_t>(bid) * g_buf_size; }

void give_back(unsigned bid) {
    io_uring_buf_ring_add(g_br, buf_addr(bid), g_buf_size, static_cast<unsigned short>(bid),
                          io_uring_buf_ring_mask(g_buf_count), static_cast<int>(g_bufs_to_advance));
    ++g_bufs_to_advance;
}

void arm_accept() {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, g_listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tag(kAccept, g_listen_fd));
}

void arm_recv(int fd, Conn& c) {
    io_uring_sqe* sqe = get_sqe();
    if (g_singleshot) io_uring_prep_recv(sqe, fd, nullptr, 0, 0);
    else io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kBufGroup;
    io_uring_sqe_set_data64(sqe, tag(kRecv, fd));
    c.recv_armed = true;
}

void submit_send(int fd, Conn& c) {
    const Pending& p = c.queue.front();
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_send(sqe, fd, buf_addr(p.bid) + p.off, p.len - p.off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(kSend, fd));
    c.send_in_flight = true;
}

void finish(int fd, Conn& c);

// URING_ECHO_SEND_SYSCALL=1: sends the queue with send(2) now; a request for what is left.
void send_now(int fd, Conn& c) {
    while (!c.queue.empty()) {
        Pending& p = c.queue.front();
        const ssize_t n = ::send(fd, buf_addr(p.bid) + p.off, p.len - p.off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            submit_send(fd, c);
            return;
        }
        if (n < 0) {
            for (const Pending& q : c.queue) give_back(q.bid);
            c.queue.clear();
            finish(fd, c);
            return;
        }
        p.off += static_cast<std::uint32_t>(n);
        if (p.off < p.len) {
            submit_send(fd, c);
            return;
        }
        give_back(p.bid);
        c.queue.pop_front();
    }
}

void maybe_close(int fd, Conn& c) {
    if (!c.eof || c.recv_armed || c.send_in_flight) return;
    for (const Pending& p : c.queue) give_back(p.bid);
    std::deque<Pending>().swap(c.queue);
    c.open = false;
    c.eof = false;
    c.waiting_buffers = false;
    ::close(fd);
}

// The connection is over (EOF or error): nothing more is sent; close once no request refers to it.
void finish(int fd, Conn& c) {
    c.eof = true;
    if (c.recv_armed) {
        // Ends the multishot recv (it completes with 0 or an error), so the fd can be closed.
        ::shutdown(fd, SHUT_RDWR);
    }
    maybe_close(fd, c);
}

void on_accept(const io_uring_cqe* cqe) {
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        // The multishot accept has ended: re-arm it, after a pause when out of resources.
        const int e = -cqe->res;
        if (cqe->res < 0 && (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)) {
            std::fprintf(stderr, "uring_echo_server: accept: %s; pausing accepts for 100 ms\n", std::strerror(e));
            io_uring_sqe* sqe = get_sqe();
            io_uring_prep_timeout(sqe, &g_retry_delay, 0, 0);
            io_uring_sqe_set_data64(sqe, tag(kAcceptRetry, 0));
        } else {
            arm_accept();
        }
    }
    if (cqe->res < 0) return;  // ECONNABORTED and the like: the accept goes on (or was re-armed)
    const int fd = cqe->res;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn& c = conn(fd);
    c.open = true;
    arm_recv(fd, c);
}

void on_recv(const io_uring_cqe* cqe) {
    const int fd = fd_of(cqe->user_data);
    Conn& c = g_conns[static_cast<std::size_t>(fd)];
    if (!(cqe->flags & IORING_CQE_F_MORE)) c.recv_armed = false;
    if (cqe->res > 0) {
        const unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        --g_free_bufs;
        if (c.eof) {
            give_back(bid);  // the connection failed: drop what still comes in
        } else {
            c.queue.push_back(Pending{static_cast<std::uint16_t>(bid), static_cast<std::uint32_t>(cqe->res), 0});
            if (!c.send_in_flight) {
                if (g_send_syscall) send_now(fd, c);
                else submit_send(fd, c);
            }
        }
        // The kernel ended it (rare; every time with URING_ECHO_SINGLESHOT): go on.
        if (!c.recv_armed && !c.eof && c.open) arm_recv(fd, c);
    } else if (cqe->res == -ENOBUFS) {
        // The buffer ring ran dry: re-armed at the top of the loop once buffers are back.
        if (!c.waiting_buffers) {
            c.waiting_buffers = true;
            g_starved.push_back(fd);
        }
    } else {
        // 0: EOF; < 0: ECONNRESET and the like. What was received is still sent (EOF), then close.
        if (c.recv_armed) return;  // cannot happen: a final CQE carries no F_MORE
        c.eof = true;
        maybe_close(fd, c);
    }
}

void on_send(const io_uring_cqe* cqe) {
    const int fd = fd_of(cqe->user_data);
    Conn& c = g_conns[static_cast<std::size_t>(fd)];
    c.send_in_flight = false;
    if (cqe->res < 0) {
        // EPIPE, ECONNRESET: drop everything and close.
        for (const Pending& p : c.queue) give_back(p.bid);
        c.queue.clear();
        finish(fd, c);
        return;
    }
    Pending& p = c.queue.front();
    p.off += static_cast<std::uint32_t>(cqe->res);
    if (p.off < p.len) {  // short send: the rest
        submit_send(fd, c);
        return;
    }
    give_back(p.bid);
    c.queue.pop_front();
    if (!c.queue.empty()) submit_send(fd, c);
    else maybe_close(fd, c);
}

void setup_ring() {
    io_uring_params p{};
    const unsigned attempts[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                                 IORING_SETUP_COOP_TASKRUN, 0};
    int r = -EINVAL;
    const char* mode = "";
    for (unsigned flags : attempts) {
        p = io_uring_params{};
        p.flags = flags | IORING_SETUP_CQSIZE;
        p.cq_entries = kCqEntries;
        r = io_uring_queue_init_params(kSqEntries, &g_ring, &p);
        if (r == 0) {
            mode = flags & IORING_SETUP_DEFER_TASKRUN ? "SINGLE_ISSUER|DEFER_TASKRUN"
                   : flags                            ? "COOP_TASKRUN"
                                                      : "plain";
            break;
        }
        if (r != -EINVAL) break;  // an old kernel says EINVAL for unknown flags; anything else is fatal
    }
    if (r < 0) die("io_uring_queue_init_params", -r);
    if (!(p.features & IORING_FEAT_NODROP)) std::fprintf(stderr, "uring_echo_server: kernel without IORING_FEAT_NODROP\n");
    io_uring_register_ring_fd(&g_ring);  // optional: an error leaves the plain fd in use
    std::fprintf(stderr, "uring_echo_server: ring %s, %u SQEs, %u CQEs, %u buffers of %u B%s%s\n", mode, kSqEntries,
                 p.cq_entries, g_buf_count, g_buf_size, g_send_syscall ? ", send(2) first" : "",
                 g_singleshot ? ", one-shot recv" : "");

    // The provided-buffer ring: g_buf_count io_uring_buf entries, page aligned, shared with the kernel.
    const std::size_t ring_bytes = g_buf_count * sizeof(io_uring_buf);
    void* mem = ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) die("mmap(buffer ring)", errno);
    g_br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(g_br);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uint64_t>(mem);
    reg.ring_entries = g_buf_count;
    reg.bgid = kBufGroup;
    r = io_uring_register_buf_ring(&g_ring, &reg, 0);
    if (r < 0) die("io_uring_register_buf_ring", -r);
    // Populated up front: the kernel hands the buffers out in ring order, so without it the
    // first pass through the ring pays a page fault per 4 KiB inside the receives.
    void* bufs = ::mmap(nullptr, static_cast<std::size_t>(g_buf_count) * g_buf_size, PROT_READ | PROT_WRITE,
                        MAP_ANONYMOUS | MAP_PRIVATE | MAP_POPULATE, -1, 0);
    if (bufs == MAP_FAILED) die("mmap(buffers)", errno);
    g_bufs = static_cast<char*>(bufs);
    for (unsigned i = 0; i < g_buf_count; ++i) give_back(i);
    io_uring_buf_ring_advance(g_br, static_cast<int>(g_bufs_to_advance));
    g_bufs_to_advance = 0;
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
        std::fprintf(stderr, "uring_echo_server: bad port '%s'\n", argv[1]);
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);  // belt and braces; every send uses MSG_NOSIGNAL
    if (const char* e = std::getenv("URING_ECHO_BUFS")) g_buf_count = static_cast<unsigned>(std::strtoul(e, nullptr, 10));
    if (const char* e = std::getenv("URING_ECHO_BUF_SIZE")) g_buf_size = static_cast<unsigned>(std::strtoul(e, nullptr, 10));
    g_send_syscall = std::getenv("URING_ECHO_SEND_SYSCALL") != nullptr && *std::getenv("URING_ECHO_SEND_SYSCALL") == '1';
    g_singleshot = std::getenv("URING_ECHO_SINGLESHOT") != nullptr && *std::getenv("URING_ECHO_SINGLESHOT") == '1';
    if (g_buf_count == 0 || g_buf_count > 32768 || (g_buf_count & (g_buf_count - 1)) != 0 || g_buf_size == 0) {
        std::fprintf(stderr, "uring_echo_server: URING_ECHO_BUFS must be a power of two <= 32768, URING_ECHO_BUF_SIZE > 0\n");
        return 2;
    }
    raise_nofile_limit();

    g_listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (g_listen_fd < 0) die("socket", errno);
    int one = 1;
    ::setsockopt(g_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(g_listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) die("bind", errno);
    if (::listen(g_listen_fd, SOMAXCONN) < 0) die("listen", errno);
    socklen_t alen = sizeof addr;
    if (::getsockname(g_listen_fd, reinterpret_cast<sockaddr*>(&addr), &alen) < 0) die("getsockname", errno);

    setup_ring();
    g_conns.resize(1024);
    arm_accept();

    std::printf("serving on 127.0.0.1:%u\n", static_cast<unsigned>(ntohs(addr.sin_port)));
    std::fflush(stdout);

    for (;;) {
        // Buffers given back in the last batch become visible to the kernel, then connections
        // starved of buffers are re-armed.
        if (g_bufs_to_advance > 0) {
            io_uring_buf_ring_advance(g_br, static_cast<int>(g_bufs_to_advance));
            g_free_bufs += g_bufs_to_advance;
            g_bufs_to_advance = 0;
        }
        while (!g_starved.empty() && g_free_bufs > 0) {
            const int fd = g_starved.back();
            g_starved.pop_back();
            Conn& c = g_conns[static_cast<std::size_t>(fd)];
            if (!c.waiting_buffers) continue;  // closed meanwhile (a stale entry)
            c.waiting_buffers = false;
            arm_recv(fd, c);
        }
        int r = io_uring_submit_and_wait(&g_ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) die("io_uring_submit_and_wait", -r);
        unsigned head;
        unsigned seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&g_ring, head, cqe) {
            ++seen;
            switch (kind_of(cqe->user_data)) {
                case kAccept: on_accept(cqe); break;
                case kRecv: on_recv(cqe); break;
                case kSend: on_send(cqe); break;
                case kAcceptRetry: arm_accept(); break;
            }
        }
        io_uring_cq_advance(&g_ring, seen);
    }
}
