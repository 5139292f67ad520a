// TLS under the streams: a Transport (transport.hpp) that runs an OpenSSL session over another
// transport (a socket), through two BIOs on the engine's own buffers, so it works the same on every
// backend. See docs/design.md, "TLS". Private to src/.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>

#include "asyncio/coroutine.hpp"
#include "asyncio/ssl.hpp"
#include "transport.hpp"

namespace asyncio::ssl::detail {

struct ContextImpl {
    SSL_CTX* ctx = nullptr;
    Protocol protocol = Protocol::TLS_CLIENT;
    bool check_hostname = false;
    VerifyMode verify_mode = VerifyMode::CERT_NONE;
    std::string alpn;  // wire format, for the server's selection callback
    Context::SniCallback sni;
    ~ContextImpl();
};

/// One SSL session (an SSLObject's target): outlives its transport while an SSLObject refers
/// to it. SSL_get_app_data(ssl) points here (for the SNI callback).
struct Session : std::enable_shared_from_this<Session> {
    SSL* ssl = nullptr;
    Context ctx;       // the current context (an SNI callback may switch it)
    Context original;  // the one the session was made with (its SNI callback runs)
    std::string hostname;
    bool server = false;
    bool handshake_done = false;
    std::exception_ptr callback_error;  // thrown by the SNI callback
    explicit Session(const Context& c) : ctx(c), original(c) {}
    ~Session() { SSL_free(ssl); }  // (and both BIOs)
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
};

/// The servername callback installed on an SSL_CTX by Context::set_sni_callback.
int sni_trampoline(SSL* ssl, int* alert, void* arg);

/// The SSLError for the errors on OpenSSL's queue of this thread (cleared), or `fallback` text
/// when the queue is empty.
SSLError error_from_queue(const char* fallback);

}  // namespace asyncio::ssl::detail

namespace asyncio::detail {

/// A TLS session over `inner`. Completes the protocol's operations itself (op.state = done, then
/// op.complete through the loop's ready queue when it finishes later). An IoOp of kind
/// IoKind::connect started on it is the handshake (result 0, or < 0 with error_for()).
class TlsTransport final : public Transport {
public:
    /// server_hostname: the name to send (SNI) and check (if the context checks hostnames);
    /// empty: neither. Throws SSLError if OpenSSL cannot make the session.
    /// shutdown_timeout: how long close() keeps flushing to a peer that does not read (Python's
    /// ssl_shutdown_timeout); then the stream's flush fails with TimeoutError "SSL shutdown timed out".
    TlsTransport(std::unique_ptr<Transport> inner, const ssl::Context& ctx, bool server,
                 const std::string& server_hostname,
                 std::chrono::duration<double> shutdown_timeout = std::chrono::seconds(30));
    ~TlsTransport() override;

    bool start(EventLoop& loop, IoOp& op) override;
    bool cancel(EventLoop& loop, IoOp& op) noexcept override;
    std::int64_t try_send(EventLoop& loop, const char* p, std::size_t n) override;
    bool can_write_eof() const noexcept override { return false; }  // as asyncio's SSL transport
    void write_eof() noexcept override {}
    void close() noexcept override;
    void begin_close() noexcept override;
    std::any get_extra_info(std::string_view name, std::any default_value) override;
    std::exception_ptr error_for(std::int64_t result) const noexcept override;
    std::size_t write_buffer_size() const noexcept override;

    struct Engine;

private:
    Engine* e_;
};

/// Runs the handshake on t (before the streams are made), with Python's timeout: on timeout,
/// std::system_error ECONNABORTED "SSL handshake is taking longer than N seconds: aborting the
/// connection". SSLError / SSLCertVerificationError / std::system_error on failure.
Coroutine<> tls_handshake(TlsTransport& t, std::chrono::duration<double> timeout);

/// ValueError "ssl_handshake_timeout should be a positive number, got 0.0" (and the same for
/// ssl_shutdown_timeout), Python's texts.
void check_tls_timeouts(std::chrono::duration<double> handshake, std::chrono::duration<double> shutdown);

}  // namespace asyncio::detail
