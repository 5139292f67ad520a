// The TCP echo server of Python's asyncio documentation ("Streams", TCP echo server using
// streams), line by line:
//
//   async def handle_echo(reader, writer):          Coroutine<> handle_echo(StreamReader reader,
//                                                                           StreamWriter writer)
//       data = await reader.read(100)                   std::string data = co_await reader.read(100);
//       message = data.decode()
//       addr = writer.get_extra_info('peername')        auto addr = writer.get_extra_info("peername");
//       print(f"Received {message!r} from {addr!r}")    std::printf("Received %s from %s\n", ...);
//       print(f"Send: {message!r}")
//       writer.write(data)                              writer.write(data);
//       await writer.drain()                            co_await writer.drain();
//       print("Close the connection")
//       writer.close()                                  writer.close();
//       await writer.wait_closed()                      co_await writer.wait_closed();
//
//   async def main():
//       server = await asyncio.start_server(            Server server = co_await asyncio::start_server(
//           handle_echo, '127.0.0.1', 8888)                 handle_echo, host, port);
//       ...print(f'Serving on {addrs}')                 std::printf("serving on %s\n", ...);
//       async with server:                              co_await stop;  // wait_signal(SIGINT, SIGTERM)
//           await server.serve_forever()                ...then the orderly stop below
//
// Where Python's serve_forever() is ended by Ctrl-C with a KeyboardInterrupt traceback, this one
// serves until Ctrl-C or SIGTERM and then stops in order: it stops accepting (the listening socket
// is closed), lets each connection finish its exchange for up to kGrace, closes the ones still
// open (flushed, then an orderly FIN), and exits with status 0.
//
// Usage: echo_server [--tls | --cert FILE --key FILE] [HOST [PORT]]   (default 127.0.0.1 8888;
// port 0 picks a free port). Once it listens it prints "serving on HOST:PORT" with the real port.
// Messages and addresses are printed as Python's repr() prints them.
//
// TLS (Python: start_server(..., ssl=ctx)): --cert/--key serve with that certificate chain and
// key (PEM); --tls alone makes a self-signed certificate for localhost/127.0.0.1/::1 at start
// (with the openssl command, in a temporary directory removed at exit) and prints
// "certificate: PATH" before "serving on", for the client's --cafile.
#include <asyncio/asyncio.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>
#include <unistd.h>

namespace {

using namespace std::chrono_literals;

/// How long a connection may go on after the signal before it is closed.
constexpr auto kGrace = 1s;

/// Python's repr() of bytes decoded as text: 'Hello World!', with \n, \t, \\ and \' escaped.
std::string repr(const std::string& s) {
    const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
    const char quote = dq ? '"' : '\'';
    std::string out(1, quote);
    for (unsigned char c : s) {
        switch (c) {
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\\': out += "\\\\"; break;
            default:
                if (c == static_cast<unsigned char>(quote)) {
                    out += '\\';
                    out += static_cast<char>(c);
                } else if (c < 0x20 || c == 0x7f) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\x%02x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    return out + quote;
}

/// Python's repr() of a peername: ('127.0.0.1', 54321) or ('::1', 54321, 0, 0).
std::string repr(const asyncio::Address& a) {
    if (a.family() == AF_INET6) return "('" + a.host() + "', " + std::to_string(a.port()) + ", 0, 0)";
    if (a.family() == AF_INET) return "('" + a.host() + "', " + std::to_string(a.port()) + ")";
    return repr(a.path());
}

asyncio::Coroutine<> handle_echo(asyncio::StreamReader reader, asyncio::StreamWriter writer) {
    std::string data = co_await reader.read(100);
    if (data.empty()) co_return;  // nothing came: closed by the peer, or at shutdown
    const std::string& message = data;
    const auto addr = std::any_cast<asyncio::Address>(writer.get_extra_info("peername"));

    std::printf("Received %s from %s\n", repr(message).c_str(), repr(addr).c_str());

    std::printf("Send: %s\n", repr(message).c_str());
    writer.write(data);
    co_await writer.drain();

    std::printf("Close the connection\n");
    std::fflush(stdout);
    writer.close();
    co_await writer.wait_closed();
}

/// A self-signed certificate made at start (--tls): its directory, removed at exit.
struct TempCertificate {
    std::string dir, cert, key;
    TempCertificate() {
        char tmpl[] = "/tmp/echo_server_tls.XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
        dir = tmpl;
        cert = dir + "/cert.pem";
        key = dir + "/key.pem";
        const std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
                                " -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
                                " -keyout " + key + " -out " + cert + " >/dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0) {
            remove();
            throw std::runtime_error("could not make a certificate (is the openssl command installed?)");
        }
    }
    ~TempCertificate() { remove(); }
    TempCertificate(const TempCertificate&) = delete;
    TempCertificate& operator=(const TempCertificate&) = delete;
    void remove() noexcept {
        std::remove(cert.c_str());
        std::remove(key.c_str());
        ::rmdir(dir.c_str());
    }
};

asyncio::Coroutine<> main_(std::string host, std::uint16_t port, const asyncio::ssl::Context* tls) {
    asyncio::Server server = co_await asyncio::start_server(handle_echo, host, port, {.ssl = tls});
    // Caught from here on: a signal sent as soon as "serving on" is out is not lost.
    auto stop = asyncio::wait_signal(SIGINT, SIGTERM);

    for (const asyncio::Socket& sock : server.sockets()) {
        const asyncio::Address a = sock.getsockname();
        std::printf("serving on %s:%u\n", a.host().c_str(), static_cast<unsigned>(a.port()));
    }
    std::fflush(stdout);

    const int sig = co_await stop;
    server.close();  // stops accepting
    std::printf("%s: shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    std::fflush(stdout);
    bool finished = true;
    try {
        co_await asyncio::wait_for(server.wait_closed(), kGrace);  // every connection finished
    } catch (const asyncio::TimeoutError&) {
        finished = false;
    }
    if (!finished) {
        server.close_clients();  // the ones still open: flushed, then closed
        co_await server.wait_closed();
    }
    std::printf("stopped\n");
}

}  // namespace

int main(int argc, char** argv) {
    bool tls = false;
    std::string cert, key;
    std::vector<std::string> args;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--tls") {
            tls = true;
        } else if ((a == "--cert" || a == "--key") && i + 1 < argc) {
            (a == "--cert" ? cert : key) = argv[++i];
            tls = true;
        } else {
            args.push_back(a);
        }
    }
    const std::string host = !args.empty() ? args[0] : "127.0.0.1";
    const long port = args.size() > 1 ? std::strtol(args[1].c_str(), nullptr, 10) : 8888;
    if (port < 0 || port > 65535 || args.size() > 2 || cert.empty() != key.empty()) {
        std::fprintf(stderr, "usage: %s [--tls | --cert FILE --key FILE] [HOST [PORT]]\n", argv[0]);
        return 2;
    }
    try {
        std::optional<TempCertificate> made;
        std::optional<asyncio::ssl::Context> ctx;
        if (tls) {
            if (cert.empty()) {
                made.emplace();
                cert = made->cert;
                key = made->key;
                std::printf("certificate: %s\n", cert.c_str());
            }
            ctx = asyncio::ssl::create_default_context(asyncio::ssl::Purpose::CLIENT_AUTH);
            ctx->load_cert_chain(cert, key);
        }
        asyncio::run(main_(host, static_cast<std::uint16_t>(port), ctx ? &*ctx : nullptr));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "echo_server: %s\n", e.what());
        return 1;
    }
}
