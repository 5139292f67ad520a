// TlsTransport (tls_transport.hpp): an OpenSSL session over an inner transport, through two BIOs of
// our own (engine_bio_method) that read from and write into the engine's buffers.
//
// The engine owns two operations on the inner transport. On a socket (Transport::try_recv) the
// read BIO receives straight into OpenSSL's record buffer, as a socket BIO would, and `rx` only
// waits until the socket is readable again (on io_uring, after a small receive, `rx` receives
// into the engine's buffer instead: see small_rx); on any other transport `rx` receives ciphertext
// into the engine's own buffer, which the read BIO hands to OpenSSL. `tx` sends what OpenSSL wrote
// through the write BIO (appended to `tx_pending`, then sent from `tx_sending`). Memory BIOs (BIO_s_mem) would copy each
// byte once more each way and zero-fill what they grow: a quarter of the server's time in a 16 KiB
// TLS echo (bench/run_tls_bench.sh). The protocol's operations (a plaintext receive, a send, the handshake) are
// driven from them and completed here. The engine outlives the TlsTransport that owns it while
// an inner operation is in flight (a completion may be queued) or ciphertext is still being
// flushed after close(): it frees itself when the last one completes.
#include "tls_transport.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/timeout.hpp"
#include "stream_core.hpp"

namespace asyncio::detail {

namespace {
constexpr std::size_t kRxSize = 32 * 1024;     // a receive of ciphertext (two full records)
constexpr std::size_t kMaxWrite = 64 * 1024;   // plaintext taken per send / try_send
constexpr std::size_t kHigh = 256 * 1024;      // ciphertext backlog above which sends wait
constexpr std::size_t kSmallRx = 2 * 1024;     // a receive below this is "small" (Engine::small_rx)

/// Empties the thread's OpenSSL error queue before an SSL call (SSL_get_error needs it empty).
/// It almost always is already (every failure path drains it): checking costs a tenth of
/// ERR_clear_error, which resets all sixteen slots each time and was ~13% of the server's
/// instructions in a 64-byte TLS echo (callgrind, bench/run_tls_bench.sh's 100x64 case).
inline void clear_error_queue() noexcept {
    if (ERR_peek_error() != 0) ERR_clear_error();
}

bool is_ip_address(const std::string& s) {
    unsigned char buf[16];
    return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}
}  // namespace

struct TlsTransport::Engine {
    struct Op : IoOp {
        Engine* eng = nullptr;
        bool inflight = false;
    };

    EventLoop* loop = nullptr;
    std::unique_ptr<Transport> inner;
    std::shared_ptr<ssl::detail::Session> session;  // owns the SSL
    SSL* ssl = nullptr;
    BIO* rbio = nullptr;  // ciphertext in (we write, OpenSSL reads)
    BIO* wbio = nullptr;  // ciphertext out (OpenSSL writes, we read)
    std::chrono::duration<double> shutdown_timeout;
    bool shutdown_timed_out = false;
    bool owned = true;
    bool closed = false;
    bool inner_closed = false;
    bool handshake_done = false;
    bool peer_eof = false;
    bool read_failed = false;  // an SSL_read failed (SSL error): later reads ask OpenSSL again
    bool send_direct = false;  // the write BIO may send at once (engine_bio_write)
    // The read BIO receives straight into OpenSSL's buffer (Transport::try_recv), as a socket
    // BIO does, and rx only waits for readability; else rx receives into rxbuf (any transport).
    bool recv_direct = false;
    // recv_direct: the socket may have bytes (rx said readable, or the last receive filled what
    // OpenSSL offered) until a receive comes back short or would block. Keeps a read from
    // waiting for a readiness it already has (a poll(2) per message on epoll).
    bool rx_ready = false;
    // The last receive was small (under kSmallRx): on a backend whose receives wait in the
    // kernel (io_uring) the next one is such a receive into rxbuf: copying a small message costs
    // less than the system call of a receive after readiness.
    bool small_rx = false;
    int inner_err = 0;
    int send_err = 0;
    std::exception_ptr error;  // the SSL error behind a -EPROTO result
    IoOp* read_op = nullptr;
    IoOp* send_op = nullptr;
    IoOp* hs_op = nullptr;
    Op rx;
    Op tx;
    std::unique_ptr<char[]> rxbuf{new char[kRxSize]};
    std::size_t rx_off = 0;  // rxbuf[rx_off, rx_len): received, not yet read by OpenSSL
    std::size_t rx_len = 0;
    // Ciphertext out: OpenSSL appends to tx_pending; tx_sending is in flight (never touched
    // while tx is), sent up to tx_off. The two swap when tx_sending is all sent.
    std::vector<char> tx_pending;
    std::vector<char> tx_sending;
    std::size_t tx_off = 0;
    TimerHandle shutdown_timer;  // armed while close() is still flushing
    bool timer_armed = false;

