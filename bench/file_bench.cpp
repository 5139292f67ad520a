// file_bench: files through asyncio::open_file, one machine-readable line per case (run by
// bench/run_file_bench.sh, which also runs dd and the Python peer, bench/peers/file_bench.py).
//
//   file_bench --case read --path FILE --chunk BYTES
//       open_file(FILE, "rb"), read(chunk) until the end; checks the byte count against the size:
//       case=read impl=ours backend=B chunk=C bytes=N seconds=S mib_per_s=M
//   file_bench --case small --dir DIR --n N --size S [--impl open_file|to_thread]
//       N tasks started at once, task i reading DIR/fNNNNNN: open_file + read(S) + close
//       (open_file), or one to_thread() call doing open/read/close (to_thread, for comparison with
//       Python's asyncio.to_thread). Latency of a file = from its task's first step to its last;
//       every byte is checked against the pattern make-small wrote:
//       case=small impl=ours-open_file backend=B n=N size=S p50_us=X p99_us=Y max_us=Z total_s=T
//           files_per_s=R errors=E
//   file_bench --case make-small --dir DIR --n N --size S
//       writes the N files (byte j of file i is (i * 131 + j * 7) % 251), blocking; no output.
//
// The backend is the library's choice (ASYNCIO_BACKEND=epoll|io_uring|auto). Exit status 0, or 1
// when a check failed (the line is still printed), 2 on bad arguments.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <asyncio/asyncio.hpp>
#include <asyncio/files.hpp>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void usage(const char* msg) {
    std::fprintf(stderr,
                 "file_bench: %s\n"
                 "usage: file_bench --case read --path FILE --chunk BYTES\n"
                 "       file_bench --case small --dir DIR --n N --size S [--impl open_file|to_thread]\n"
                 "       file_bench --case make-small --dir DIR --n N --size S\n",
                 msg);
    std::exit(2);
}

struct Options {
    std::string kase, path, dir, impl = "open_file";
    long chunk = 65536, n = 10000, size = 4096;
};

std::string small_path(const std::string& dir, long i) {
    char name[32];
    std::snprintf(name, sizeof name, "/f%06ld", i);
    return dir + name;
}

unsigned char pattern(long i, long j) { return static_cast<unsigned char>((i * 131 + j * 7) % 251); }

long count_bad(const std::string& data, long i, long size) {
    long bad = data.size() == static_cast<std::size_t>(size) ? 0 : 1;
    const long m = std::min<long>(size, static_cast<long>(data.size()));
    for (long j = 0; j < m; ++j) bad += static_cast<unsigned char>(data[static_cast<std::size_t>(j)]) != pattern(i, j);
    return bad;
}

// ---- read: one big file in chunks
asyncio::Coroutine<int> read_case(Options o) {
    const char* backend = asyncio::get_running_loop().backend_name();
    const auto t0 = Clock::now();
    asyncio::AsyncFile f = co_await asyncio::open_file(o.path, "rb");
    std::uint64_t bytes = 0;
    for (;;) {
        std::string data = co_await f.read(o.chunk);
        if (data.empty()) break;
        bytes += data.size();
    }
    co_await f.close();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    auto st = co_await asyncio::os::stat(o.path);
    std::printf("case=read impl=ours backend=%s chunk=%ld bytes=%llu seconds=%.3f mib_per_s=%.0f\n", backend, o.chunk,
                static_cast<unsigned long long>(bytes), s, static_cast<double>(bytes) / s / 1048576.0);
    if (bytes != st.st_size) {
        std::fprintf(stderr, "file_bench: read %llu bytes of a %llu-byte file\n",
                     static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(st.st_size));
        co_return 1;
    }
    co_return 0;
}

// ---- small: n files at once
struct SmallResult {
    double latency_us = 0;
    long bad = 0;
};

asyncio::Coroutine<SmallResult> one_small_open_file(std::string path, long i, long size) {
    const auto t0 = Clock::now();
    SmallResult r;
    try {
        asyncio::AsyncFile f = co_await asyncio::open_file(path, "rb");
        std::string data = co_await f.read(size);
        co_await f.close();
        r.bad = count_bad(data, i, size);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "file_bench: %s\n", e.what());
        r.bad = size;
    }
    r.latency_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    co_return r;
}

