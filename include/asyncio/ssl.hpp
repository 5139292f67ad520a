// TLS, as Python's ssl module as far as asyncio uses it: ssl::Context (Python's SSLContext),
// create_default_context(), and the errors SSLError / SSLCertVerificationError. A context is
// handed to open_connection / start_server (streams.hpp, server.hpp):
//
//   asyncio::ssl::Context ctx = asyncio::ssl::create_default_context();   // system trust store
//   auto [reader, writer] = co_await asyncio::open_connection("example.com", 443, {.ssl = &ctx});
//
// OpenSSL 3 does the work (no OpenSSL header here: the context is a handle to a shared SSL_CTX).
// A Context is a cheap handle: copies share the same OpenSSL context, as two Python references to
// one SSLContext do; connections keep their own copy, so the caller's Context may go away once
// open_connection/start_server has been called. Loop thread only (settings changed while
// connections use the context apply to later connections, as in OpenSSL).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace asyncio::ssl {

/// Python's ssl.PROTOCOL_TLS_CLIENT / PROTOCOL_TLS_SERVER.
enum class Protocol { TLS_CLIENT, TLS_SERVER };
/// Python's ssl.Purpose: SERVER_AUTH makes a client context, CLIENT_AUTH a server context.
enum class Purpose { SERVER_AUTH, CLIENT_AUTH };
/// Python's ssl.VerifyMode.
enum class VerifyMode { CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED };
inline constexpr VerifyMode CERT_NONE = VerifyMode::CERT_NONE;
inline constexpr VerifyMode CERT_OPTIONAL = VerifyMode::CERT_OPTIONAL;
inline constexpr VerifyMode CERT_REQUIRED = VerifyMode::CERT_REQUIRED;
/// Python's ssl.TLSVersion (the versions OpenSSL 3 still offers by default).
enum class TLSVersion { MINIMUM_SUPPORTED, TLSv1_2, TLSv1_3, MAXIMUM_SUPPORTED };

/// Python's ssl.SSLError (an OSError there; a std::system_error here). what() is Python's str():
/// "[LIBRARY: REASON] reason text", without Python's "(_ssl.c:NNNN)" suffix. code() holds the
/// SSL error kind (1: SSL_ERROR_SSL, as Python's errno) in ssl::error_category().
class SSLError : public std::system_error {
public:
    SSLError(int ssl_errno, std::string library, std::string reason, std::string message);
    const char* what() const noexcept override { return message_.c_str(); }
    /// "SSL", "X509", "PEM", ... (Python's e.library); empty when OpenSSL gave none.
    const std::string& library() const noexcept { return library_; }
    /// "CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", ... (Python's e.reason).
    const std::string& reason() const noexcept { return reason_; }

private:
    std::string library_;
    std::string reason_;
    std::string message_;
};

/// Python's ssl.SSLCertVerificationError: "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify
/// failed: <verify_message>".
class SSLCertVerificationError : public SSLError {
public:
    SSLCertVerificationError(long verify_code, std::string verify_message);
    /// OpenSSL's X509_V_ERR_* code (62: hostname mismatch, 20: unable to get local issuer, ...).
    long verify_code() const noexcept { return verify_code_; }
    /// "Hostname mismatch, certificate is not valid for 'example.com'.", "self-signed
    /// certificate", "certificate has expired", ...
    const std::string& verify_message() const noexcept { return verify_message_; }

private:
    long verify_code_;
    std::string verify_message_;
};

/// The category of SSLError codes (the SSL_ERROR_* kinds).
const std::error_category& error_category() noexcept;

namespace detail {
struct ContextImpl;
struct Session;
}

class SSLObject;

/// Python's ssl.AlertDescription (the alerts an SNI callback is likely to send).
enum class AlertDescription : int {
    HANDSHAKE_FAILURE = 40,
    ACCESS_DENIED = 49,
    INTERNAL_ERROR = 80,
    UNRECOGNIZED_NAME = 112,
};

/// Python's ssl.SSLContext.
class Context {
public:
    /// Python's SSLContext(PROTOCOL_TLS_CLIENT): CERT_REQUIRED, check_hostname on, no CA loaded
    /// (call load_verify_locations or set_default_verify_paths). TLS_SERVER: CERT_NONE (no client
    /// certificate asked for), check_hostname off; load_cert_chain before serving.
    explicit Context(Protocol protocol);

    Protocol protocol() const noexcept;
    /// The certificate (chain) and its private key, PEM files. keyfile empty: the key is in
    /// certfile. password: for an encrypted key. std::system_error (ENOENT ...) if a file cannot be
    /// read, SSLError if it is not a valid certificate/key or they do not match.
    void load_cert_chain(const std::string& certfile, const std::string& keyfile = {},
                         const std::string& password = {});
    /// Trusted CA certificates: a PEM file (cafile), a hashed directory (capath), or PEM text
    /// (cadata). At least one. Errors as load_cert_chain.
    void load_verify_locations(const std::string& cafile = {}, const std::string& capath = {},
                               const std::string& cadata = {});
    /// The system trust store (OpenSSL's default paths; Debian: /etc/ssl/certs).
    void set_default_verify_paths();
    /// Python's load_default_certs() (the same as set_default_verify_paths() here).
    void load_default_certs() { set_default_verify_paths(); }