    Engine(std::unique_ptr<Transport> in, const ssl::Context& c, std::chrono::duration<double> shutdown)
        : inner(std::move(in)), session(std::make_shared<ssl::detail::Session>(c)), shutdown_timeout(shutdown) {
        rx.eng = this;
        tx.eng = this;
        rx.kind = IoKind::recv;
        tx.kind = IoKind::send;
        rx.complete = &on_rx;
        tx.complete = &on_tx;
    }

    ~Engine() {
        // The SSL (and its BIOs) may outlive the engine in an SSLObject: no BIO call reaches us.
        if (rbio != nullptr) BIO_set_data(rbio, nullptr);
        if (wbio != nullptr) BIO_set_data(wbio, nullptr);
    }
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    std::size_t backlog() const noexcept { return tx_pending.size() + (tx_sending.size() - tx_off); }

    void finish(IoOp*& slot, std::int64_t result, bool sync) {
        IoOp* op = slot;
        slot = nullptr;
        op->result = result;
        op->state = IoState::done;
        if (!sync) loop->schedule(op->complete, op);
    }

    /// Sends staged/BIO ciphertext until the inner transport would wait (tx in flight).
    void flush() {
        while (!tx.inflight && !inner_closed && send_err == 0) {
            if (tx_off == tx_sending.size()) {
                tx_sending.clear();
                tx_off = 0;
                if (tx_pending.empty()) break;
                tx_sending.swap(tx_pending);
            }
            tx.buf = tx_sending.data() + tx_off;
            tx.len = tx_sending.size() - tx_off;
            tx.state = IoState::idle;
            if (!inner->start(*loop, tx)) {
                tx.inflight = true;
                break;
            }
            tx_sent();
        }
    }

    void tx_sent() {
        if (tx.result < 0) {
            send_err = static_cast<int>(-tx.result);
            tx_off = 0;
            tx_sending.clear();
            tx_pending.clear();
        } else {
            tx_off += static_cast<std::size_t>(tx.result);
        }
    }

    /// Starts a ciphertext receive unless one is in flight. True: data (or EOF, an error) came
    /// at once: retry the SSL call. False: wait for on_rx.
    bool pull() {
        if (rx.inflight) return false;
        if (peer_eof || inner_err != 0 || inner_closed) return true;
        if (recv_direct && !(small_rx && inner->waits_in_kernel(*loop))) {
            // The read BIO found the socket drained: wait until it is readable, then the SSL
            // call is made again and its BIO read receives.
            rx.kind = IoKind::readable;
            rx.buf = nullptr;
            rx.len = 0;
        } else {
            if (rx_off == rx_len) {
                rx_off = rx_len = 0;
            } else if (rx_off > 0) {  // (OpenSSL left a partial record: keep it, make room after it)
                std::memmove(rxbuf.get(), rxbuf.get() + rx_off, rx_len - rx_off);
                rx_len -= rx_off;
                rx_off = 0;
            }
            if (rx_len == kRxSize) return true;  // (full: OpenSSL has data to read)
            rx.kind = IoKind::recv;
            rx.buf = rxbuf.get() + rx_len;
            rx.len = kRxSize - rx_len;
        }
        rx.state = IoState::idle;
        if (!inner->start(*loop, rx)) {
            rx.inflight = true;
            return false;
        }
        rx_received();
        return true;
    }

    void rx_received() {
        if (rx.kind == IoKind::readable) {
            if (rx.result < 0)
                inner_err = static_cast<int>(-rx.result);
            else
                rx_ready = true;
            return;
        }
        small_rx = rx.result < static_cast<std::int64_t>(kSmallRx);
        if (rx.result > 0)
            rx_len += static_cast<std::size_t>(rx.result);
        else if (rx.result == 0)
            peer_eof = true;
        else
            inner_err = static_cast<int>(-rx.result);
    }

