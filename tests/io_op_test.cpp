// The operation kinds of asyncio/detail/io_op.hpp that have no Python-named facade, through the
// detail API every facade uses (io_submit / io_cancel): readv, writev, recvmsg, sendmsg, each
// completing at once and after a wait. CTest runs this binary on both backends (the _io_uring
// twin): on io_uring the waiting ones are the kinds' own requests (IORING_OP_READV, RECVMSG,
// SENDMSG; writev waits with a POLL_ADD), on epoll the calls after readiness. Also the stream
// flusher's gathered send (sendmsg on a socket where sends are tried first, i.e. epoll; writev
// on a pipe) through the public streams API.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/detail/io_op.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/future.hpp"
#include "asyncio/pipes.hpp"
#include "asyncio/run.hpp"
#include "asyncio/socket.hpp"
#include "asyncio/streams.hpp"
#include "asyncio/task.hpp"
#include "test_support.hpp"

namespace {

namespace det = asyncio::detail;
using asyncio::Coroutine;
using asyncio::Task;
using asyncio_test::yields;

class IoKinds : public asyncio_test::LeakChecked {};

/// An IoOp whose completion sets a future the test awaits.
struct Op : det::IoOp {
    asyncio::Future<void> done;
    static void on_complete(void* p) { static_cast<Op*>(static_cast<det::IoOp*>(p))->done.set_result(); }
};

/// Submits op and waits for its result. `at_once` says whether it completed in io_submit.
Coroutine<std::int64_t> perform(Op& op, bool* at_once = nullptr) {
    asyncio::EventLoop& loop = asyncio::get_running_loop();
    op.done = loop.create_future<void>();
    op.complete = &Op::on_complete;
    const bool now = det::io_submit(loop, op, /*coop=*/false);
    if (at_once != nullptr) *at_once = now;
    if (!now) co_await op.done;
    co_return op.result;
}

/// A non-blocking pipe the loop knows nothing about yet (as PipeTransport makes it).
struct Pipe {
    int r = -1;
    int w = -1;
    Pipe() {
        int fds[2];
        if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
        r = fds[0];
        w = fds[1];
        det::io_forget_fd(r, false);
        det::io_forget_fd(w, false);
    }
    static void close_fd(int& fd) {
        if (fd < 0) return;
        det::io_forget_fd(fd, true);
        ::close(fd);
        fd = -1;
    }
    ~Pipe() {
        close_fd(r);
        close_fd(w);
    }
};

std::string drain(int fd) {
    std::string out;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

TEST_F(IoKinds, ReadvScattersOneReadOverSeveralBuffers) {
    asyncio::run([]() -> Coroutine<> {
        Pipe p;
        char a[5] = {};
        char b[7] = {};
        iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
        // At once: the data is there.
        CO_ASSERT(::write(p.w, "hello, world", 12) == 12);
        Op op;
        op.kind = det::IoKind::readv;
        op.fd = p.r;
        op.buf = iov;
        op.iovcnt = 2;
        op.len = sizeof a + sizeof b;
        bool at_once = false;
        EXPECT_EQ(co_await perform(op, &at_once), 12);
        EXPECT_TRUE(at_once);
        EXPECT_EQ(std::string(a, 5), "hello");
        EXPECT_EQ(std::string(b, 7), ", world");
        // After a wait: nothing to read yet.
        Op later;
        later.kind = det::IoKind::readv;
        later.fd = p.r;
        later.buf = iov;
        later.iovcnt = 2;
        later.len = sizeof a + sizeof b;
        Task<std::int64_t> t = asyncio::create_task(perform(later, &at_once));
        co_await yields(3);
        EXPECT_FALSE(at_once);
        EXPECT_EQ(later.state, det::IoState::pending);
        CO_ASSERT(::write(p.w, "scattered", 9) == 9);
        EXPECT_EQ(co_await t, 9);
        EXPECT_EQ(std::string(a, 5), "scatt");
        EXPECT_EQ(std::string(b, 4), "ered");
        // EOF: 0.
        Pipe::close_fd(p.w);
        Op eof;
        eof.kind = det::IoKind::readv;
        eof.fd = p.r;
        eof.buf = iov;
        eof.iovcnt = 2;
        eof.len = sizeof a + sizeof b;
        EXPECT_EQ(co_await perform(eof), 0);
    }());
}

TEST_F(IoKinds, WritevGathersWaitsForRoomAndReportsEpipe) {
    asyncio::run([]() -> Coroutine<> {
        Pipe p;
        std::string one = "gathered ", two = "in ", three = "order";
        iovec iov[3] = {{one.data(), one.size()}, {two.data(), two.size()}, {three.data(), three.size()}};
        const std::size_t total = one.size() + two.size() + three.size();
        Op op;
        op.kind = det::IoKind::writev;
        op.fd = p.w;
        op.buf = iov;
        op.iovcnt = 3;
        op.len = total;
        EXPECT_EQ(co_await perform(op), static_cast<std::int64_t>(total));
        EXPECT_EQ(drain(p.r), "gathered in order");
        // A full pipe: the writev waits until the reader makes room.
        const std::string filler(65536, 'f');
        std::size_t filled = 0;
        for (;;) {
            const ssize_t n = ::write(p.w, filler.data(), filler.size());
            if (n <= 0) break;
            filled += static_cast<std::size_t>(n);
        }
        Op later;
        later.kind = det::IoKind::writev;
        later.fd = p.w;
        later.buf = iov;
        later.iovcnt = 3;
        later.len = total;
        bool at_once = true;
        Task<std::int64_t> t = asyncio::create_task(perform(later, &at_once));
        co_await yields(3);
        EXPECT_FALSE(at_once);
        EXPECT_EQ(later.state, det::IoState::pending);
        std::string got = drain(p.r);
        EXPECT_EQ(got.size(), filled);
        EXPECT_EQ(co_await t, static_cast<std::int64_t>(total));
        EXPECT_EQ(drain(p.r), "gathered in order");
        // No reader: EPIPE, and no SIGPIPE kills the test.
        Pipe::close_fd(p.r);
        Op broken;
        broken.kind = det::IoKind::writev;
        broken.fd = p.w;
        broken.buf = iov;
        broken.iovcnt = 3;
        broken.len = total;
        EXPECT_EQ(co_await perform(broken), -EPIPE);
    }());
}

/// A recvmsg op over one data buffer and room for one SCM_RIGHTS fd.
struct RecvMsg {
    char data[16] = {};
    iovec iov{data, sizeof data};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    Op op;
    explicit RecvMsg(int fd) {
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        op.kind = det::IoKind::recvmsg;
        op.fd = fd;
        op.buf = &msg;
        op.len = sizeof data;
    }
    int passed_fd() const {
        for (const cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(const_cast<msghdr*>(&msg), const_cast<cmsghdr*>(c)))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
                return fd;
            }
        return -1;
    }
};

TEST_F(IoKinds, SendmsgAndRecvmsgPassAFileDescriptor) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        Pipe p;
        RecvMsg rx(b.fileno());
        bool at_once = true;
        Task<std::int64_t> t = asyncio::create_task(perform(rx.op, &at_once));
        co_await yields(3);
        EXPECT_FALSE(at_once);  // nothing sent yet: it waits (IORING_OP_RECVMSG on io_uring)
        // The pipe's read end, with one byte of data, through sendmsg.
        char byte = 'x';
        iovec iov{&byte, 1};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &p.r, sizeof p.r);
        Op tx;
        tx.kind = det::IoKind::sendmsg;
        tx.fd = a.fileno();
        tx.buf = &msg;
        tx.len = 1;
        EXPECT_EQ(co_await perform(tx), 1);
        EXPECT_EQ(co_await t, 1);
        EXPECT_EQ(rx.data[0], 'x');
        const int got = rx.passed_fd();
        CO_ASSERT(got >= 0);
        EXPECT_NE(got, p.r);
        CO_ASSERT(::write(p.w, "via the passed fd", 17) == 17);
        char buf[32] = {};
        EXPECT_EQ(::read(got, buf, sizeof buf), 17);
        EXPECT_EQ(std::string(buf, 17), "via the passed fd");
        ::close(got);
    }());
}

