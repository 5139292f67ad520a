// connect_read_pipe / connect_write_pipe: real pipes, a FIFO and a pseudo-terminal under streams;
// EOF, write_eof, EPIPE without SIGPIPE, bad fds and regular files, cancel-safety, no leaks.
#include "asyncio/pipes.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <any>
#include <cerrno>
#include <chrono>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/debug.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "asyncio/timeout.hpp"
#include "stream_test_support.hpp"

namespace {

using asyncio::Coroutine;
using asyncio::StreamReader;
using asyncio::StreamWriter;
using asyncio::Task;
using stream_test::first_difference;
using stream_test::pattern;
using namespace std::chrono_literals;

class APipe : public asyncio_test::LeakChecked {};

/// FAIL() for the body of a Coroutine<void>.
#define CO_FAIL(msg)              \
    do {                          \
        ADD_FAILURE() << (msg);   \
        co_return;                \
    } while (false)

std::pair<int, int> make_pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    return {fds[0], fds[1]};
}

std::size_t registrations() { return asyncio::debug::io_registrations(asyncio::get_running_loop()); }

bool fd_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

Coroutine<std::string> read_all(StreamReader r) {
    std::string all;
    for (;;) {
        std::string part = co_await r.read(1 << 16);
        if (part.empty()) break;
        all += part;
    }
    co_return all;
}

TEST_F(APipe, CarriesEightMegabytesWithFlowControlThenEof) {
    const std::string data = pattern(8 << 20, 3);
    std::string got;
    asyncio::run([](const std::string& data, std::string& got) -> Coroutine<> {
        auto [rfd, wfd] = make_pipe();
        StreamReader r = asyncio::connect_read_pipe(rfd);
        StreamWriter w = asyncio::connect_write_pipe(wfd);
        CO_ASSERT(r.limit() == asyncio::kDefaultStreamLimit);
        CO_ASSERT(std::any_cast<int>(w.get_extra_info("pipe")) == wfd);
        CO_ASSERT(w.can_write_eof());
        Task<std::string> reader = asyncio::create_task(read_all(r));
        for (std::size_t off = 0; off < data.size(); off += 100'000) {
            w.write(std::string_view(data).substr(off, 100'000));
            co_await w.drain();
            CO_ASSERT(w.get_write_buffer_size() <= 64 * 1024);
        }
        w.close();
        co_await w.wait_closed();
        CO_ASSERT(!fd_open(wfd));
        got = co_await reader;
        CO_ASSERT(r.at_eof());
        CO_ASSERT(registrations() == 0);
    }(data, got));
    EXPECT_EQ(got.size(), data.size());
    EXPECT_EQ(first_difference(got, data), -1);
}

TEST_F(APipe, WriteEofFlushesThenClosesTheWriteEnd) {
    asyncio::run([]() -> Coroutine<> {
        auto [rfd, wfd] = make_pipe();
        StreamReader r = asyncio::connect_read_pipe(rfd);
        StreamWriter w = asyncio::connect_write_pipe(wfd);
        const std::string big = pattern(1 << 20, 4);  // more than the pipe holds: some is buffered
        w.write(big);
        CO_ASSERT(w.get_write_buffer_size() > 0);
        w.write_eof();
        const std::string got = co_await read_all(r);  // EOF comes after every byte
        CO_ASSERT(first_difference(got, big) == -1);
        CO_ASSERT(!fd_open(wfd));
        EXPECT_THROW(w.write("more"), asyncio::RuntimeError);
    }());
}

TEST_F(APipe, LinesFromAFifo) {
    asyncio_test::TempDir dir;
    const std::string path = dir.file("fifo");
    ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
    asyncio::run([](const std::string& path) -> Coroutine<> {
        const int rfd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);  // (no writer yet: would block)
        const int wfd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        CO_ASSERT(rfd >= 0 && wfd >= 0);
        StreamReader r = asyncio::connect_read_pipe(rfd);
        StreamWriter w = asyncio::connect_write_pipe(wfd);
        auto produce = [](StreamWriter w) -> Coroutine<> {
            for (int i = 0; i < 1000; ++i) {
                w.write("line " + std::to_string(i) + "\n");
                if (i % 100 == 0) co_await asyncio::sleep(0s);
            }
            w.close();
            co_await w.wait_closed();
        };
        auto consume = [](StreamReader r) -> Coroutine<int> {
            int n = 0;
            for (;;) {
                const std::string line = co_await r.readline();
                if (line.empty()) break;
                EXPECT_EQ(line, "line " + std::to_string(n) + "\n");
                ++n;
            }
            co_return n;
        };
        auto [x, lines] = co_await asyncio::gather(produce(w), consume(r));
        (void)x;
        CO_ASSERT(lines == 1000);
    }(path));
}

TEST_F(APipe, WritingAfterTheReaderClosedIsEpipeNeverSigpipe) {
    // The test process would die of SIGPIPE if a write let it through.
    asyncio::run([]() -> Coroutine<> {
        auto [rfd, wfd] = make_pipe();
        ::close(rfd);
        StreamWriter w = asyncio::connect_write_pipe(wfd);
        try {
            w.write("x");
            CO_FAIL("write() to a pipe without a reader did not fail");
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code().value() == EPIPE);
        }
        EXPECT_THROW(co_await w.drain(), std::system_error);  // kept for the next calls
        sigset_t pending;
        sigpending(&pending);
        CO_ASSERT(!sigismember(&pending, SIGPIPE));  // taken back, not left pending
        w.close();
    }());
}