    /// The exception for a failed handshake (or a failed SSL_read/SSL_write).
    std::exception_ptr ssl_failure(int err) {
        if (err == SSL_ERROR_SSL) {
            const unsigned long code = ERR_peek_error();
            if (ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
                ERR_clear_error();
                const long vr = SSL_get_verify_result(ssl);
                std::string msg;
                if (vr == X509_V_ERR_HOSTNAME_MISMATCH)
                    msg = "Hostname mismatch, certificate is not valid for '" + session->hostname + "'.";
                else if (vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
                    msg = "IP address mismatch, certificate is not valid for '" + session->hostname + "'.";
                else
                    msg = X509_verify_cert_error_string(vr);
                return std::make_exception_ptr(ssl::SSLCertVerificationError(vr, std::move(msg)));
            }
            return std::make_exception_ptr(ssl::detail::error_from_queue("SSL error"));
        }
        ERR_clear_error();
        // SSL_ERROR_SYSCALL with memory BIOs: the peer's EOF in the middle of a record or handshake
        // (Python: "EOF occurred in violation of protocol").
        return std::make_exception_ptr(ssl::SSLError(SSL_ERROR_EOF_HINT, "SSL", "UNEXPECTED_EOF_WHILE_READING",
                                                     "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in "
                                                     "violation of protocol"));
    }
    static constexpr int SSL_ERROR_EOF_HINT = 8;  // Python's SSL_ERROR_EOF

    /// The handshake: true when it finished (hs_op completed).
    bool step_handshake(bool sync) {
        for (;;) {
            clear_error_queue();
            const int r = SSL_do_handshake(ssl);
            const int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
            flush();
            if (r == 1) {
                handshake_done = true;
                session->handshake_done = true;
                finish(hs_op, 0, sync);
                return true;
            }
            report_callback_error();
            if (err == SSL_ERROR_WANT_READ) {
                if (peer_eof || inner_err != 0) {
                    // Python: ConnectionResetError for an EOF during the handshake.
                    finish(hs_op, -(inner_err != 0 ? inner_err : ECONNRESET), sync);
                    return true;
                }
                if (pull()) continue;
                return false;
            }
            error = ssl_failure(err);
            finish(hs_op, -EPROTO, sync);
            return true;
        }
    }

    /// Whether an SSL_read now could only say WANT_READ: no ciphertext is waiting in rxbuf nor
    /// in OpenSSL's read-ahead buffer, no plaintext is buffered, and nothing already decided
    /// the outcome (close_notify, EOF, an error). Then the read goes straight to the socket: a
    /// busy echo otherwise pays a failing SSL_read (and the error-queue work around it) per
    /// message.
    bool read_would_block() const noexcept {
        return handshake_done && !read_failed && !rx_ready && rx_off == rx_len && !peer_eof && inner_err == 0 && !inner_closed &&
               SSL_has_pending(ssl) == 0 && (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN) == 0;
    }

    bool step_read(bool sync) {
        // (With recv_direct, pull() waits for readability, which costs no system call when the
        // backend knows the socket is drained, as after the short receive that ended a message.)
        if (read_would_block() && !pull()) return false;
        for (;;) {
            clear_error_queue();
            std::size_t n = 0;
            const int r = SSL_read_ex(ssl, read_op->buf, read_op->len, &n);
            const int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
            flush();  // (a key update or an alert may have been written)
            if (r == 1) {
                finish(read_op, static_cast<std::int64_t>(n), sync);
                return true;
            }
            if (err == SSL_ERROR_ZERO_RETURN) {  // close_notify
                finish(read_op, 0, sync);
                return true;
            }
            if (err == SSL_ERROR_WANT_READ) {
                if (inner_err != 0) {
                    finish(read_op, -inner_err, sync);
                    return true;
                }
                if (peer_eof) {
                    // EOF without close_notify: EOF, as asyncio 3.13 (its SSL protocol treats the
                    // transport's eof_received as the end of the stream).
                    finish(read_op, 0, sync);
                    return true;
                }
                if (pull()) continue;
                return false;
            }
            if (err == SSL_ERROR_SYSCALL && peer_eof) {  // EOF in the middle of a record
                ERR_clear_error();
                finish(read_op, 0, sync);
                return true;
            }
            read_failed = true;
            error = ssl_failure(err);
            finish(read_op, -EPROTO, sync);
            return true;
        }
    }

    /// Encrypts up to kMaxWrite bytes into the write BIO; the count, or -errno.
    std::int64_t encrypt(const char* p, std::size_t n) {
        if (n > kMaxWrite) n = kMaxWrite;
        clear_error_queue();
        std::size_t w = 0;
        send_direct = handshake_done && n <= SSL3_RT_MAX_PLAIN_LENGTH;  // (one record)
        const int ok = SSL_write_ex(ssl, p, n, &w);
        send_direct = false;
        if (ok != 1) {
            error = ssl_failure(SSL_get_error(ssl, 0));
            return -EPROTO;
        }
        flush();
        return static_cast<std::int64_t>(w);
    }

    /// An exception out of the SNI callback goes to the loop's exception handler (Python: the
    /// unraisable hook); the handshake fails with the alert it caused.
    void report_callback_error() noexcept {
        if (!session->callback_error || loop == nullptr) return;
        std::exception_ptr e = std::move(session->callback_error);
        session->callback_error = nullptr;
        try {
            loop->call_exception_handler({"Exception in the SNI callback (ssl::Context::set_sni_callback)", e, {}});
        } catch (...) {
        }
    }

    /// The result of a send after the ciphertext send failed: after the shutdown timeout,
    /// Python's TimeoutError("SSL shutdown timed out") (as the stream's error); else the errno.
    std::int64_t send_failure() {
        if (shutdown_timed_out) {
            error = std::make_exception_ptr(TimeoutError("SSL shutdown timed out"));
            return -EPROTO;
        }
        return -send_err;
    }

    bool step_send(bool sync) {
        if (send_err != 0) {
            finish(send_op, send_failure(), sync);
            return true;
        }
        if (backlog() > kHigh) return false;  // parked until the ciphertext drains
        finish(send_op, encrypt(static_cast<const char*>(send_op->buf), send_op->len), sync);
        return true;
    }

    void close_inner() noexcept {
        if (inner_closed) return;
        inner_closed = true;
        inner->close();
    }

    void disarm() noexcept {
        if (timer_armed) {
            timer_armed = false;
            shutdown_timer.cancel();
        }
    }

    void maybe_free() noexcept {
        if (owned || rx.inflight || tx.inflight) return;
        disarm();
        close_inner();
        delete this;
    }

    static void on_rx(void* p) {
        Engine* e = static_cast<Op*>(static_cast<IoOp*>(p))->eng;
        e->rx.inflight = false;
        e->rx_received();
        if (e->closed) {
            e->maybe_free();
            return;
        }
        e->progress();
    }

    static void on_tx(void* p) {
        Engine* e = static_cast<Op*>(static_cast<IoOp*>(p))->eng;
        e->tx.inflight = false;
        e->tx_sent();
        e->flush();
        if (e->closed) {
            // Flushing what was written before close() (and the close_notify): close once sent.
            if (!e->tx.inflight) {
                e->disarm();
                e->close_inner();
            }
            e->maybe_free();
            return;
        }
        e->progress();
    }

    void progress() {
        try {
            if (hs_op != nullptr) step_handshake(false);
            if (read_op != nullptr) step_read(false);
            if (send_op != nullptr) step_send(false);
        } catch (...) {
            // Out of memory making an exception: fail what waits.
            if (hs_op != nullptr) finish(hs_op, -ENOMEM, false);
            if (read_op != nullptr) finish(read_op, -ENOMEM, false);
            if (send_op != nullptr) finish(send_op, -ENOMEM, false);
        }
    }

    void close() noexcept {
        if (closed) return;
        closed = true;
        try {
            if (hs_op != nullptr) finish(hs_op, -EBADF, false);
            if (read_op != nullptr) finish(read_op, -EBADF, false);
            if (send_op != nullptr) finish(send_op, -EBADF, false);
        } catch (...) {
        }
        if (rx.inflight && rx.state == IoState::pending && inner->cancel(*loop, rx)) rx.inflight = false;
        if (loop == nullptr || loop->is_closed()) {
            close_inner();
            return;
        }
        if (handshake_done && !inner_closed && send_err == 0) {
            // close_notify, best effort: queued behind what is still to be sent.
            ERR_clear_error();
            SSL_shutdown(ssl);
            ERR_clear_error();
            flush();
        }
        if (!tx.inflight) {
            close_inner();
            return;
        }
        arm_shutdown_timer();
    }

    /// The shutdown timer's callback. Destroyed without having run while still armed (not
    /// disarmed), it was dropped by the loop's close(): the flush will never complete either (its
    /// completion is dropped or will never come), so the engine closes its socket now, withdraws
    /// what it still has in flight and, once nothing owns it, frees itself. (Found under seeded
    /// chaos: a TLS stream closed with unsent data when the loop closed kept its descriptor.)
    struct ShutdownTimer {
        Engine* e;
        explicit ShutdownTimer(Engine* engine) noexcept : e(engine) {}
        ShutdownTimer(ShutdownTimer&& o) noexcept : e(std::exchange(o.e, nullptr)) {}
        ShutdownTimer& operator=(ShutdownTimer&&) = delete;
        void operator()() {
            Engine* engine = std::exchange(e, nullptr);
            engine->timer_armed = false;
            engine->shutdown_timed_out = true;
            engine->close_inner();
        }
        ~ShutdownTimer() {
            if (e != nullptr && e->timer_armed) e->loop_dropped_timer();
        }
    };

    void loop_dropped_timer() noexcept {
        timer_armed = false;
        for (Op* op : {&rx, &tx}) {
            if (!op->inflight) continue;
            if (op->state == IoState::pending && loop != nullptr) inner->cancel(*loop, *op);
            op->inflight = false;
        }
        close_inner();
        maybe_free();
    }

    /// A peer that never reads must not keep the socket open for ever: the flush that close()
    /// starts (the stream's buffer, then ours and close_notify) gives up after the shutdown
    /// timeout. Closing the inner transport fails tx with EBADF, which fails the stream's flush.
    void arm_shutdown_timer() noexcept {
        if (timer_armed || inner_closed || loop == nullptr || loop->is_closed()) return;
        try {
            shutdown_timer = loop->call_later(shutdown_timeout, ShutdownTimer(this));
            timer_armed = true;
        } catch (...) {
            close_inner();  // (out of memory: no flush)
        }
    }
};

// ---- the engine's BIOs ----
//
// The read BIO hands OpenSSL what rx received (empty: "retry", so SSL_ERROR_WANT_READ; the peer's
// EOF is the engine's peer_eof, as with a memory BIO whose EOF return is -1); the write BIO appends
// to tx_pending (after sending what it can at once when nothing is queued) and never refuses (the
// engine bounds it: kHigh). BIO data is the Engine, or null
// once it is gone (then every call fails).

namespace {

int engine_bio_read(BIO* b, char* out, std::size_t n, std::size_t* got) {
    BIO_clear_retry_flags(b);
    auto* e = static_cast<TlsTransport::Engine*>(BIO_get_data(b));
    if (e == nullptr) return 0;
    const std::size_t have = e->rx_len - e->rx_off;
    if (have == 0) {
        if (e->recv_direct && !e->rx.inflight && !e->peer_eof && e->inner_err == 0 && !e->inner_closed &&
            e->loop != nullptr && !e->loop->is_closed()) {
            // Straight from the socket into OpenSSL's buffer (no copy out of rxbuf).
            const std::int64_t r = e->inner->try_recv(*e->loop, out, n);
            e->rx_ready = r > 0 && static_cast<std::size_t>(r) == n;  // (short: drained)
            if (r > 0) {
                e->small_rx = static_cast<std::size_t>(r) < kSmallRx;
                *got = static_cast<std::size_t>(r);
                return 1;
            }
            if (r == 0)
                e->peer_eof = true;  // (reported by the engine, as with rxbuf: retry, then EOF)
            else if (r != -EAGAIN)
                e->inner_err = static_cast<int>(-r);
        }
        BIO_set_retry_read(b);
        return 0;
    }
    const std::size_t k = n < have ? n : have;
    std::memcpy(out, e->rxbuf.get() + e->rx_off, k);
    e->rx_off += k;  // (pull() reuses the space, never while rx is in flight into it)
    *got = k;
    return 1;
}

int engine_bio_write(BIO* b, const char* in, std::size_t n, std::size_t* written) {
    BIO_clear_retry_flags(b);
    auto* e = static_cast<TlsTransport::Engine*>(BIO_get_data(b));
    if (e == nullptr) return 0;
    std::size_t sent = 0;
    if (e->send_direct && e->backlog() == 0 && !e->tx.inflight && !e->inner_closed && e->send_err == 0 && e->loop != nullptr &&
        !e->loop->is_closed()) {
        // Nothing queued ahead: send straight from OpenSSL's record buffer, as a socket BIO
        // would, with the one send(2) flush() would make anyway, and copy only what the socket
        // did not take. (A 16 KiB record is otherwise copied once more, into tx_pending.)
        // Once per SSL_write of one record only: a handshake flight or a write of several
        // records is several BIO writes, which one send after the SSL call carries together.
        e->send_direct = false;
        const std::int64_t r = e->inner->try_send(*e->loop, in, n);
        if (r < 0) {
            // As a failed tx: the error shows on the next send; the SSL call itself succeeded.
            e->send_err = static_cast<int>(-r);
            *written = n;
            return 1;
        }
        sent = static_cast<std::size_t>(r);
    }
    try {
        if (sent < n) e->tx_pending.insert(e->tx_pending.end(), in + sent, in + n);
    } catch (...) {
        return 0;  // out of memory: the SSL call fails
    }
    *written = n;
    return 1;
}

long engine_bio_ctrl(BIO* b, int cmd, long, void*) {
    auto* e = static_cast<TlsTransport::Engine*>(BIO_get_data(b));
    switch (cmd) {
        case BIO_CTRL_FLUSH:
            return 1;
        case BIO_CTRL_PENDING:  // bytes readable from this BIO
            return e != nullptr && b == e->rbio ? static_cast<long>(e->rx_len - e->rx_off) : 0;
        case BIO_CTRL_WPENDING:  // bytes written, not yet sent
            return e != nullptr && b == e->wbio ? static_cast<long>(e->backlog()) : 0;
        default:
            return 0;
    }
}

BIO_METHOD* engine_bio_method() {
    static BIO_METHOD* const method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "asyncio TLS engine");
        if (m == nullptr) return m;
        BIO_meth_set_read_ex(m, &engine_bio_read);
        BIO_meth_set_write_ex(m, &engine_bio_write);
        BIO_meth_set_ctrl(m, &engine_bio_ctrl);
        BIO_meth_set_create(m, [](BIO* b) {
            BIO_set_init(b, 1);
            return 1;
        });
        return m;
    }();
    return method;
}

}  // namespace

