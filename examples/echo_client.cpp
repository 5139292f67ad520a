// The TCP echo client of Python's asyncio documentation ("Streams", TCP echo client using
// streams), line by line:
//
//   async def tcp_echo_client(message):             Coroutine<> tcp_echo_client(std::string message, ...)
//       reader, writer = await asyncio.open_connection(
//           '127.0.0.1', 8888)                          auto [reader, writer] = co_await
//                                                           asyncio::open_connection(host, port);
//       print(f'Send: {message!r}')                     std::printf("Send: %s\n", repr(message));
//       writer.write(message.encode())                  writer.write(message);
//       await writer.drain()                            co_await writer.drain();
//       data = await reader.read(100)                   std::string data = co_await reader.read(100);
//       print(f'Received: {data.decode()!r}')           std::printf("Received: %s\n", repr(data));
//       print('Close the connection')
//       writer.close()                                  writer.close();
//       await writer.wait_closed()                      co_await writer.wait_closed();
//
//   asyncio.run(tcp_echo_client('Hello World!'))    asyncio::run(tcp_echo_client("Hello World!", ...));
//
// Usage: echo_client [--tls [--cafile FILE]] [HOST [PORT]]   (default 127.0.0.1 8888), e.g.
// against echo_server. --tls: open_connection(..., ssl=create_default_context(cafile=FILE)), the
// host name checked against the certificate (FILE: trust only that CA or self-signed certificate,
// e.g. the one echo_server --tls printed; default: the system trust store).
#include <asyncio/asyncio.hpp>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace {

/// Python's repr() of a short text: 'Hello World!'.
std::string repr(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'' || c == '\\') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out + "'";
}

asyncio::Coroutine<> tcp_echo_client(std::string message, std::string host, std::uint16_t port,
                                     const asyncio::ssl::Context* tls) {
    auto [reader, writer] = co_await asyncio::open_connection(host, port, {.ssl = tls});

    std::printf("Send: %s\n", repr(message).c_str());
    writer.write(message);
    co_await writer.drain();

    std::string data = co_await reader.read(100);
    std::printf("Received: %s\n", repr(data).c_str());

    std::printf("Close the connection\n");
    writer.close();
    co_await writer.wait_closed();
}

}  // namespace

int main(int argc, char** argv) {
    bool tls = false;
    std::string cafile;
    std::vector<std::string> args;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--tls") {
            tls = true;
        } else if (a == "--cafile" && i + 1 < argc) {
            cafile = argv[++i];
            tls = true;
        } else {
            args.push_back(a);
        }
    }
    const std::string host = !args.empty() ? args[0] : "127.0.0.1";
    const long port = args.size() > 1 ? std::strtol(args[1].c_str(), nullptr, 10) : 8888;
    if (port <= 0 || port > 65535 || args.size() > 2) {
        std::fprintf(stderr, "usage: %s [--tls [--cafile FILE]] [HOST [PORT]]\n", argv[0]);
        return 2;
    }
    try {
        std::optional<asyncio::ssl::Context> ctx;
        if (tls) ctx = asyncio::ssl::create_default_context(asyncio::ssl::Purpose::SERVER_AUTH, cafile);
        asyncio::run(tcp_echo_client("Hello World!", host, static_cast<std::uint16_t>(port), ctx ? &*ctx : nullptr));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "echo_client: %s\n", e.what());
        return 1;
    }
}
