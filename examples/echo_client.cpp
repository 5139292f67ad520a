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
// Usage: echo_client [HOST [PORT]]   (default 127.0.0.1 8888), e.g. against echo_server.
#include <asyncio/asyncio.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

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

asyncio::Coroutine<> tcp_echo_client(std::string message, std::string host, std::uint16_t port) {
    auto [reader, writer] = co_await asyncio::open_connection(host, port);

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
    const std::string host = argc > 1 ? argv[1] : "127.0.0.1";
    const long port = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 8888;
    if (port <= 0 || port > 65535) {
        std::fprintf(stderr, "usage: %s [HOST [PORT]]\n", argv[0]);
        return 2;
    }
    try {
        asyncio::run(tcp_echo_client("Hello World!", host, static_cast<std::uint16_t>(port)));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "echo_client: %s\n", e.what());
        return 1;
    }
}