TlsTransport::TlsTransport(std::unique_ptr<Transport> inner, const ssl::Context& ctx, bool server,
                           const std::string& server_hostname, std::chrono::duration<double> shutdown_timeout)
    : e_(new Engine(std::move(inner), ctx, shutdown_timeout)) {
    Engine& e = *e_;
    e.session->hostname = server_hostname;
    e.session->server = server;
    e.ssl = e.session->ssl = SSL_new(static_cast<SSL_CTX*>(ctx.native_handle()));
    BIO_METHOD* method = engine_bio_method();
    e.rbio = method != nullptr ? BIO_new(method) : nullptr;
    e.wbio = method != nullptr ? BIO_new(method) : nullptr;
    if (e.ssl == nullptr || e.rbio == nullptr || e.wbio == nullptr) {
        BIO_free(e.rbio);
        BIO_free(e.wbio);
        e.rbio = e.wbio = nullptr;
        delete e_;
        throw ssl::detail::error_from_queue("SSL_new failed");
    }
    BIO_set_data(e.rbio, &e);
    BIO_set_data(e.wbio, &e);
    SSL_set_bio(e.ssl, e.rbio, e.wbio);
    // Read-ahead: OpenSSL takes all the ciphertext rxbuf holds in one BIO read (one copy, one
    // call per batch) instead of a record header, then its body, in two. The session owns the
    // byte stream to its end (no unwrap to plaintext), so nothing past it can be swallowed.
    SSL_set_read_ahead(e.ssl, 1);
    e.recv_direct = e.inner->has_try_recv();
    SSL_set_app_data(e.ssl, e.session.get());
    if (server) {
        SSL_set_accept_state(e.ssl);
    } else {
        SSL_set_connect_state(e.ssl);
        if (!server_hostname.empty()) {
            const bool ip = is_ip_address(server_hostname);
            if (!ip) SSL_set_tlsext_host_name(e.ssl, server_hostname.c_str());  // SNI (never for an IP)
            if (ctx.check_hostname()) {
                X509_VERIFY_PARAM* param = SSL_get0_param(e.ssl);
                X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_hostname.c_str())
                                  : X509_VERIFY_PARAM_set1_host(param, server_hostname.c_str(), 0);
                if (ok != 1) {
                    delete e_;
                    throw ssl::detail::error_from_queue("invalid server_hostname");
                }
            }
        }
    }
}