TEST_F(APipe, ReaderGoneWhileTheBufferFlushesFailsDrain) {
    asyncio::run([]() -> Coroutine<> {
        auto [rfd, wfd] = make_pipe();
        StreamWriter w = asyncio::connect_write_pipe(wfd);
        w.write(pattern(1 << 20, 5));  // fills the pipe; the rest waits in the buffer
        CO_ASSERT(w.get_write_buffer_size() > 0);
        co_await asyncio::sleep(0s);  // the flusher waits for room
        ::close(rfd);
        try {
            co_await w.drain();
            co_await w.wait_closed();
            CO_FAIL("no error after the reader went away");
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code().value() == EPIPE);
        }
        w.close();
    }());
}

TEST_F(APipe, ARegularFileOrAClosedFdIsRefusedAndNotTaken) {
    asyncio_test::TempDir dir;
    const std::string path = dir.file("plain");
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    asyncio::run([](int fd) -> Coroutine<> {
        try {
            (void)asyncio::connect_read_pipe(fd);
            CO_FAIL("a regular file was accepted");
        } catch (const asyncio::ValueError& e) {
            CO_ASSERT(std::string(e.what()) == "Pipe transport is for pipes/sockets only.");
        }
        try {
            (void)asyncio::connect_write_pipe(fd);
            CO_FAIL("a regular file was accepted");
        } catch (const asyncio::ValueError& e) {
            CO_ASSERT(std::string(e.what()) == "Pipe transport is only for pipes, sockets and character devices");
        }
        CO_ASSERT(fd_open(fd));  // still the caller's
        CO_ASSERT((::fcntl(fd, F_GETFL) & O_NONBLOCK) == 0);  // untouched
        try {
            (void)asyncio::connect_read_pipe(-1);
            CO_FAIL("fd -1 was accepted");
        } catch (const std::system_error& e) {
            CO_ASSERT(e.code().value() == EBADF);
        }
        EXPECT_THROW((void)asyncio::connect_read_pipe(fd, 0), asyncio::ValueError);
        co_return;
    }(fd));
    ::close(fd);
}

TEST_F(APipe, TimedOutReadlinesLoseNoBytes) {
    // A writer sends a line one byte per millisecond (virtual time); the reader's readline times
    // out every 0.3 ms and tries again: every byte arrives, exactly once, in order.
    asyncio::run(
        []() -> Coroutine<> {
            auto [rfd, wfd] = make_pipe();
            StreamReader r = asyncio::connect_read_pipe(rfd);
            StreamWriter w = asyncio::connect_write_pipe(wfd);
            const std::string text = "the quick brown fox jumps over the lazy dog\n";
            Task<> slow = asyncio::create_task([](StreamWriter w, std::string text) -> Coroutine<> {
                for (char c : text) {
                    w.write(std::string(1, c));
                    co_await asyncio::sleep(1ms);
                }
            }(w, text));
            int timeouts = 0;
            std::string line;
            for (;;) {
                try {
                    line = co_await asyncio::wait_for(r.readline(), 300us);
                    break;
                } catch (const asyncio::TimeoutError&) {
                    ++timeouts;
                }
            }
            co_await slow;
            CO_ASSERT(line == text);
            CO_ASSERT(timeouts > static_cast<int>(text.size()));
            CO_ASSERT(registrations() == 0);
        }(),
        asyncio_test::virtual_time());
}

