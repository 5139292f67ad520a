#include "asyncio/dns.hpp"

#include <netdb.h>

#include <cerrno>
#include <optional>

#include "asyncio/executor.hpp"

namespace asyncio {

namespace {

class GaiCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "getaddrinfo"; }
    std::string message(int code) const override { return ::gai_strerror(code); }
};

struct AddrInfoDeleter {
    void operator()(addrinfo* ai) const noexcept { ::freeaddrinfo(ai); }
};

bool is_numeric_port(const std::string& port) noexcept {
    if (port.empty()) return true;
    for (char c : port)
        if (c < '0' || c > '9') return false;
    return true;
}

/// getaddrinfo(3) itself. Returns nullopt instead of throwing when `numeric_only` and the host is
/// not numeric (EAI_NONAME).
std::optional<std::vector<AddrInfo>> resolve(const std::string& host, const std::string& port,
                                             int family, int type, int protocol, int flags,
                                             bool numeric_only) {
    addrinfo hints{};
    hints.ai_family = family;
    hints.ai_socktype = type;
    hints.ai_protocol = protocol;
    hints.ai_flags = flags | (numeric_only ? AI_NUMERICHOST | AI_NUMERICSERV : 0);
    addrinfo* res = nullptr;
    errno = 0;
    const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(),
                                 port.empty() ? nullptr : port.c_str(), &hints, &res);
    if (rc != 0) {
        if (numeric_only && rc == EAI_NONAME) return std::nullopt;
        if (rc == EAI_SYSTEM) throw std::system_error(errno, std::generic_category(), "getaddrinfo");
        throw GaiError(rc, "getaddrinfo(" + host + ", " + port + ")");
    }
    std::unique_ptr<addrinfo, AddrInfoDeleter> own(res);
    std::vector<AddrInfo> out;
    for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
        AddrInfo r;
        r.family = ai->ai_family;
        r.type = ai->ai_socktype;
        r.protocol = ai->ai_protocol;
        if (ai->ai_canonname != nullptr) r.canonname = ai->ai_canonname;
        r.address = Address(ai->ai_addr, ai->ai_addrlen);
        out.push_back(std::move(r));
    }
    return out;
}

}  // namespace

const std::error_category& gai_category() noexcept {
    static const GaiCategory category;
    return category;
}

Coroutine<std::vector<AddrInfo>> getaddrinfo(std::string host, std::string port, int family, int type,
                                             int protocol, int flags) {
    // A numeric host with a numeric port needs no lookup (and no thread). A service name may
    // read /etc/services: that goes to a thread like a host name.
    if (is_numeric_port(port)) {
        if (auto r = resolve(host, port, family, type, protocol, flags, true)) co_return std::move(*r);
    }
    co_return co_await to_thread(
        [](std::string h, std::string p, int fam, int ty, int proto, int fl) {
            return *resolve(h, p, fam, ty, proto, fl, false);
        },
        std::move(host), std::move(port), family, type, protocol, flags);
}

Coroutine<std::vector<AddrInfo>> getaddrinfo(std::string host, std::uint16_t port, int family, int type,
                                             int protocol, int flags) {
    return getaddrinfo(std::move(host), std::to_string(port), family, type, protocol, flags);
}

}  // namespace asyncio
