// asyncio-inspect's wire format, shared by the library's server (src/inspect.cpp) and the tool
// (tools/inspect_client.cpp). Text lines of tab-separated fields; a field's backslash, tab, CR and
// newline are escaped (\\ \t \r \n), so task names and function signatures pass unchanged.
//
//   tool   -> server: "asyncio-inspect <version>\n"
//   server -> tool:   "asyncio-inspect <version> OK\n" then the body, or
//                     "asyncio-inspect <version> ERR <message>\n" and nothing more.
//   body:  pid <pid>
//          loop <tid> ok <ns the snapshot held the loop>  | loop <tid> silent <ms waited>
//          task <id hex> task|future <name>     (after its loop line)
//          frame <function> <file> <line>        (after its task line, innermost first)
//          awaited_by <id hex>                   (after its task line)
//          end
// The first line keeps this shape in every version, so that a tool and a library of different
// versions can always tell each other so. Change kInspectVersion with any change to the body.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

namespace asyncio::detail {

inline constexpr int kInspectVersion = 1;
inline constexpr std::string_view kInspectMagic = "asyncio-inspect";
/// The abstract Unix socket ("\0" + this) a process serves when started with ASYNCIO_INSPECT=1.
inline std::string inspect_socket_name(long pid) { return "asyncio-inspect-" + std::to_string(pid); }

/// Fills addr with pid's abstract address (sun_path[0] == '\0', then the name, not terminated:
/// sun_path + 1 stays a C string because addr is zeroed) and returns its length.
inline socklen_t inspect_address(long pid, sockaddr_un& addr) {
    const std::string name = inspect_socket_name(pid);
    addr = sockaddr_un{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, name.data(), name.size());
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

inline void inspect_escape(std::string& out, std::string_view s) {
    for (char c : s) {
        switch (c) {
            case '\\': out += "\\\\"; break;
            case '\t': out += "\\t"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            default: out += c;
        }
    }
}

inline std::string inspect_unescape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            out += s[i];
            continue;
        }
        switch (s[++i]) {
            case 't': out += '\t'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            default: out += s[i];
        }
    }
    return out;
}

}  // namespace asyncio::detail
