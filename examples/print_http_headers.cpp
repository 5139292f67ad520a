// asyncio's documentation example "Get HTTP headers" (Streams), over TLS for https URLs:
//
//   async def print_http_headers(url):
//       url = urllib.parse.urlsplit(url)
//       if url.scheme == 'https':
//           reader, writer = await asyncio.open_connection(url.hostname, 443, ssl=True)
//       else:
//           reader, writer = await asyncio.open_connection(url.hostname, 80)
//       query = (f"HEAD {url.path or '/'} HTTP/1.0\r\n"
//                f"Host: {url.hostname}\r\n"
//                f"\r\n")
//       writer.write(query.encode('latin-1'))
//       while True:
//           line = await reader.readline()
//           if not line:
//               break
//           line = line.decode('latin1').rstrip()
//           if line:
//               print(f'HTTP header> {line}')
//       writer.close()
//       await writer.wait_closed()
//
// ssl=True is create_default_context() (the system trust store). Usage:
//   print_http_headers URL [CAFILE]     e.g. https://example.com/ (CAFILE: trust only that CA)
#include <asyncio/asyncio.hpp>
#include <cstdio>
#include <string>

namespace {

struct Url {
    std::string scheme, host, path;
    std::uint16_t port = 0;
};

Url urlsplit(const std::string& s) {
    Url u;
    std::string rest = s;
    if (auto p = rest.find("://"); p != std::string::npos) {
        u.scheme = rest.substr(0, p);
        rest = rest.substr(p + 3);
    }
    const auto slash = rest.find('/');
    std::string netloc = rest.substr(0, slash);
    u.path = slash == std::string::npos ? "" : rest.substr(slash);
    if (auto colon = netloc.rfind(':'); colon != std::string::npos && netloc.find(']') == std::string::npos) {
        u.port = static_cast<std::uint16_t>(std::stoi(netloc.substr(colon + 1)));
        netloc = netloc.substr(0, colon);
    }
    u.host = netloc;
    return u;
}

asyncio::Coroutine<> print_http_headers(std::string url_text, std::string cafile) {
    const Url url = urlsplit(url_text);
    const bool https = url.scheme == "https";
    const std::uint16_t port = url.port != 0 ? url.port : (https ? 443 : 80);
    asyncio::ssl::Context ctx = asyncio::ssl::create_default_context(asyncio::ssl::Purpose::SERVER_AUTH, cafile);
    const asyncio::ssl::Context* tls = https ? &ctx : nullptr;  // (named: see docs/design.md, GCC 12)
    auto [reader, writer] = co_await asyncio::open_connection(url.host, port, {.ssl = tls});
    writer.write("HEAD " + (url.path.empty() ? std::string("/") : url.path) + " HTTP/1.0\r\nHost: " + url.host +
                 "\r\n\r\n");
    for (;;) {
        std::string line = co_await reader.readline();
        if (line.empty()) break;
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (!line.empty()) std::printf("HTTP header> %s\n", line.c_str());
    }
    writer.close();
    co_await writer.wait_closed();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s URL [CAFILE]\n", argv[0]);
        return 2;
    }
    try {
        asyncio::run(print_http_headers(argv[1], argc > 2 ? argv[2] : ""));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
