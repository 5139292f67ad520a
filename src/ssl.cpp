// ssl::Context (Python's SSLContext) on an OpenSSL SSL_CTX, and the SSL errors.
#include "asyncio/ssl.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "asyncio/exceptions.hpp"
#include "tls_transport.hpp"

namespace asyncio::ssl {

namespace {

class Category final : public std::error_category {
public:
    const char* name() const noexcept override { return "ssl"; }
    std::string message(int ev) const override {
        switch (ev) {
            case SSL_ERROR_SSL: return "SSL error";
            case SSL_ERROR_SYSCALL: return "system error";
            case SSL_ERROR_ZERO_RETURN: return "TLS/SSL connection has been closed (EOF)";
            default: return "SSL error " + std::to_string(ev);
        }
    }
};

/// Python's library names (_ssl_data.h) for the libraries that show up in practice.
const char* library_name(int lib) noexcept {
    switch (lib) {
        case ERR_LIB_SSL: return "SSL";
        case ERR_LIB_X509: return "X509";
        case ERR_LIB_X509V3: return "X509V3";
        case ERR_LIB_PEM: return "PEM";
        case ERR_LIB_EVP: return "EVP";
        case ERR_LIB_ASN1: return "ASN1";
        case ERR_LIB_PKCS12: return "PKCS12";
        case ERR_LIB_RSA: return "RSA";
        case ERR_LIB_EC: return "EC";
        case ERR_LIB_BIO: return "BIO";
        case ERR_LIB_SYS: return "SYS";
        case ERR_LIB_CRYPTO: return "CRYPTO";
        case ERR_LIB_PROV: return "PROV";
        default: return nullptr;
    }
}

/// Python's reason mnemonic from OpenSSL's text: "wrong version number" -> WRONG_VERSION_NUMBER.
std::string mnemonic(const char* text) {
    std::string r;
    for (const char* p = text; *p != '\0'; ++p)
        r += (*p == ' ' || *p == '-') ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(*p)));
    return r;
}

