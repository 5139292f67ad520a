// bench_echo_server PORT: the echo server of bench/run_echo_bench.sh written with our streams API,
// one loop on one thread, the way asyncio's documentation writes it in Python:
//
//   while data := await reader.read(65536):
//       writer.write(data)
//       await writer.drain()
//
// Listens on 127.0.0.1:PORT (0: the kernel picks a port), prints "serving on 127.0.0.1:PORT" with
// the real port once it listens, and echoes every byte of every connection until the peer closes
// it. A connection reset by its peer ends that connection only. Runs until killed. The listen
// backlog is SOMAXCONN, as the hand-written references'. The backend is the library's choice
// (ASYNCIO_BACKEND=epoll|io_uring|auto in the environment). The soft
// RLIMIT_NOFILE is raised to the hard limit (10,000 connections need more than the usual 1024).
//
// bench_echo_server PORT --cert CERT --key KEY: the same over TLS (bench/run_tls_bench.sh), as
// Python's start_server(..., ssl=ctx) with ctx = create_default_context(Purpose.CLIENT_AUTH) and
// load_cert_chain(CERT, KEY): the library's defaults, nothing tuned for the benchmark
// (TLS_TICKETS=N in the environment sets num_tickets, as every OpenSSL-based server of the
// benchmark reads it, to send as many session tickets as Go's crypto/tls: one).
#include <sys/resource.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <system_error>

#include <asyncio/asyncio.hpp>
#include <asyncio/server.hpp>
#include <asyncio/ssl.hpp>
#include <asyncio/streams.hpp>

namespace {

// ECHO_WRITE=move: writer.write(std::move(data)) instead of writer.write(data) (the string is
// moved into the write buffer rather than copied or sent at once; bench/README.md says which
// figure is which).
const bool g_move = [] {
    const char* e = std::getenv("ECHO_WRITE");
    return e != nullptr && std::string(e) == "move";
}();

asyncio::Coroutine<> echo(asyncio::StreamReader reader, asyncio::StreamWriter writer) {
    try {
        std::string data;
        while ((data = co_await reader.read(65536)).size()) {
            if (g_move)
                writer.write(std::move(data));
            else
                writer.write(data);
            co_await writer.drain();
        }
    } catch (const std::system_error&) {
        // ECONNRESET, EPIPE: this connection is over; the server goes on.
    }
    writer.close();
}

asyncio::Coroutine<> serve(std::uint16_t port, const asyncio::ssl::Context* tls) {
    // The references' backlog (SOMAXCONN), not Python's default 100: 10,000 connections opened
    // quickly must not wait in SYN retries (the kernel caps the value at net.core.somaxconn).
    asyncio::ServerOptions options;
    options.backlog = SOMAXCONN;
    options.ssl = tls;
    auto server = co_await asyncio::start_server(echo, "127.0.0.1", port, options);
    std::printf("serving on 127.0.0.1:%u\n", static_cast<unsigned>(server.sockets()[0].getsockname().port()));
    std::fflush(stdout);
    std::fprintf(stderr, "bench_echo_server: backend %s\n", asyncio::get_running_loop().backend_name());
    co_await server.serve_forever();
}

}  // namespace

int main(int argc, char** argv) {
    std::string cert, key;
    if (argc == 6 && std::string(argv[2]) == "--cert" && std::string(argv[4]) == "--key") {
        cert = argv[3];
        key = argv[5];
    } else if (argc != 2) {
        std::fprintf(stderr, "usage: %s PORT [--cert CERT --key KEY]\n", argv[0]);
        return 2;
    }
    char* end = nullptr;
    long port = std::strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        std::fprintf(stderr, "bench_echo_server: bad port '%s'\n", argv[1]);
        return 2;
    }
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    std::optional<asyncio::ssl::Context> ctx;
    if (!cert.empty()) {
        ctx = asyncio::ssl::create_default_context(asyncio::ssl::Purpose::CLIENT_AUTH);
        ctx->load_cert_chain(cert, key);
        // TLS_TICKETS=N: session tickets per handshake (OpenSSL's default 2; Go's crypto/tls sends 1).
        if (const char* t = std::getenv("TLS_TICKETS")) ctx->set_num_tickets(std::strtol(t, nullptr, 10));
    }
    asyncio::run(serve(static_cast<std::uint16_t>(port), ctx ? &*ctx : nullptr));
    return 0;
}