std::string read_blocking(const std::string& path, long size) {
    std::string data(static_cast<std::size_t>(size), '\0');
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {};
    std::size_t got = 0;
    while (got < data.size()) {
        const ssize_t n = ::read(fd, data.data() + got, data.size() - got);
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    data.resize(got);
    return data;
}

asyncio::Coroutine<SmallResult> one_small_to_thread(std::string path, long i, long size) {
    const auto t0 = Clock::now();
    SmallResult r;
    std::string data = co_await asyncio::to_thread(read_blocking, path, size);
    r.bad = count_bad(data, i, size);
    r.latency_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    co_return r;
}

asyncio::Coroutine<int> small_case(Options o) {
    const char* backend = asyncio::get_running_loop().backend_name();
    std::vector<asyncio::Task<SmallResult>> tasks;
    tasks.reserve(static_cast<std::size_t>(o.n));
    const auto t0 = Clock::now();
    for (long i = 0; i < o.n; ++i) {
        std::string path = small_path(o.dir, i);
        tasks.push_back(asyncio::create_task(o.impl == "to_thread" ? one_small_to_thread(std::move(path), i, o.size)
                                                                   : one_small_open_file(std::move(path), i, o.size)));
    }
    std::vector<SmallResult> results = co_await asyncio::gather(std::move(tasks));
    const double total = std::chrono::duration<double>(Clock::now() - t0).count();
    std::vector<double> lat;
    lat.reserve(results.size());
    long bad = 0;
    for (const SmallResult& r : results) {
        lat.push_back(r.latency_us);
        bad += r.bad;
    }
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double q) { return lat[static_cast<std::size_t>(q * static_cast<double>(lat.size() - 1) + 0.5)]; };
    std::printf("case=small impl=ours-%s backend=%s n=%ld size=%ld p50_us=%.0f p99_us=%.0f max_us=%.0f total_s=%.3f "
                "files_per_s=%.0f errors=%ld\n",
                o.impl.c_str(), backend, o.n, o.size, pct(0.5), pct(0.99), lat.back(), total,
                static_cast<double>(o.n) / total, bad);
    co_return bad == 0 ? 0 : 1;
}

int make_small(const Options& o) {
    std::string data(static_cast<std::size_t>(o.size), '\0');
    for (long i = 0; i < o.n; ++i) {
        for (long j = 0; j < o.size; ++j) data[static_cast<std::size_t>(j)] = static_cast<char>(pattern(i, j));
        const std::string path = small_path(o.dir, i);
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
            std::fprintf(stderr, "file_bench: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
            if (fd >= 0) ::close(fd);
            return 1;
        }
        ::close(fd);
    }
    return 0;
}

long parse_long(const char* s, const char* name) {
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1) usage((std::string("bad value for ") + name).c_str());
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto val = [&]() -> const char* {
            if (i + 1 >= argc) usage((a + " needs a value").c_str());
            return argv[++i];
        };
        if (a == "--case") o.kase = val();
        else if (a == "--path") o.path = val();
        else if (a == "--dir") o.dir = val();
        else if (a == "--impl") o.impl = val();
        else if (a == "--chunk") o.chunk = parse_long(val(), "--chunk");
        else if (a == "--n") o.n = parse_long(val(), "--n");
        else if (a == "--size") o.size = parse_long(val(), "--size");
        else usage(("unknown argument " + a).c_str());
    }
    if (o.kase == "read") {
        if (o.path.empty()) usage("--case read needs --path");
        return asyncio::run(read_case(o));
    }
    if (o.kase == "small" || o.kase == "make-small") {
        if (o.dir.empty()) usage("--dir is required");
        if (o.impl != "open_file" && o.impl != "to_thread") usage("--impl is open_file or to_thread");
        if (o.kase == "make-small") return make_small(o);
        return asyncio::run(small_case(o));
    }
    usage("--case is read, small or make-small");
}