std::shared_ptr<detail::ContextImpl> make_impl(Protocol protocol) {
    auto impl = std::make_shared<detail::ContextImpl>();
    impl->protocol = protocol;
    impl->ctx = SSL_CTX_new(protocol == Protocol::TLS_CLIENT ? TLS_client_method() : TLS_server_method());
    if (impl->ctx == nullptr) throw detail::error_from_queue("SSL_CTX_new failed");
    // Python's defaults for every SSLContext: TLS 1.2 minimum (3.10+), no compression, no
    // renegotiation, a fresh key per ECDH exchange; partial writes and a moving write buffer
    // so a write can be retried from a new place.
    SSL_CTX_set_min_proto_version(impl->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(impl->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                       SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_ECDH_USE);
    SSL_CTX_set_mode(impl->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (protocol == Protocol::TLS_CLIENT) {
        impl->check_hostname = true;
        impl->verify_mode = VerifyMode::CERT_REQUIRED;
        SSL_CTX_set_verify(impl->ctx, SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(impl->ctx, SSL_VERIFY_NONE, nullptr);
    }
    return impl;
}

int version_code(TLSVersion v) noexcept {
    switch (v) {
        case TLSVersion::TLSv1_2: return TLS1_2_VERSION;
        case TLSVersion::TLSv1_3: return TLS1_3_VERSION;
        default: return 0;  // OpenSSL: no limit
    }
}

TLSVersion version_of(long code, bool minimum) noexcept {
    if (code == TLS1_2_VERSION) return TLSVersion::TLSv1_2;
    if (code == TLS1_3_VERSION) return TLSVersion::TLSv1_3;
    return minimum ? TLSVersion::MINIMUM_SUPPORTED : TLSVersion::MAXIMUM_SUPPORTED;
}

int password_cb(char* buf, int size, int, void* userdata) {
    const auto* pw = static_cast<const std::string*>(userdata);
    if (pw == nullptr || pw->empty() || static_cast<int>(pw->size()) > size) return 0;
    std::memcpy(buf, pw->data(), pw->size());
    return static_cast<int>(pw->size());
}

/// std::system_error if path cannot be opened (Python: FileNotFoundError, ...).
void check_readable(const std::string& path) {
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
        std::fclose(f);
        return;
    }
    throw std::system_error(errno, std::generic_category(), path);
}

int alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void* arg) {
    const auto* impl = static_cast<const detail::ContextImpl*>(arg);
    unsigned char* o = nullptr;
    if (SSL_select_next_proto(&o, outlen, reinterpret_cast<const unsigned char*>(impl->alpn.data()),
                              static_cast<unsigned>(impl->alpn.size()), in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

}  // namespace

const std::error_category& error_category() noexcept {
    static const Category c;
    return c;
}

SSLError::SSLError(int ssl_errno, std::string library, std::string reason, std::string message)
    : std::system_error(ssl_errno, error_category()),
      library_(std::move(library)),
      reason_(std::move(reason)),
      message_(std::move(message)) {}

SSLCertVerificationError::SSLCertVerificationError(long verify_code, std::string verify_message)
    : SSLError(SSL_ERROR_SSL, "SSL", "CERTIFICATE_VERIFY_FAILED",
               "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: " + verify_message),
      verify_code_(verify_code),
      verify_message_(std::move(verify_message)) {}

namespace detail {

ContextImpl::~ContextImpl() { SSL_CTX_free(ctx); }

SSLError error_from_queue(const char* fallback) {
    // The earliest error is the cause; later ones are context (as Python, which reports the last
    // one pushed by the failing call: for one-error calls they are the same).
    unsigned long code = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) code = e;
    if (code == 0) return SSLError(SSL_ERROR_SSL, {}, {}, fallback);
    const char* lib = library_name(ERR_GET_LIB(code));
    const char* text = ERR_reason_error_string(code);
    std::string reason = text != nullptr ? mnemonic(text) : std::string();
    std::string msg;
    if (lib != nullptr) {
        msg.append("[").append(lib);
        if (!reason.empty()) msg.append(": ").append(reason);
        msg.append("] ").append(text != nullptr ? text : fallback);
    } else {
        msg = text != nullptr ? text : fallback;
    }
    return SSLError(SSL_ERROR_SSL, lib != nullptr ? lib : "", std::move(reason), std::move(msg));
}

}  // namespace detail

Context::Context(Protocol protocol) : impl_(make_impl(protocol)) {}

Protocol Context::protocol() const noexcept { return impl_->protocol; }

void Context::load_cert_chain(const std::string& certfile, const std::string& keyfile, const std::string& password) {
    ERR_clear_error();
    check_readable(certfile);
    if (!keyfile.empty()) check_readable(keyfile);
    SSL_CTX* ctx = impl_->ctx;
    std::string pw = password;
    SSL_CTX_set_default_passwd_cb(ctx, &password_cb);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, &pw);
    const bool ok = SSL_CTX_use_certificate_chain_file(ctx, certfile.c_str()) == 1 &&
                    SSL_CTX_use_PrivateKey_file(ctx, (keyfile.empty() ? certfile : keyfile).c_str(),
                                                SSL_FILETYPE_PEM) == 1 &&
                    SSL_CTX_check_private_key(ctx) == 1;
    SSL_CTX_set_default_passwd_cb(ctx, nullptr);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, nullptr);
    if (!ok) throw detail::error_from_queue("PEM lib");
}

void Context::load_verify_locations(const std::string& cafile, const std::string& capath, const std::string& cadata) {
    if (cafile.empty() && capath.empty() && cadata.empty())
        throw ValueError("cafile, capath and cadata cannot be all omitted");
    ERR_clear_error();
    if (!cafile.empty()) check_readable(cafile);
    if ((!cafile.empty() || !capath.empty()) &&
        SSL_CTX_load_verify_locations(impl_->ctx, cafile.empty() ? nullptr : cafile.c_str(),
                                      capath.empty() ? nullptr : capath.c_str()) != 1)
        throw detail::error_from_queue("unable to load trusted certificates");
    if (!cadata.empty()) {
        BIO* bio = BIO_new_mem_buf(cadata.data(), static_cast<int>(cadata.size()));
        if (bio == nullptr) throw std::bad_alloc();
        X509_STORE* store = SSL_CTX_get_cert_store(impl_->ctx);
        int loaded = 0;
        while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
            X509_STORE_add_cert(store, cert);
            X509_free(cert);
            ++loaded;
        }
        BIO_free(bio);
        ERR_clear_error();  // the end of the data reads as "no start line"
        if (loaded == 0) throw SSLError(SSL_ERROR_SSL, "X509", "NO_CERTIFICATE_OR_CRL_FOUND",
                                        "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found");
    }
}