TlsTransport::~TlsTransport() {
    e_->owned = false;
    e_->close();
    // Operations that will never complete: their loop is gone or closed.
    for (Engine::Op* op : {&e_->rx, &e_->tx}) {
        if (!op->inflight) continue;
        if (op->state == IoState::detached || e_->loop == nullptr || e_->loop->is_closed()) {
            if (op->state == IoState::pending && e_->loop != nullptr) e_->inner->cancel(*e_->loop, *op);
            op->inflight = false;
        }
    }
    e_->maybe_free();
}

bool TlsTransport::start(EventLoop& loop, IoOp& op) {
    Engine& e = *e_;
    e.loop = &loop;
    if (e.closed) {
        op.result = -EBADF;
        op.state = IoState::done;
        return true;
    }
    op.state = IoState::pending;
    switch (op.kind) {
        case IoKind::connect:
            e.hs_op = &op;
            return e.step_handshake(true);
        case IoKind::send:
            e.send_op = &op;
            return e.step_send(true);
        default:
            e.read_op = &op;
            return e.step_read(true);
    }
}

bool TlsTransport::cancel(EventLoop& loop, IoOp& op) noexcept {
    Engine& e = *e_;
    (void)loop;
    IoOp** slot = &op == e.read_op ? &e.read_op : &op == e.send_op ? &e.send_op : &op == e.hs_op ? &e.hs_op : nullptr;
    if (slot == nullptr) return false;  // completed (its completion may be queued)
    *slot = nullptr;
    op.state = IoState::cancelled;
    // Withdraw the ciphertext receive nobody waits for any more (flow control); what it already
    // received stays in the read BIO for the next read.
    if (e.read_op == nullptr && e.hs_op == nullptr && e.rx.inflight && e.rx.state == IoState::pending &&
        e.inner->cancel(*e.loop, e.rx))
        e.rx.inflight = false;
    return true;
}