    VerifyMode verify_mode() const noexcept;
    /// ValueError "Cannot set verify_mode to CERT_NONE when check_hostname is enabled." as Python.
    void set_verify_mode(VerifyMode mode);
    bool check_hostname() const noexcept;
    /// Turning it on with CERT_NONE also sets CERT_REQUIRED (as Python).
    void set_check_hostname(bool on);
    TLSVersion minimum_version() const noexcept;
    TLSVersion maximum_version() const noexcept;
    void set_minimum_version(TLSVersion v);
    void set_maximum_version(TLSVersion v);
    /// OpenSSL cipher list (TLS 1.2 and below; TLS 1.3 suites are not affected, as Python).
    /// SSLError "No cipher can be selected." if nothing matches.
    void set_ciphers(const std::string& ciphers);
    /// ALPN protocols offered (client) or accepted (server), in order of preference.
    void set_alpn_protocols(const std::vector<std::string>& protocols);
    /// TLS 1.3 session tickets a server sends after each handshake (Python's num_tickets;
    /// OpenSSL's default, 2). Each costs the server an encryption and a record; a client that
    /// never resumes needs none. ValueError "value must be non-negative", and "SSLContext is not a
    /// server context." on a client context, as Python.
    std::size_t num_tickets() const noexcept;
    void set_num_tickets(long n);

    /// Python's SSLContext.sni_callback (server contexts): called during each handshake once the
    /// client's hello is read, with the session, the server name the client asked for ("" when it
    /// sent none: Python's None) and this context. It may switch the session to another server
    /// context (ssl_object.set_context(other): its certificate is the one sent), and returns
    /// nullopt to go on or an alert to refuse the handshake with. An exception out of it refuses
    /// with HANDSHAKE_FAILURE and goes to the loop's exception handler (Python: the unraisable
    /// hook). An empty function removes it. The context keeps the function: one that holds a
    /// copy of this same Context keeps both alive for ever (capture a reference instead).
    using SniCallback = std::function<std::optional<AlertDescription>(SSLObject& ssl_object,
                                                                      const std::string& server_name,
                                                                      const Context& ssl_context)>;
    void set_sni_callback(SniCallback callback);
    /// Python's set_servername_callback(cb) (deprecated there; the same as set_sni_callback).
    void set_servername_callback(SniCallback callback) { set_sni_callback(std::move(callback)); }

    /// The OpenSSL SSL_CTX* (cast it), for settings this class does not have.
    void* native_handle() const noexcept;

    // ---- internals ----
    explicit Context(std::shared_ptr<detail::ContextImpl> impl) noexcept : impl_(std::move(impl)) {}
    const std::shared_ptr<detail::ContextImpl>& impl() const noexcept { return impl_; }

private:
    std::shared_ptr<detail::ContextImpl> impl_;
};

/// Python's SSLSocket.getpeercert() dict, typed. Names are Python's: each relative distinguished
/// name as (long name, value), e.g. {"commonName", "localhost"}; subject_alt_name as (type, value):
/// {"DNS", "localhost"}, {"IP Address", "127.0.0.1"}; times as Python prints them
/// ("Nov 30 14:48:06 2026 GMT").
struct Certificate {
    using Name = std::vector<std::pair<std::string, std::string>>;
    Name subject;
    Name issuer;
    int version = 0;
    std::string serial_number;  // hex, as Python's "serialNumber"
    std::string not_before;
    std::string not_after;
    std::vector<std::pair<std::string, std::string>> subject_alt_name;
};

/// Python's SSLSocket.cipher() tuple: (name, protocol, secret bits).
struct Cipher {
    std::string name;      // "TLS_AES_256_GCM_SHA384"
    std::string protocol;  // "TLSv1.3"
    int secret_bits = 0;
};

/// Python's ssl.SSLObject: one TLS session (what get_extra_info("ssl_object") and
/// StreamWriter::ssl_object() give). A handle: copies share the session, which stays readable
/// after its connection is closed. Default-constructed: none (a plain connection).
class SSLObject {
public:
    SSLObject() noexcept = default;
    explicit SSLObject(std::shared_ptr<detail::Session> session) noexcept : session_(std::move(session)) {}
    explicit operator bool() const noexcept { return static_cast<bool>(session_); }

    /// The peer's certificate; nullopt when it sent none or it was not verified (CERT_NONE:
    /// Python gives {} there, None when there is none).
    std::optional<Certificate> getpeercert() const;
    /// The peer's certificate in DER (Python's getpeercert(binary_form=True)); empty if none.
    std::string getpeercert_der() const;
    /// nullopt before the handshake.
    std::optional<Cipher> cipher() const;
    std::optional<std::string> selected_alpn_protocol() const;
    /// "TLSv1.3", "TLSv1.2"; nullopt before the handshake.
    std::optional<std::string> version() const;
    /// Client: the name sent and checked. Server: the name the client sent (SNI); nullopt if none.
    std::optional<std::string> server_hostname() const;
    bool server_side() const;
    /// The session's context (after an SNI callback switched it: the new one).
    Context context() const;
    /// Switches the session to another context (in an SNI callback, as Python's
    /// ssl_object.context = ...). ValueError unless both are server contexts.
    void set_context(const Context& ctx);
    /// The OpenSSL SSL* (cast it).
    void* native_handle() const noexcept;

private:
    std::shared_ptr<detail::Session> session_;
};

/// Python's ssl.create_default_context(purpose, cafile=...): SERVER_AUTH (a client context):
/// CERT_REQUIRED, check_hostname on, the system trust store (or cafile only, when given), TLS 1.2
/// minimum. CLIENT_AUTH: a server context (call load_cert_chain).
Context create_default_context(Purpose purpose = Purpose::SERVER_AUTH, const std::string& cafile = {});

}  // namespace asyncio::ssl