void Context::set_default_verify_paths() {
    ERR_clear_error();
    if (SSL_CTX_set_default_verify_paths(impl_->ctx) != 1) throw detail::error_from_queue("set_default_verify_paths");
}

VerifyMode Context::verify_mode() const noexcept { return impl_->verify_mode; }

void Context::set_verify_mode(VerifyMode mode) {
    if (mode == VerifyMode::CERT_NONE && impl_->check_hostname)
        throw ValueError("Cannot set verify_mode to CERT_NONE when check_hostname is enabled.");
    impl_->verify_mode = mode;
    int flags = SSL_VERIFY_NONE;
    if (mode == VerifyMode::CERT_OPTIONAL) flags = SSL_VERIFY_PEER;
    if (mode == VerifyMode::CERT_REQUIRED) flags = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(impl_->ctx, flags, nullptr);
}

bool Context::check_hostname() const noexcept { return impl_->check_hostname; }

void Context::set_check_hostname(bool on) {
    if (on && impl_->verify_mode == VerifyMode::CERT_NONE) set_verify_mode(VerifyMode::CERT_REQUIRED);
    impl_->check_hostname = on;
}

TLSVersion Context::minimum_version() const noexcept {
    return version_of(SSL_CTX_get_min_proto_version(impl_->ctx), true);
}
TLSVersion Context::maximum_version() const noexcept {
    return version_of(SSL_CTX_get_max_proto_version(impl_->ctx), false);
}
void Context::set_minimum_version(TLSVersion v) { SSL_CTX_set_min_proto_version(impl_->ctx, version_code(v)); }
void Context::set_maximum_version(TLSVersion v) { SSL_CTX_set_max_proto_version(impl_->ctx, version_code(v)); }

void Context::set_ciphers(const std::string& ciphers) {
    ERR_clear_error();
    if (SSL_CTX_set_cipher_list(impl_->ctx, ciphers.c_str()) != 1) {
        ERR_clear_error();
        throw SSLError(SSL_ERROR_SSL, "", "", "No cipher can be selected.");  // Python's text
    }
}

void Context::set_alpn_protocols(const std::vector<std::string>& protocols) {
    std::string wire;
    for (const std::string& p : protocols) {
        if (p.empty() || p.size() > 255) throw ValueError("ALPN protocols must be 1 to 255 in length");
        wire += static_cast<char>(p.size());
        wire += p;
    }
    impl_->alpn = wire;
    if (impl_->protocol == Protocol::TLS_CLIENT) {
        SSL_CTX_set_alpn_protos(impl_->ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                                static_cast<unsigned>(wire.size()));
    } else {
        SSL_CTX_set_alpn_select_cb(impl_->ctx, &alpn_select, impl_.get());
    }
}

std::size_t Context::num_tickets() const noexcept { return SSL_CTX_get_num_tickets(impl_->ctx); }

void Context::set_num_tickets(long n) {
    if (n < 0) throw ValueError("value must be non-negative");  // Python's texts
    if (impl_->protocol != Protocol::TLS_SERVER) throw ValueError("SSLContext is not a server context.");
    if (SSL_CTX_set_num_tickets(impl_->ctx, static_cast<std::size_t>(n)) != 1)
        throw ValueError("failed to set num tickets.");
}

void Context::set_sni_callback(SniCallback callback) {
    if (impl_->protocol != Protocol::TLS_SERVER)
        throw ValueError("sni_callback cannot be set on TLS_CLIENT context");  // Python's text
    impl_->sni = std::move(callback);
    if (impl_->sni) {
        SSL_CTX_set_tlsext_servername_callback(impl_->ctx, &detail::sni_trampoline);
        SSL_CTX_set_tlsext_servername_arg(impl_->ctx, impl_.get());
    } else {
        SSL_CTX_set_tlsext_servername_callback(impl_->ctx, nullptr);
        SSL_CTX_set_tlsext_servername_arg(impl_->ctx, nullptr);
    }
}

void* Context::native_handle() const noexcept { return impl_->ctx; }

Context create_default_context(Purpose purpose, const std::string& cafile) {
    Context ctx(purpose == Purpose::SERVER_AUTH ? Protocol::TLS_CLIENT : Protocol::TLS_SERVER);
    if (!cafile.empty())
        ctx.load_verify_locations(cafile);
    else if (ctx.verify_mode() != VerifyMode::CERT_NONE)
        ctx.set_default_verify_paths();
    return ctx;
}

}  // namespace asyncio::ssl
