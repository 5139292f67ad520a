// AsyncFile and asyncio::os (files.hpp): real files in a temporary directory, checked against what
// Python's open() and os functions do (texts, positions, modes), cancellation at each suspension
// point (waiting for the file's turn, and with the system call running), nothing leaked.
#include "asyncio/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "asyncio/event_loop.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/socket.hpp"
#include "asyncio/streams.hpp"
#include "asyncio/task.hpp"
#include "asyncio/thread_pool.hpp"
#include "gtest/gtest.h"
#include "test_support.hpp"

namespace {

using asyncio::AsyncFile;
using asyncio::Coroutine;
using asyncio_test::TempDir;
using namespace std::chrono_literals;

class AFile : public asyncio_test::LeakChecked {};
class AsyncOs : public asyncio_test::LeakChecked {};

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void put(const std::string& path, const std::string& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << data;
}

std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
    return s;
}

/// The message of the exception of type E that f throws ("" if none).
template <class E, class F>
std::string message_of(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "";
}

TEST_F(AFile, WritesThenReadsBackByLinesBlocksAndAll) {
    TempDir dir;
    const std::string path = dir.file("lines.txt");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile w = co_await asyncio::open_file(path, "w");
        EXPECT_TRUE(w.writable());
        EXPECT_FALSE(w.readable());
        EXPECT_EQ(co_await w.write("first\n"), 6u);
        co_await w.write("second\n");
        co_await w.write("no newline at the end");
        EXPECT_EQ(w.tell(), 34u);
        co_await w.close();
        EXPECT_TRUE(w.closed());
        EXPECT_EQ(w.fileno(), -1);

        AsyncFile r = co_await asyncio::open_file(path);
        EXPECT_EQ(r.name(), path);
        EXPECT_EQ(r.mode(), "r");
        EXPECT_EQ(co_await r.readline(), "first\n");
        EXPECT_EQ(r.tell(), 6u);
        EXPECT_EQ(co_await r.read(3), "sec");
        std::vector<std::string> rest;
        while (auto line = co_await r.anext()) rest.push_back(*line);
        EXPECT_EQ(rest, (std::vector<std::string>{"ond\n", "no newline at the end"}));
        EXPECT_EQ(co_await r.readline(), "");
        EXPECT_EQ(co_await r.read(), "");
        co_await r.seek(0);
        EXPECT_EQ(co_await r.read(), "first\nsecond\nno newline at the end");
        co_await r.close();
        co_await r.close();  // idempotent
    }(path));
    EXPECT_EQ(slurp(path), "first\nsecond\nno newline at the end");
}

