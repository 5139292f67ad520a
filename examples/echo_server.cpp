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
// Usage: echo_server [HOST [PORT]]   (default 127.0.0.1 8888; port 0 picks a free port). Once it
// listens it prints "serving on HOST:PORT" with the real port. Messages and addresses are printed
// as Python's repr() prints them.
#include <asyncio/asyncio.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

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

asyncio::Coroutine<> main_(std::string host, std::uint16_t port) {
    asyncio::Server server = co_await asyncio::start_server(handle_echo, host, port);
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
    const std::string host = argc > 1 ? argv[1] : "127.0.0.1";
    const long port = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 8888;
    if (port < 0 || port > 65535) {
        std::fprintf(stderr, "usage: %s [HOST [PORT]]\n", argv[0]);
        return 2;
    }
    try {
        asyncio::run(main_(host, static_cast<std::uint16_t>(port)));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "echo_server: %s\n", e.what());
        return 1;
    }
}