TEST_F(IoKinds, SendmsgWaitsForRoomAndGathers) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        // Fill a's send buffer (and b's receive buffer).
        const std::string filler(65536, 'f');
        std::size_t filled = 0;
        for (;;) {
            const ssize_t n = ::send(a.fileno(), filler.data(), filler.size(), MSG_DONTWAIT);
            if (n <= 0) break;
            filled += static_cast<std::size_t>(n);
        }
        std::string one = "after ", two = "the filler";
        iovec iov[2] = {{one.data(), one.size()}, {two.data(), two.size()}};
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = 2;
        Op tx;
        tx.kind = det::IoKind::sendmsg;
        tx.fd = a.fileno();
        tx.buf = &msg;
        tx.len = one.size() + two.size();
        bool at_once = true;
        Task<std::int64_t> t = asyncio::create_task(perform(tx, &at_once));
        co_await yields(3);
        EXPECT_FALSE(at_once);  // waits (IORING_OP_SENDMSG on io_uring, EPOLLOUT on epoll)
        EXPECT_EQ(tx.state, det::IoState::pending);
        std::string got;
        std::vector<char> buf(1 << 16);
        while (got.size() < filled + tx.len) {
            const ssize_t n = ::recv(b.fileno(), buf.data(), buf.size(), MSG_DONTWAIT);
            if (n > 0) {
                got.append(buf.data(), static_cast<std::size_t>(n));
            } else {
                co_await yields(1);  // (the sendmsg completes in a later iteration)
            }
        }
        EXPECT_EQ(co_await t, static_cast<std::int64_t>(tx.len));
        EXPECT_EQ(got.substr(filled), "after the filler");
    }());
}