TEST_F(AFile, ReadOfNReturnsNBytesUnlessTheFileEndsAndReadAllTakesTheRest) {
    TempDir dir;
    const std::string path = dir.file("big.bin");
    const std::string data = pattern(3 * 1024 * 1024 + 17);  // several fetches of 64 KiB and more
    put(path, data);
    asyncio::run([](std::string path, const std::string& data) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path, "rb");
        const std::string a = co_await f.read(100'000);
        EXPECT_EQ(a, data.substr(0, 100'000));
        const std::string b = co_await f.read(1'000'000);
        EXPECT_EQ(b, data.substr(100'000, 1'000'000));
        EXPECT_EQ(f.tell(), 1'100'000u);
        const std::string c = co_await f.read();
        EXPECT_EQ(c.size(), data.size() - 1'100'000);
        EXPECT_TRUE(c == data.substr(1'100'000));
        EXPECT_EQ(co_await f.read(10), "");
        EXPECT_EQ(co_await f.pread(5, 7), data.substr(7, 5));  // does not move the position
        EXPECT_EQ(f.tell(), data.size());
        EXPECT_EQ(co_await f.pread(100, data.size() - 3), data.substr(data.size() - 3));
        co_await f.close();
    }(path, data));
}

TEST_F(AFile, AFileThatGrowsAfterItIsOpenedIsReadToItsNewEnd) {
    // Reads fetch what the file held at open (plus one byte) rather than a 64 KiB block: the
    // size seen at open is a hint, never a limit. (Python's buffered reader reads on too.)
    TempDir dir;
    const std::string path = dir.file("grows.txt");
    put(path, "first line\n");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path, "rb");
        EXPECT_EQ(co_await f.readline(), "first line\n");
        {
            std::ofstream out(path, std::ios::binary | std::ios::app);
            out << "second line\n" << pattern(200'000);
        }
        EXPECT_EQ(co_await f.readline(), "second line\n");
        const std::string rest = co_await f.read(300'000);
        EXPECT_EQ(rest.size(), 200'000u);
        EXPECT_TRUE(rest == pattern(200'000));
        EXPECT_EQ(co_await f.read(1), "");
        co_await f.close();
    }(path));
}

TEST_F(AFile, ModesFollowPythonsOpen) {
    TempDir dir;
    const std::string path = dir.file("modes.txt");
    asyncio::run([](std::string path) -> Coroutine<> {
        // Python 3.13's texts.
        const std::pair<const char*, const char*> bad[] = {
            {"q", "invalid mode: 'q'"},
            {"rr", "invalid mode: 'rr'"},
            {"r++", "invalid mode: 'r++'"},
            {"rw", "must have exactly one of create/read/write/append mode"},
            {"rbt", "can't have text and binary mode at once"},
            {"", "Must have exactly one of create/read/write/append mode and at most one plus"},
            {"b", "Must have exactly one of create/read/write/append mode and at most one plus"},
        };
        for (const auto& [mode, text] : bad) {
            std::string got;
            try {
                (void)co_await asyncio::open_file(path, mode);
            } catch (const asyncio::ValueError& e) {
                got = e.what();
            }
            EXPECT_EQ(got, text) << "mode '" << mode << "'";
        }
        // "r" of a missing file: ENOENT with the path; nothing was created.
        try {
            (void)co_await asyncio::open_file(path);
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), ENOENT);
            EXPECT_NE(std::string(e.what()).find("'" + path + "'"), std::string::npos) << e.what();
        }
        EXPECT_NE(::access(path.c_str(), F_OK), 0);

        AsyncFile x = co_await asyncio::open_file(path, "x");
        co_await x.write("abc");
        co_await x.close();
        try {
            (void)co_await asyncio::open_file(path, "x");
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EEXIST);
        }
        // "w" truncates; "a" starts at the end and always writes there, even after a seek.
        AsyncFile a = co_await asyncio::open_file(path, "a");
        EXPECT_EQ(a.tell(), 3u);
        co_await a.write("def");
        co_await a.seek(0);
        co_await a.write("ghi");
        co_await a.close();
        EXPECT_EQ(slurp(path), "abcdefghi");
        // "a+" reads too.
        AsyncFile ap = co_await asyncio::open_file(path, "a+b");
        co_await ap.seek(0);
        EXPECT_EQ(co_await ap.read(3), "abc");
        co_await ap.close();
        AsyncFile w = co_await asyncio::open_file(path, "w");
        EXPECT_EQ(w.tell(), 0u);
        co_await w.close();
        EXPECT_EQ(slurp(path), "");
        // A directory.
        const std::string d = path.substr(0, path.rfind('/'));
        try {
            (void)co_await asyncio::open_file(d);
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EISDIR);
        }
    }(path));
}

TEST_F(AFile, WrongDirectionAndClosedFilesRaisePythonsErrors) {
    TempDir dir;
    const std::string path = dir.file("dir.txt");
    put(path, "content");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile r = co_await asyncio::open_file(path, "r");
        std::string msg;
        try {
            co_await r.write("x");
        } catch (const asyncio::UnsupportedOperation& e) {
            msg = e.what();
        }
        EXPECT_EQ(msg, "not writable");
        AsyncFile w = co_await asyncio::open_file(path, "a");
        msg.clear();
        try {
            (void)co_await w.read();
        } catch (const asyncio::UnsupportedOperation& e) {
            msg = e.what();
        }
        EXPECT_EQ(msg, "not readable");
        co_await w.close();
        co_await r.close();
        msg.clear();
        try {
            (void)co_await r.read();
        } catch (const asyncio::ValueError& e) {
            msg = e.what();
        }
        EXPECT_EQ(msg, "I/O operation on closed file.");
        EXPECT_EQ(message_of<asyncio::ValueError>([&] { (void)r.tell(); }), "I/O operation on closed file.");
        AsyncFile none;
        EXPECT_TRUE(none.closed());
        EXPECT_EQ(message_of<asyncio::ValueError>([&] { (void)none.tell(); }), "I/O operation on closed file.");
        co_await none.close();  // nothing to close
    }(path));
}

