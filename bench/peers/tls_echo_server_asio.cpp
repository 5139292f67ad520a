// Boost.Asio peer of bench/run_tls_bench.sh: a TLS echo server on one io_context, one thread,
// asio::ssl::stream<tcp::socket>, in Asio's own example style (completion handlers, a session object
// kept alive by shared_ptr): async_handshake, then async_read_some of up to 64 KiB and async_write
// of what was read, until the peer closes; then async_shutdown (close_notify).
//
//   tls_echo_server_asio PORT --cert CERT --key KEY
//
// Listens on 127.0.0.1:PORT (0: any free port), prints "serving on 127.0.0.1:PORT". Context:
// ssl::context::tls_server with Asio's recommended options (default_workarounds, no_sslv2,
// single_dh_use); TCP_NODELAY on accepted sockets. Built by run_tls_bench.sh only when Boost's
// headers are installed (never part of the library's build or tests).
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket sock, asio::ssl::context& ctx) : stream_(std::move(sock), ctx) {}

    void start() {
        auto self = shared_from_this();
        stream_.async_handshake(asio::ssl::stream_base::server, [self](const boost::system::error_code& ec) {
            if (!ec) self->read();
        });
    }

private:
    void read() {
        auto self = shared_from_this();
        stream_.async_read_some(asio::buffer(buf_), [self](const boost::system::error_code& ec, std::size_t n) {
            if (ec) {
                if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) self->shutdown();
                return;
            }
            self->write(n);
        });
    }

    void write(std::size_t n) {
        auto self = shared_from_this();
        asio::async_write(stream_, asio::buffer(buf_.data(), n), [self](const boost::system::error_code& ec, std::size_t) {
            if (!ec) self->read();
        });
    }

    void shutdown() {
        auto self = shared_from_this();
        stream_.async_shutdown([self](const boost::system::error_code&) {});
    }

    asio::ssl::stream<tcp::socket> stream_;
    std::array<char, 65536> buf_;
};

void accept(tcp::acceptor& acceptor, asio::ssl::context& ctx) {
    acceptor.async_accept([&acceptor, &ctx](const boost::system::error_code& ec, tcp::socket sock) {
        if (!ec) {
            sock.set_option(tcp::no_delay(true));
            std::make_shared<Session>(std::move(sock), ctx)->start();
        }
        accept(acceptor, ctx);
    });
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 6 || std::string(argv[2]) != "--cert" || std::string(argv[4]) != "--key") {
        std::fprintf(stderr, "usage: %s PORT --cert CERT --key KEY\n", argv[0]);
        return 2;
    }
    const int port = std::atoi(argv[1]);
    asio::io_context io(1);  // one thread: no locking inside Asio
    asio::ssl::context ctx(asio::ssl::context::tls_server);
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::single_dh_use);
    ctx.use_certificate_chain_file(argv[3]);
    ctx.use_private_key_file(argv[5], asio::ssl::context::pem);
    // TLS_TICKETS=N: session tickets per handshake (OpenSSL's default 2; Go's crypto/tls sends 1).
    if (const char* t = std::getenv("TLS_TICKETS")) SSL_CTX_set_num_tickets(ctx.native_handle(), std::strtoul(t, nullptr, 10));
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    std::printf("serving on 127.0.0.1:%u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
    std::fflush(stdout);
    accept(acceptor, ctx);
    io.run();
    return 0;
}