TEST_F(APipe, LinesFromAPseudoTerminal) {
    // A tty (a character device) reads one line per read(2) in canonical mode, however much is
    // waiting: the transport must not take a short read as "drained".
    const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    ASSERT_GE(master, 0);
    ASSERT_EQ(::grantpt(master), 0);
    ASSERT_EQ(::unlockpt(master), 0);
    const int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    ASSERT_GE(slave, 0);
    termios t{};
    ASSERT_EQ(::tcgetattr(slave, &t), 0);
    t.c_lflag &= ~static_cast<tcflag_t>(ECHO);  // nobody reads the echo on the master side
    ASSERT_EQ(::tcsetattr(slave, TCSANOW, &t), 0);
    asyncio::run([](int master, int slave) -> Coroutine<> {
        StreamReader r = asyncio::connect_read_pipe(slave);
        StreamWriter w = asyncio::connect_write_pipe(master);
        // The reader waits first (so its fd is in the epoll set), then three lines come at once:
        // three read(2)s on the slave, with no new edge after the first.
        Task<std::string> first = asyncio::create_task(r.readline());
        co_await asyncio::sleep(0s);
        w.write("one\ntwo\nthree\n");
        co_await w.drain();
        CO_ASSERT(co_await first == "one\n");
        CO_ASSERT(co_await asyncio::wait_for(r.readline(), 5s) == "two\n");
        CO_ASSERT(co_await asyncio::wait_for(r.readline(), 5s) == "three\n");
        w.close();
        co_await w.wait_closed();
    }(master, slave));
}

TEST_F(APipe, ClosingAWaitingReaderEndsItsReadWithEof) {
    asyncio::run([]() -> Coroutine<> {
        auto [rfd, wfd] = make_pipe();
        StreamReader r = asyncio::connect_read_pipe(rfd);
        Task<std::string> t = asyncio::create_task(r.read(100));
        co_await asyncio::sleep(0s);
        CO_ASSERT(registrations() == 1);
        r = StreamReader();  // the last handle: the stream closes, the pending read sees EOF
        CO_ASSERT(co_await t == "");
        CO_ASSERT(!fd_open(rfd));
        CO_ASSERT(registrations() == 0);
        ::close(wfd);
    }());
}

/// Puts fd on fd 0 for the scope (the test binary's own stdin is put back after).
class StdinSwap {
public:
    explicit StdinSwap(int fd) : saved_(::fcntl(0, F_DUPFD_CLOEXEC, 3)) { ::dup2(fd, 0); }
    ~StdinSwap() {
        ::dup2(saved_, 0);
        ::close(saved_);
    }
    StdinSwap(const StdinSwap&) = delete;
    StdinSwap& operator=(const StdinSwap&) = delete;

private:
    int saved_;
};

TEST_F(APipe, StdinReaderReadsAPipedStdinWithoutMakingFdZeroNonBlocking) {
    auto [rfd, wfd] = make_pipe();
    {
        StdinSwap swap(rfd);
        ::close(rfd);
        asyncio::run([](int wfd) -> Coroutine<> {
            StreamReader in = asyncio::stdin_reader();
            StreamWriter w = asyncio::connect_write_pipe(wfd);
            Task<std::string> first = asyncio::create_task(in.readline());
            co_await asyncio::sleep(0s);
            CO_ASSERT(!first.done());  // waits without blocking the loop
            w.write("alpha\nbeta\n");
            CO_ASSERT(co_await first == "alpha\n");
            CO_ASSERT(co_await in.readline() == "beta\n");
            w.close();
            CO_ASSERT(co_await in.readline() == "");
            CO_ASSERT((::fcntl(0, F_GETFL) & O_NONBLOCK) == 0);  // fd 0's description untouched
        }(wfd));
    }
}

TEST_F(APipe, StdinReaderReadsARedirectedFileFromItsOffset) {
    asyncio_test::TempDir dir;
    const std::string path = dir.file("input.txt");
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    const std::string text = "skip\none\ntwo\nlast line without newline";
    ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ASSERT_EQ(::lseek(fd, 5, SEEK_SET), 5);  // as if "skip\n" had been read already
    {
        StdinSwap swap(fd);
        ::close(fd);
        asyncio::run([]() -> Coroutine<> {
            StreamReader in = asyncio::stdin_reader();
            std::vector<std::string> lines;
            while (auto line = co_await in.anext()) lines.push_back(*line);
            CO_ASSERT((lines == std::vector<std::string>{"one\n", "two\n", "last line without newline"}));
            CO_ASSERT(registrations() == 0);
        }());
    }
}

}  // namespace