TEST_F(AFile, SeekTellAndReadWriteInterleaveAsInPython) {
    // Python's binary files (open(path, "r+b")): read(5) then write(b"XY") writes at 5; tell()
    // counts buffered writes; seeks from the end; negative positions.
    TempDir dir;
    const std::string path = dir.file("rw.txt");
    put(path, "0123456789");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path, "r+");
        EXPECT_EQ(co_await f.read(5), "01234");
        co_await f.write("XY");
        EXPECT_EQ(f.tell(), 7u);
        EXPECT_EQ(co_await f.read(2), "78");  // the write is flushed first, then reading goes on
        EXPECT_EQ(co_await f.seek(-3, SEEK_END), 7u);
        EXPECT_EQ(co_await f.read(), "789");
        EXPECT_EQ(co_await f.seek(-2, SEEK_CUR), 8u);
        EXPECT_EQ(co_await f.read(1), "8");
        // Python's binary files: OSError EINVAL for a negative position, whence passed to lseek.
        for (const auto& [off, whence] : {std::pair<int, int>{-1, SEEK_SET}, {-100, SEEK_CUR}, {-100, SEEK_END}, {0, 99}}) {
            try {
                (void)co_await f.seek(off, whence);
                ADD_FAILURE() << "no error for " << off << ", " << whence;
            } catch (const std::system_error& e) {
                EXPECT_EQ(e.code().value(), EINVAL);
            }
        }
        EXPECT_EQ(co_await f.seek(0, SEEK_DATA), 0u);
        EXPECT_EQ(f.tell(), 0u);
        EXPECT_EQ(co_await f.seek(12), 12u);  // past the end: a write there leaves a hole
        co_await f.write("!");
        co_await f.flush();
        co_await f.close();
    }(path));
    EXPECT_EQ(slurp(path), std::string("01234XY789") + std::string(2, '\0') + "!");
}

TEST_F(AFile, BufferedWritesReachTheFileAtFlushAndPwriteDoesNotMoveThePosition) {
    TempDir dir;
    const std::string path = dir.file("flush.txt");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path, "w+");
        co_await f.write("hello");
        EXPECT_EQ(slurp(path), "");  // buffered
        co_await f.flush();
        EXPECT_EQ(slurp(path), "hello");
        EXPECT_EQ(co_await f.pwrite("J", 0), 1u);
        EXPECT_EQ(f.tell(), 5u);
        co_await f.write(" world");
        co_await f.fsync();
        EXPECT_EQ(slurp(path), "Jello world");
        co_await f.truncate(4);
        EXPECT_EQ(f.tell(), 11u);  // truncate does not move the position
        EXPECT_EQ(slurp(path), "Jell");
        co_await f.seek(2);
        co_await f.truncate();  // at the position
        EXPECT_EQ(slurp(path), "Je");
        // A large write goes out at once.
        const std::string big = pattern(200'000);
        co_await f.seek(0);
        co_await f.write(big);
        EXPECT_EQ(slurp(path), big);
        co_await f.close();
    }(path));
}

TEST_F(AFile, TheDestructorWritesOutWhatIsBufferedAndClosesTheFd) {
    TempDir dir;
    const std::string path = dir.file("dtor.txt");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path, "w");
        co_await f.write("kept");
        AsyncFile moved = std::move(f);
        EXPECT_TRUE(f.closed());  // NOLINT: moved-from is an empty file
        EXPECT_FALSE(moved.closed());
    }(path));
    EXPECT_EQ(slurp(path), "kept");  // the fixture checks the fd is closed
}

TEST_F(AFile, TasksWritingOneFileTakeTurnsAndNoLineIsTorn) {
    TempDir dir;
    const std::string path = dir.file("shared.log");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path, "w");
        std::vector<asyncio::Task<>> tasks;
        for (int t = 0; t < 10; ++t) {
            tasks.push_back(asyncio::create_task([](AsyncFile& f, int t) -> Coroutine<> {
                for (int i = 0; i < 300; ++i) {
                    // 300 lines of ~1 KiB per task: many flushes while other tasks write.
                    co_await f.write("task " + std::to_string(t) + " line " + std::to_string(i) + " " +
                                     std::string(1000, static_cast<char>('a' + t)) + "\n");
                }
            }(f, t)));
        }
        co_await asyncio::gather(std::move(tasks));
        co_await f.close();
    }(path));
    std::istringstream in(slurp(path));
    std::string line;
    std::vector<int> next(10, 0);
    int lines = 0;
    while (std::getline(in, line)) {
        int t = -1, i = -1;
        ASSERT_EQ(std::sscanf(line.c_str(), "task %d line %d", &t, &i), 2) << line.substr(0, 40);
        ASSERT_TRUE(t >= 0 && t < 10);
        EXPECT_EQ(i, next[t]++) << "task " << t << "'s lines out of order";
        EXPECT_EQ(line.substr(line.size() - 1000), std::string(1000, static_cast<char>('a' + t)));
        ++lines;
    }
    EXPECT_EQ(lines, 3000);
}