std::int64_t TlsTransport::try_send(EventLoop& loop, const char* p, std::size_t n) {
    Engine& e = *e_;
    e.loop = &loop;
    if (e.closed) return -EBADF;
    if (e.send_err != 0) return e.send_failure();
    if (e.backlog() > kHigh) return 0;
    return e.encrypt(p, n);
}

void TlsTransport::close() noexcept { e_->close(); }

void TlsTransport::begin_close() noexcept { e_->arm_shutdown_timer(); }

std::size_t TlsTransport::write_buffer_size() const noexcept { return e_->closed ? 0 : e_->backlog(); }

std::exception_ptr TlsTransport::error_for(std::int64_t result) const noexcept {
    return result == -EPROTO ? e_->error : nullptr;
}

namespace {

ssl::Certificate::Name name_of(X509_NAME* name) {
    ssl::Certificate::Name out;
    for (int i = 0; i < X509_NAME_entry_count(name); ++i) {
        X509_NAME_ENTRY* entry = X509_NAME_get_entry(name, i);
        const int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(entry));
        unsigned char* utf8 = nullptr;
        const int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry));
        if (len < 0) continue;
        out.emplace_back(nid != NID_undef ? OBJ_nid2ln(nid) : "?",
                         std::string(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len)));
        OPENSSL_free(utf8);
    }
    return out;
}

