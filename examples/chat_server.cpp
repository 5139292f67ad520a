// A chat room: every line a client sends goes to every other client. Try it with netcat:
//
//   chat_server                         # serving on 127.0.0.1:8888
//   nc 127.0.0.1 8888                   # in two or more other terminals
//
// Each client is greeted with "* welcome, you are HOST:PORT (N online)"; the others see
// "* HOST:PORT joined" / "* HOST:PORT left", and every line as "HOST:PORT: the line".
//
// Usage: chat_server [HOST [PORT]]   (default 127.0.0.1 8888; port 0 picks a free port). Once it
// listens it prints "serving on HOST:PORT" with the real port. Ctrl-C or SIGTERM stops it in
// order: it stops accepting, tells every client "* server shutting down", closes their connections
// (flushed, then an orderly FIN) and exits with status 0.
//
// How it is built: one task per client (start_server's callback) reads lines with
// `while (auto line = co_await reader.anext())`; the room is a list of the clients' StreamWriter
// handles. Broadcasting only write()s (it never waits), so a client that stops reading cannot
// hold up the others; one whose write buffer grows past 1 MiB is dropped instead.
#include <asyncio/asyncio.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <list>
#include <stdexcept>
#include <string>

namespace {

struct Member {
    std::string name;
    asyncio::StreamWriter writer;
};

std::list<Member> room;

constexpr std::size_t kMaxBacklog = 1 << 20;  // bytes a member may fall behind before it is dropped

/// Sends text to every member except `from`.
void broadcast(const std::string& text, const Member* from) {
    for (auto it = room.begin(); it != room.end();) {
        Member& m = *it++;
        if (&m == from || m.writer.is_closing()) continue;
        try {
            m.writer.write(text);
            if (m.writer.get_write_buffer_size() > kMaxBacklog) m.writer.abort();  // too slow: dropped
        } catch (const std::exception&) {
            m.writer.abort();  // its connection failed (its own task removes it from the room)
        }
    }
}

asyncio::Coroutine<> handle_client(asyncio::StreamReader reader, asyncio::StreamWriter writer) {
    const auto peer = std::any_cast<asyncio::Address>(writer.get_extra_info("peername"));
    const std::string name = peer.to_string();
    room.push_back(Member{name, writer});
    // Leaves the room however this task ends (EOF, error, or cancellation at shutdown).
    struct Leave {
        std::list<Member>::iterator me;
        ~Leave() {
            const std::string name = me->name;
            room.erase(me);
            broadcast("* " + name + " left\n", nullptr);
            std::printf("%s left\n", name.c_str());
            std::fflush(stdout);
        }
    } leave{std::prev(room.end())};
    const Member* me = &*leave.me;
    std::printf("%s joined\n", name.c_str());
    std::fflush(stdout);
    writer.write("* welcome, you are " + name + " (" + std::to_string(room.size()) + " online)\n");
    broadcast("* " + name + " joined\n", me);
    try {
        while (auto line = co_await reader.anext()) {
            if (line->back() != '\n') *line += '\n';  // the last line, cut by EOF
            broadcast(name + ": " + *line, me);
        }
    } catch (const std::runtime_error& e) {
        // A reset connection (std::system_error), or a line longer than the reader's limit.
        std::printf("%s: %s\n", name.c_str(), e.what());
    }
    writer.close();
}

asyncio::Coroutine<> main_(std::string host, std::uint16_t port) {
    asyncio::Server server = co_await asyncio::start_server(handle_client, host, port);
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
    broadcast("* server shutting down\n", nullptr);
    server.close_clients();  // each flushed, then closed; their tasks see EOF and leave the room
    co_await server.wait_closed();
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
        std::fprintf(stderr, "chat_server: %s\n", e.what());
        return 1;
    }
}