TEST_F(AFile, CancelledWhileTheReadRunsTheBytesReadStayAndCancellationComesAtTheNextSuspension) {
    TempDir dir;
    const std::string path = dir.file("cancel.txt");
    put(path, pattern(300'000));
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path);
        std::string got;
        bool reached_next = false;
        asyncio::Task<> t = asyncio::create_task([](AsyncFile& f, std::string& got, bool& reached) -> Coroutine<> {
            got = co_await f.read(10);  // suspended on the thread's pread when cancelled
            reached = true;
            co_await asyncio::sleep(0s);  // the cancellation is raised here
            ADD_FAILURE() << "not cancelled";
        }(f, got, reached_next));
        co_await asyncio::sleep(0s);  // t has submitted the read and waits for it
        EXPECT_TRUE(t.cancel());
        try {
            co_await t;
        } catch (const asyncio::CancelledError&) {
        }
        EXPECT_TRUE(t.cancelled());
        EXPECT_TRUE(reached_next);
        EXPECT_EQ(got, pattern(10));
        EXPECT_EQ(f.tell(), 10u);
        // The rest of the block it fetched is still buffered: nothing lost, nothing read twice.
        EXPECT_EQ(co_await f.read(5), pattern(15).substr(10));
        co_await f.close();
    }(path));
}