std::string asn1_time(const ASN1_TIME* t) {
    BIO* b = BIO_new(BIO_s_mem());
    if (b == nullptr) return {};
    ASN1_TIME_print(b, t);  // "Nov 30 14:48:06 2026 GMT", as Python's
    char* data = nullptr;
    const long n = BIO_get_mem_data(b, &data);
    std::string s(data, static_cast<std::size_t>(n > 0 ? n : 0));
    BIO_free(b);
    return s;
}

ssl::Certificate certificate_of(X509* cert) {
    ssl::Certificate out;
    out.subject = name_of(X509_get_subject_name(cert));
    out.issuer = name_of(X509_get_issuer_name(cert));
    out.version = static_cast<int>(X509_get_version(cert) + 1);
    if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)) {
        if (char* hex = BN_bn2hex(bn)) {
            out.serial_number = hex;
            OPENSSL_free(hex);
        }
        BN_free(bn);
    }
    out.not_before = asn1_time(X509_get0_notBefore(cert));
    out.not_after = asn1_time(X509_get0_notAfter(cert));
    if (auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr))) {
        for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
            const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
            if (g->type == GEN_DNS) {
                out.subject_alt_name.emplace_back(
                    "DNS", std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.dNSName)),
                                       static_cast<std::size_t>(ASN1_STRING_length(g->d.dNSName))));
            } else if (g->type == GEN_IPADD) {
                const int len = ASN1_STRING_length(g->d.iPAddress);
                char buf[INET6_ADDRSTRLEN] = {};
                if (::inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.iPAddress), buf, sizeof buf))
                    out.subject_alt_name.emplace_back("IP Address", buf);
            }
        }
        GENERAL_NAMES_free(names);
    }
    return out;
}

std::string join_name(const ssl::Certificate::Name& name, const char* sep) {
    std::string s;
    for (const auto& [k, v] : name) {
        if (!s.empty()) s += ", ";
        s.append(k).append(sep).append(v);
    }
    return s;
}

/// get_extra_info("peercert")'s flattened form (docs/design.md, Differences).
std::map<std::string, std::string> peer_cert_map(const ssl::Certificate& c) {
    std::map<std::string, std::string> out;
    out["subject"] = join_name(c.subject, "=");
    out["issuer"] = join_name(c.issuer, "=");
    out["version"] = std::to_string(c.version);
    out["serialNumber"] = c.serial_number;
    out["notBefore"] = c.not_before;
    out["notAfter"] = c.not_after;
    if (!c.subject_alt_name.empty()) out["subjectAltName"] = join_name(c.subject_alt_name, ":");
    return out;
}

}  // namespace

std::any TlsTransport::get_extra_info(std::string_view name, std::any default_value) {
    Engine& e = *e_;
    const ssl::SSLObject obj(e.session);
    if (name == "sslcontext") return e.session->ctx;
    if (name == "ssl_object") return obj;
    if (name == "peercert") {
        if (!e.handshake_done) return default_value;
        std::optional<ssl::Certificate> c = obj.getpeercert();
        return c ? peer_cert_map(*c) : std::map<std::string, std::string>();
    }
    if (name == "cipher") {
        std::optional<ssl::Cipher> c = obj.cipher();
        if (!c) return default_value;
        return std::tuple<std::string, std::string, int>(c->name, c->protocol, c->secret_bits);
    }
    if (name == "selected_alpn_protocol") {
        std::optional<std::string> p = obj.selected_alpn_protocol();
        if (!p) return default_value;
        return *p;
    }
    if (name == "compression") return default_value;
    return e.inner->get_extra_info(name, std::move(default_value));
}

}  // namespace asyncio::detail

// ---- SSLObject and the SNI callback ----

namespace asyncio::ssl {

std::optional<Certificate> SSLObject::getpeercert() const {
    if (!session_ || !session_->handshake_done) return std::nullopt;
    SSL* s = session_->ssl;
    X509* cert = SSL_get0_peer_certificate(s);
    if (cert == nullptr) return std::nullopt;
    // As Python: the details only of a certificate that was verified.
    if (SSL_get_verify_result(s) != X509_V_OK || SSL_get_verify_mode(s) == SSL_VERIFY_NONE) return std::nullopt;
    return asyncio::detail::certificate_of(cert);
}

std::string SSLObject::getpeercert_der() const {
    if (!session_ || !session_->handshake_done) return {};
    X509* cert = SSL_get0_peer_certificate(session_->ssl);
    if (cert == nullptr) return {};
    unsigned char* der = nullptr;
    const int n = i2d_X509(cert, &der);
    if (n < 0) return {};
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
    OPENSSL_free(der);
    return out;
}

std::optional<Cipher> SSLObject::cipher() const {
    if (!session_) return std::nullopt;
    const SSL_CIPHER* c = SSL_get_current_cipher(session_->ssl);
    if (c == nullptr) return std::nullopt;
    return Cipher{SSL_CIPHER_get_name(c), SSL_get_version(session_->ssl), SSL_CIPHER_get_bits(c, nullptr)};
}

std::optional<std::string> SSLObject::selected_alpn_protocol() const {
    if (!session_) return std::nullopt;
    const unsigned char* p = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(session_->ssl, &p, &len);
    if (len == 0) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(p), len);
}