TEST_F(IoKinds, RecvmsgReportsTheDatagramsSender) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::Socket rx(AF_INET, SOCK_DGRAM);
        asyncio::Socket tx(AF_INET, SOCK_DGRAM);
        rx.bind(asyncio::Address::ipv4("127.0.0.1", 0));
        tx.bind(asyncio::Address::ipv4("127.0.0.1", 0));
        sockaddr_in to{};
        socklen_t tolen = sizeof to;
        CO_ASSERT(::getsockname(rx.fileno(), reinterpret_cast<sockaddr*>(&to), &tolen) == 0);
        sockaddr_in from_expected{};
        socklen_t felen = sizeof from_expected;
        CO_ASSERT(::getsockname(tx.fileno(), reinterpret_cast<sockaddr*>(&from_expected), &felen) == 0);

        char data[64] = {};
        iovec iov{data, sizeof data};
        sockaddr_storage from{};
        msghdr msg{};
        msg.msg_name = &from;
        msg.msg_namelen = sizeof from;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        Op op;
        op.kind = det::IoKind::recvmsg;
        op.fd = rx.fileno();
        op.buf = &msg;
        op.len = sizeof data;
        Task<std::int64_t> t = asyncio::create_task(perform(op));
        co_await yields(3);
        EXPECT_EQ(op.state, det::IoState::pending);

        std::string a = "two ", b = "pieces";
        iovec out[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
        msghdr smsg{};
        smsg.msg_name = &to;
        smsg.msg_namelen = sizeof to;
        smsg.msg_iov = out;
        smsg.msg_iovlen = 2;
        Op send;
        send.kind = det::IoKind::sendmsg;
        send.fd = tx.fileno();
        send.buf = &smsg;
        send.len = a.size() + b.size();
        EXPECT_EQ(co_await perform(send), 10);
        EXPECT_EQ(co_await t, 10);
        EXPECT_EQ(std::string(data, 10), "two pieces");
        CO_ASSERT(msg.msg_namelen == sizeof(sockaddr_in));
        const auto& sin = reinterpret_cast<const sockaddr_in&>(from);
        EXPECT_EQ(sin.sin_port, from_expected.sin_port);
        EXPECT_EQ(sin.sin_addr.s_addr, from_expected.sin_addr.s_addr);
    }());
}

TEST_F(IoKinds, CancelledRecvmsgConsumesNothing) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        RecvMsg rx(b.fileno());
        asyncio::EventLoop& loop = asyncio::get_running_loop();
        rx.op.complete = &Op::on_complete;
        rx.op.done = loop.create_future<void>();
        CO_ASSERT(!det::io_submit(loop, rx.op, false));
        co_await yields(2);  // in the kernel's hands on io_uring
        EXPECT_TRUE(det::io_cancel(loop, rx.op));
        EXPECT_EQ(rx.op.state, det::IoState::cancelled);
        CO_ASSERT(::send(a.fileno(), "kept", 4, 0) == 4);
        co_await yields(2);
        EXPECT_FALSE(rx.op.done.done());
        char buf[8] = {};
        EXPECT_EQ(co_await asyncio::sock_recv_into(b, asyncio::MutableBuffer(buf, sizeof buf)), 4u);
        EXPECT_EQ(std::string(buf, 4), "kept");
    }());
}

/// Large chunks queued behind a reader that does not read: the flusher sends several per
/// operation (sendmsg on a socket), and the peer gets every byte in order.
std::string pattern_chunk(std::size_t i, std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t k = 0; k < n; ++k) s[k] = static_cast<char>('a' + (i * 7 + k) % 26);
    return s;
}

TEST_F(IoKinds, StreamFlusherGathersQueuedChunksInOrder) {
    asyncio::run([]() -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        auto [ra, wa] = asyncio::open_connection(std::move(a));
        auto [rb, wb] = asyncio::open_connection(std::move(b));
        std::string expected;
        for (std::size_t i = 0; i < 40; ++i) {
            std::string c = pattern_chunk(i, 70000 + i * 13);
            expected += c;
            wa.write(std::move(c));  // each its own chunk (above the coalescing size)
            if (i % 7 == 3) wa.write(asyncio::ConstBuffer("small", 5)), expected += "small";
        }
        co_await yields(2);
        const std::string got = co_await rb.readexactly(expected.size());
        EXPECT_TRUE(got == expected);
        co_await wa.drain();
        wa.close();
        co_await wa.wait_closed();
        wb.close();
        co_await wb.wait_closed();
    }());
}

TEST_F(IoKinds, PipeFlusherGathersQueuedChunksInOrder) {
    asyncio::run([]() -> Coroutine<> {
        int fds[2];
        CO_ASSERT(::pipe2(fds, O_CLOEXEC) == 0);
        asyncio::StreamReader reader = asyncio::connect_read_pipe(fds[0]);
        asyncio::StreamWriter writer = asyncio::connect_write_pipe(fds[1]);
        std::string expected;
        for (std::size_t i = 0; i < 24; ++i) {
            std::string c = pattern_chunk(i, 66000 + i * 31);
            expected += c;
            writer.write(std::move(c));
        }
        const std::string got = co_await reader.readexactly(expected.size());
        EXPECT_TRUE(got == expected);
        co_await writer.drain();
        writer.close();
        co_await writer.wait_closed();
        EXPECT_EQ(co_await reader.read(), "");
    }());
}

}  // namespace