TEST_F(AFile, CancelledWhileWaitingForItsTurnItDoesNothing) {
    TempDir dir;
    const std::string path = dir.file("turn.txt");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path, "w+");
        // A flushes 100 KiB (on the thread); B waits for its turn and is cancelled there.
        asyncio::Task<std::size_t> a = asyncio::create_task(f.write(pattern(100'000)));
        asyncio::Task<std::size_t> b = asyncio::create_task(f.write("never"));
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(b.cancel());
        EXPECT_EQ(co_await a, 100'000u);
        try {
            (void)co_await b;
            ADD_FAILURE() << "b was not cancelled";
        } catch (const asyncio::CancelledError&) {
        }
        co_await f.close();
    }(path));
    EXPECT_EQ(slurp(path), pattern(100'000));
}

TEST_F(AFile, CancelledWhileItsFlushRunsTheBytesAreWritten) {
    TempDir dir;
    const std::string path = dir.file("flushcancel.txt");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path, "w");
        asyncio::Task<std::size_t> t = asyncio::create_task(f.write(pattern(500'000)));
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(t.cancel());
        // Its write finished and was delivered; the cancellation then had no suspension point
        // left in it, so the task ends cancelled (as asyncio's task that returns while a
        // cancellation is pending).
        try {
            (void)co_await t;
        } catch (const asyncio::CancelledError&) {
        }
        EXPECT_EQ(f.tell(), 500'000u);
        co_await f.close();
    }(path));
    EXPECT_EQ(slurp(path), pattern(500'000));
}

TEST_F(AFile, ACancellationPendingBeforeTheCallStartsRunsNothing) {
    TempDir dir;
    const std::string path = dir.file("pending.txt");
    put(path, "abc");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path);
        asyncio::Task<std::string> t = asyncio::create_task([](AsyncFile& f) -> Coroutine<std::string> {
            asyncio::current_task().cancel();  // pending when read() starts its call
            co_return co_await f.read(1);
        }(f));
        try {
            (void)co_await t;
            ADD_FAILURE() << "not cancelled";
        } catch (const asyncio::CancelledError&) {
        }
        EXPECT_EQ(f.tell(), 0u);
        EXPECT_EQ(co_await f.read(), "abc");
        co_await f.close();
    }(path));
}

TEST_F(AFile, OnIoUringFileCallsRunInTheKernelAndNeedNoThread) {
    // With a default executor that refuses every job, file calls work on io_uring (the kernel
    // performs them) and raise the executor's RuntimeError on epoll (they run on its threads).
    TempDir dir;
    const std::string path = dir.file("native.txt");
    const std::string sub = dir.file("sub");
    asyncio::run([](std::string path, std::string sub) -> Coroutine<> {
        asyncio::EventLoop& loop = asyncio::get_running_loop();
        auto refusing = std::make_shared<asyncio::ThreadPoolExecutor>(1);
        refusing->shutdown();
        loop.set_default_executor(refusing);
        const bool native = std::string_view(loop.backend_name()) == "io_uring";
        try {
            AsyncFile f = co_await asyncio::open_file(path, "w+");
            co_await f.write(pattern(200'000));  // 64 KiB flushes, in the kernel
            co_await f.fsync();
            co_await f.seek(0);
            EXPECT_EQ(co_await f.read(), pattern(200'000));
            EXPECT_EQ(co_await f.pread(5, 1000), pattern(1005).substr(1000));
            EXPECT_EQ(co_await f.pwrite("xyz", 0), 3u);
            co_await f.close();
            EXPECT_EQ((co_await asyncio::os::stat(path)).st_size, 200'000u);
            co_await asyncio::os::mkdir(sub);
            EXPECT_TRUE((co_await asyncio::os::stat(sub)).is_dir());
            co_await asyncio::os::rename(path, sub + "/moved");
            co_await asyncio::os::unlink(sub + "/moved");
            co_await asyncio::os::rmdir(sub);
            try {
                (void)co_await asyncio::os::stat(sub);
                ADD_FAILURE() << "stat of a removed directory";
            } catch (const std::system_error& e) {
                EXPECT_EQ(e.code().value(), ENOENT);
                EXPECT_EQ(std::string(e.what()), "stat '" + sub + "': No such file or directory");
            }
            try {
                (void)co_await asyncio::open_file(sub + "/none");
                ADD_FAILURE() << "opened a missing file";
            } catch (const std::system_error& e) {
                EXPECT_EQ(e.code().value(), ENOENT);
            }
            EXPECT_TRUE(native) << "file calls ran without the executor on " << loop.backend_name();
        } catch (const asyncio::RuntimeError&) {
            EXPECT_FALSE(native) << "a file call used the executor on io_uring";
        }
    }(path, sub));
}

TEST_F(AFile, CancelledWhileItsOpenBlocksOnAFifoItRaisesAndLeaksNoFd) {
    // open(2) of a FIFO blocks until a writer comes, on every backend (io_uring's own openat
    // would not wait: a FIFO is opened on the executor). The thread stays in open(2) until a
    // writer opens the FIFO; the fd it then gets is closed: CancelledError, no fd left open.
    TempDir dir;
    const std::string path = dir.file("fifo");
    ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
    asyncio::run([](std::string path) -> Coroutine<> {
        asyncio::Task<AsyncFile> t = asyncio::create_task(asyncio::open_file(path, "r"));
        co_await asyncio::sleep(50ms);  // the open is in the kernel (or on the thread), blocked
        EXPECT_FALSE(t.done());
        EXPECT_TRUE(t.cancel());
        co_await asyncio::sleep(0s);
        EXPECT_FALSE(t.done());  // the call runs on: it cannot be abandoned
        const int w = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);  // releases it
        EXPECT_GE(w, 0);
        try {
            (void)co_await t;
            ADD_FAILURE() << "not cancelled";
        } catch (const asyncio::CancelledError&) {
        }
        if (w >= 0) ::close(w);
    }(path));
}

TEST_F(AFile, RegressionAFrameDestroyedWithAKernelReadInFlightLeavesNothingBehind) {
    // The loop closes while a task waits for a read (in the kernel on io_uring, on a thread on
    // epoll): the frame holding the buffer is destroyed only after the kernel is done with it.
    TempDir dir;
    const std::string path = dir.file("inflight.txt");
    put(path, pattern(4'000'000));
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path);
        std::vector<asyncio::Task<>> readers;
        for (int i = 0; i < 8; ++i)
            readers.push_back(
                asyncio::create_task([](AsyncFile& f) -> Coroutine<> { (void)co_await f.pread(1'000'000, 0); }(f)));
        co_await asyncio::sleep(0s);
        // Returns with the tasks still waiting: run() cancels them and closes the loop.
    }(path));
}

// ---- sendfile ----

/// Reads from r until EOF.
Coroutine<std::string> read_all(asyncio::Socket& r) {
    std::string got;
    for (;;) {
        std::string chunk = co_await asyncio::sock_recv(r, 1 << 16);
        if (chunk.empty()) break;
        got += chunk;
    }
    co_return got;
}

TEST_F(AFile, SockSendfileSendsASliceWithTheKernelAndMovesThePosition) {
    TempDir dir;
    const std::string path = dir.file("send.bin");
    const std::string data = pattern(3 * 1024 * 1024);  // more than a socket buffer: it waits
    put(path, data);
    asyncio::run([](std::string path, const std::string& data) -> Coroutine<> {
        auto pair = asyncio::socketpair();
        AsyncFile f = co_await asyncio::open_file(path, "rb");
        asyncio::Task<std::string> reader = asyncio::create_task(read_all(pair.second));
        const std::size_t sent = co_await asyncio::sock_sendfile(pair.first, f, 100, 2'000'000);
        EXPECT_EQ(sent, 2'000'000u);
        EXPECT_EQ(f.tell(), 2'000'100u);  // Python: offset + sent
        // To the end of the file, from the default offset 0.
        EXPECT_EQ(co_await asyncio::sock_sendfile(pair.first, f), data.size());
        EXPECT_EQ(f.tell(), data.size());
        pair.first.shutdown(SHUT_WR);
        const std::string got = co_await reader;
        EXPECT_EQ(got.size(), 2'000'000 + data.size());
        EXPECT_TRUE(got == data.substr(100, 2'000'000) + data);
        co_await f.close();
    }(path, data));
}

TEST_F(AFile, SendfileOnAStreamSendsWhatWasWrittenFirstAndRefusesWritesMeanwhile) {
    TempDir dir;
    const std::string path = dir.file("stream.bin");
    const std::string data = pattern(4 * 1024 * 1024);
    put(path, data);
    asyncio::run([](std::string path, const std::string& data) -> Coroutine<> {
        auto [a, b] = asyncio::socketpair();
        auto [r, w] = asyncio::open_connection(std::move(b));
        (void)r;
        asyncio::StreamWriter writer = w;
        AsyncFile f = co_await asyncio::open_file(path);
        writer.write("header:");
        asyncio::Task<std::size_t> t = asyncio::create_task(asyncio::sendfile(writer, f));
        co_await asyncio::sleep(0s);  // nobody reads yet: it waits for the socket
        CO_ASSERT(!t.done());
        std::string msg;
        try {
            writer.write("in the middle");
        } catch (const asyncio::RuntimeError& e) {
            msg = e.what();
        }
        EXPECT_EQ(msg, "Cannot call write() while sendfile() is in progress");
        asyncio::Task<std::string> reader = asyncio::create_task(read_all(a));
        EXPECT_EQ(co_await t, data.size());
        writer.write(":trailer");  // allowed again
        writer.close();
        co_await writer.wait_closed();
        const std::string got = co_await reader;
        EXPECT_EQ(got.size(), data.size() + 15);
        EXPECT_TRUE(got == "header:" + data + ":trailer");
        co_await f.close();
    }(path, data));
}

TEST_F(AFile, SendfileFallsBackToReadingBlocksWhereTheKernelRefusesAndRaisesWithoutFallback) {
    // sendfile(2) from /proc/self/status is EINVAL (a seq_file without splice): Python's fallback
    // reads the file and sends it.
    asyncio::run([]() -> Coroutine<> {
        auto pair = asyncio::socketpair();
        AsyncFile f = co_await asyncio::open_file("/proc/self/status");
        try {
            (void)co_await asyncio::sock_sendfile(pair.first, f, 0, std::nullopt, false);
            ADD_FAILURE() << "no error";
        } catch (const asyncio::SendfileNotAvailableError&) {
        }
        EXPECT_EQ(f.tell(), 0u);
        asyncio::Task<std::string> reader = asyncio::create_task(read_all(pair.second));
        const std::size_t sent = co_await asyncio::sock_sendfile(pair.first, f);
        pair.first.shutdown(SHUT_WR);
        const std::string got = co_await reader;
        EXPECT_GT(sent, 0u);
        EXPECT_EQ(got.size(), sent);
        EXPECT_EQ(got.substr(0, 5), "Name:");
        EXPECT_EQ(f.tell(), sent);
        co_await f.close();
    }());
}

TEST_F(AFile, RegressionSendfileToAClosedPeerIsEpipeNeverSigpipe) {
    // sendfile(2) has no MSG_NOSIGNAL: to a socket whose peer is gone it raised SIGPIPE, which
    // killed the program.
    TempDir dir;
    const std::string path = dir.file("epipe.bin");
    put(path, pattern(1 << 20));
    asyncio::run([](std::string path) -> Coroutine<> {
        auto pair = asyncio::socketpair();
        pair.second.close();
        AsyncFile f = co_await asyncio::open_file(path);
        try {
            (void)co_await asyncio::sock_sendfile(pair.first, f);
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EPIPE);
        }
        co_await f.close();
    }(path));
}

TEST_F(AFile, SendfileRejectsBadArgumentsWithPythonsTexts) {
    TempDir dir;
    const std::string path = dir.file("args.bin");
    put(path, "abc");
    asyncio::run([](std::string path) -> Coroutine<> {
        AsyncFile f = co_await asyncio::open_file(path);
        auto pair = asyncio::socketpair();
        std::string msg;
        try {
            (void)co_await asyncio::sock_sendfile(pair.first, f, 0, 0);
        } catch (const asyncio::ValueError& e) {
            msg = e.what();
        }
        EXPECT_EQ(msg, "count must be a positive integer (got 0)");
        asyncio::Socket udp(AF_INET, SOCK_DGRAM);
        msg.clear();
        try {
            (void)co_await asyncio::sock_sendfile(udp, f);
        } catch (const asyncio::ValueError& e) {
            msg = e.what();
        }
        EXPECT_EQ(msg, "only SOCK_STREAM type sockets are supported");
        auto [r, w] = asyncio::open_connection(std::move(pair.first));
        (void)r;
        w.close();
        msg.clear();
        try {
            (void)co_await asyncio::sendfile(w, f);
        } catch (const asyncio::RuntimeError& e) {
            msg = e.what();
        }
        EXPECT_EQ(msg, "Transport is closing");
        co_await w.wait_closed();
        co_await f.close();
    }(path));
}

TEST_F(AsyncOs, MakesListsStatsRenamesAndRemoves) {
    TempDir dir;
    const std::string sub = dir.file("sub");  // removed by the test (a directory)
    asyncio::run([](std::string sub) -> Coroutine<> {
        co_await asyncio::os::mkdir(sub);
        const asyncio::os::StatResult d = co_await asyncio::os::stat(sub);
        EXPECT_TRUE(d.is_dir());
        EXPECT_FALSE(d.is_file());
        for (const char* name : {"b.txt", "a.txt", "c.txt"}) {
            AsyncFile f = co_await asyncio::open_file(sub + "/" + name, "w");
            co_await f.write(std::string(name));
            co_await f.close();
        }
        std::vector<std::string> names = co_await asyncio::os::listdir(sub);
        std::sort(names.begin(), names.end());
        EXPECT_EQ(names, (std::vector<std::string>{"a.txt", "b.txt", "c.txt"}));
        const asyncio::os::StatResult s = co_await asyncio::os::stat(sub + "/a.txt");
        EXPECT_TRUE(s.is_file());
        EXPECT_EQ(s.st_size, 5u);
        EXPECT_GT(s.st_mtime_ns, 0);
        co_await asyncio::os::rename(sub + "/a.txt", sub + "/z.txt");
        names = co_await asyncio::os::listdir(sub);
        std::sort(names.begin(), names.end());
        EXPECT_EQ(names, (std::vector<std::string>{"b.txt", "c.txt", "z.txt"}));
        // Errors: errno and Python's way of naming the paths.
        try {
            co_await asyncio::os::rmdir(sub);
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), ENOTEMPTY);
        }
        try {
            co_await asyncio::os::rename(sub + "/missing", sub + "/x");
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), ENOENT);
            EXPECT_NE(std::string(e.what()).find("'" + sub + "/missing' -> '" + sub + "/x'"), std::string::npos)
                << e.what();
        }
        try {
            (void)co_await asyncio::os::listdir(sub + "/missing");
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), ENOENT);
        }
        try {
            (void)co_await asyncio::os::stat(sub + "/missing");
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), ENOENT);
        }
        for (const char* name : {"b.txt", "c.txt", "z.txt"}) co_await asyncio::os::unlink(sub + "/" + name);
        try {
            co_await asyncio::os::unlink(sub + "/z.txt");
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), ENOENT);
        }
        co_await asyncio::os::rmdir(sub);
        EXPECT_NE(::access(sub.c_str(), F_OK), 0);
    }(sub));
}

}  // namespace