std::optional<std::string> SSLObject::version() const {
    if (!session_ || !session_->handshake_done) return std::nullopt;
    return std::string(SSL_get_version(session_->ssl));
}

std::optional<std::string> SSLObject::server_hostname() const {
    if (!session_) return std::nullopt;
    if (!session_->server) {
        if (session_->hostname.empty()) return std::nullopt;
        return session_->hostname;
    }
    const char* name = SSL_get_servername(session_->ssl, TLSEXT_NAMETYPE_host_name);
    if (name == nullptr) return std::nullopt;
    return std::string(name);
}

bool SSLObject::server_side() const { return session_ && session_->server; }

Context SSLObject::context() const {
    if (!session_) throw ValueError("SSLObject has no session");
    return session_->ctx;
}

void SSLObject::set_context(const Context& ctx) {
    if (!session_) throw ValueError("SSLObject has no session");
    if (!session_->server || ctx.protocol() != Protocol::TLS_SERVER)
        throw ValueError("set_context needs a server session and a TLS_SERVER context");
    // As Python's SSLObject.context setter: the certificate and key (and session id context)
    // come from the new context; verification settings stay the session's.
    SSL_set_SSL_CTX(session_->ssl, static_cast<SSL_CTX*>(ctx.native_handle()));
    session_->ctx = ctx;
}

void* SSLObject::native_handle() const noexcept { return session_ ? session_->ssl : nullptr; }

namespace detail {

int sni_trampoline(SSL* s, int* alert, void* arg) {
    auto* impl = static_cast<ContextImpl*>(arg);
    auto* session = static_cast<Session*>(SSL_get_app_data(s));
    if (impl == nullptr || !impl->sni || session == nullptr) return SSL_TLSEXT_ERR_OK;
    const char* name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    try {
        SSLObject obj(session->shared_from_this());
        const Context self = session->original;  // (the callback may replace the function)
        const Context::SniCallback cb = impl->sni;
        const std::optional<AlertDescription> refuse = cb(obj, name != nullptr ? name : "", self);
        if (!refuse) return SSL_TLSEXT_ERR_OK;
        *alert = static_cast<int>(*refuse);
    } catch (...) {
        session->callback_error = std::current_exception();
        *alert = SSL_AD_HANDSHAKE_FAILURE;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

}  // namespace detail

}  // namespace asyncio::ssl

namespace asyncio::detail {

// ---- the handshake ----

namespace {

class HandshakeAwaiter : public TransportAwaiter {
public:
    explicit HandshakeAwaiter(TlsTransport& t) noexcept : TransportAwaiter(&t) { kind = IoKind::connect; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, unsigned line = __builtin_LINE()) {
        detail::note_await(h, line);
        return start(h, "SSL handshake");
    }
    void await_resume() {
        if (state == IoState::idle || state == IoState::cancelled) throw_cancelled(task());
        if (result < 0) {
            if (std::exception_ptr e = transport_->error_for(result)) std::rethrow_exception(e);
            throw std::system_error(static_cast<int>(-result), std::generic_category(), "SSL handshake");
        }
    }
};

Coroutine<> handshake_step(TlsTransport* t) { co_await HandshakeAwaiter(*t); }

/// Python's repr of a float number of seconds ("60.0", "0.3").
std::string seconds_repr(double s) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, s);
    std::string out(buf, r.ptr);
    if (out.find_first_of(".e") == std::string::npos) out += ".0";
    return out;
}

}  // namespace

void check_tls_timeouts(std::chrono::duration<double> handshake, std::chrono::duration<double> shutdown) {
    if (!(handshake.count() > 0))
        throw ValueError("ssl_handshake_timeout should be a positive number, got " + seconds_repr(handshake.count()));
    if (!(shutdown.count() > 0))
        throw ValueError("ssl_shutdown_timeout should be a positive number, got " + seconds_repr(shutdown.count()));
}

Coroutine<> tls_handshake(TlsTransport& t, std::chrono::duration<double> timeout) {
    bool timed_out = false;
    try {
        co_await wait_for(handshake_step(&t), timeout);
    } catch (const TimeoutError&) {
        timed_out = true;
    }
    if (timed_out)
        throw std::system_error(ECONNABORTED, std::generic_category(),
                                "SSL handshake is taking longer than " + seconds_repr(timeout.count()) +
                                    " seconds: aborting the connection");
}

}  // namespace asyncio::detail
