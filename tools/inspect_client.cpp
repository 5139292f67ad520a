#include "inspect_client.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <ostream>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "inspect_protocol.hpp"

namespace asyncio::inspect_tool {
namespace {

using detail::kInspectMagic;
using detail::kInspectVersion;

std::string hex(std::uint64_t id) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(id));
    return buf;
}

std::string pid_text(pid_t pid) { return std::to_string(static_cast<long>(pid)); }

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

std::string os_error(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

/// The whole reply (the server closes after it), within the deadline.
std::string receive_all(int fd, pid_t pid, std::chrono::steady_clock::time_point deadline,
                        std::chrono::milliseconds timeout) {
    std::string reply;
    char buf[65536];
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd p{fd, POLLIN, 0};
        const int r = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count()) + 1) : 0;
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) throw InspectError(os_error("poll"));
        if (r == 0)
            throw InspectError("timeout: process " + pid_text(pid) + " did not answer within " +
                               std::to_string(timeout.count()) + " ms");
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0 && errno == ECONNRESET)
            throw InspectError("process " + pid_text(pid) + " closed the connection before it answered (did it exit?)");
        if (n < 0) throw InspectError("reading the answer of process " + pid_text(pid) + ": " + std::strerror(errno));
        if (n == 0) return reply;
        reply.append(buf, static_cast<std::size_t>(n));
    }
}

std::vector<std::string_view> split_tabs(std::string_view line) {
    std::vector<std::string_view> fields;
    for (;;) {
        const std::size_t tab = line.find('\t');
        fields.push_back(line.substr(0, tab));
        if (tab == std::string_view::npos) return fields;
        line.remove_prefix(tab + 1);
    }
}

long to_long(std::string_view s, int base = 10) {
    const std::string text(s);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(text.c_str(), &end, base);
    if (text.empty() || *end != '\0' || errno != 0) throw InspectError("malformed answer: bad number '" + text + "'");
    return static_cast<long>(v);
}

std::uint64_t to_id(std::string_view s) {
    const std::string text(s);
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text.c_str(), &end, 16);
    if (text.empty() || *end != '\0' || errno != 0) throw InspectError("malformed answer: bad id '" + text + "'");
    return v;
}

/// What Python's qualname would be: the function's (qualified) name without its return type,
/// parameters, qualifiers and GCC's "[with T = ...]".
std::string short_name(std::string_view signature) {
    // Anonymous scopes say nothing to a reader, and their spaces would cut the name below.
    std::string text(signature);
    for (std::string_view anon : {"{anonymous}::", "(anonymous namespace)::", "(anonymous class)::"}) {
        for (std::size_t at; (at = text.find(anon)) != std::string::npos;) text.erase(at, anon.size());
    }
    std::string_view f = text;
    if (const std::size_t with = f.find(" [with "); with != std::string_view::npos) f = f.substr(0, with);
    for (std::string_view q : {" const", " noexcept", " &&", " &", " volatile"}) {
        while (f.size() > q.size() && f.substr(f.size() - q.size()) == q) f.remove_suffix(q.size());
    }
    if (!f.empty() && f.back() == ')') {
        int depth = 0;
        for (std::size_t i = f.size(); i-- > 0;) {
            if (f[i] == ')') ++depth;
            if (f[i] == '(' && --depth == 0) {
                // "operator()" keeps its own parentheses.
                f = f.substr(0, i);
                break;
            }
        }
    }
    int angle = 0;
    for (std::size_t i = f.size(); i-- > 0;) {
        if (f[i] == '>') ++angle;
        if (f[i] == '<') --angle;
        if (f[i] == ' ' && angle == 0) return std::string(f.substr(i + 1));
    }
    return std::string(f);
}

/// Python's _format_stack_entry: "function file:line", or the function alone without a place.
std::string format_frame(const Frame& f) {
    std::string s = short_name(f.function);
    if (f.line == 0 && f.file.empty()) return s;
    return s + ' ' + f.file + ':' + std::to_string(f.line);
}

std::string join_functions(const std::vector<Frame>& stack) {
    std::string s;
    for (const Frame& f : stack) {
        if (!s.empty()) s += " -> ";
        s += short_name(f.function);
    }
    return s;
}

/// Python's f"{text:<width}".
void pad(std::string& out, const std::string& text, std::size_t width) {
    out += text;
    if (text.size() < width) out.append(width - text.size(), ' ');
}

struct Index {
    std::vector<const Task*> tasks;  // every task and future, loop by loop
    std::unordered_map<std::uint64_t, const Task*> by_id;
};

Index index(const Snapshot& s) {
    Index ix;
    for (const Loop& l : s.loops)
        for (const Task& t : l.tasks) {
            ix.tasks.push_back(&t);
            ix.by_id.emplace(t.id, &t);
        }
    return ix;
}

std::string label_of(const Task& t) { return t.is_task ? t.name : "Future " + hex(t.id); }

}  // namespace

Snapshot parse(std::string_view body) {
    Snapshot s;
    bool ended = false;
    while (!body.empty()) {
        const std::size_t nl = body.find('\n');
        if (nl == std::string_view::npos) throw InspectError("malformed answer: a line without its end");
        const std::string_view line = body.substr(0, nl);
        body.remove_prefix(nl + 1);
        const std::vector<std::string_view> f = split_tabs(line);
        if (f[0] == "pid" && f.size() == 2) {
            s.pid = to_long(f[1]);
        } else if (f[0] == "loop" && f.size() == 4) {
            Loop l;
            l.tid = to_long(f[1]);
            l.answered = f[2] == "ok";
            if (l.answered)
                l.stall_ns = to_long(f[3]);
            else
                l.silent_ms = to_long(f[3]);
            s.loops.push_back(std::move(l));
        } else if (f[0] == "task" && f.size() == 4 && !s.loops.empty()) {
            Task t;
            t.id = to_id(f[1]);
            t.is_task = f[2] == "task";
            t.name = detail::inspect_unescape(f[3]);
            s.loops.back().tasks.push_back(std::move(t));
        } else if (f[0] == "frame" && f.size() == 4 && !s.loops.empty() && !s.loops.back().tasks.empty()) {
            s.loops.back().tasks.back().stack.push_back(
                {detail::inspect_unescape(f[1]), detail::inspect_unescape(f[2]), static_cast<unsigned>(to_long(f[3]))});
        } else if (f[0] == "awaited_by" && f.size() == 2 && !s.loops.empty() && !s.loops.back().tasks.empty()) {
            s.loops.back().tasks.back().awaited_by.push_back(to_id(f[1]));
        } else if (f[0] == "end" && f.size() == 1) {
            ended = true;
        } else {
            throw InspectError("malformed answer: unexpected line '" + std::string(line.substr(0, 80)) + "'");
        }
    }
    if (!ended) throw InspectError("malformed answer: it ends before its 'end' line");
    return s;
}

Snapshot fetch(pid_t pid, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    if (pid <= 0) throw InspectError("no such process: " + pid_text(pid));
    if (::kill(pid, 0) != 0 && errno == ESRCH) throw InspectError("no such process: " + pid_text(pid));
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) throw InspectError(os_error("socket"));
    sockaddr_un addr{};
    const socklen_t addr_len = detail::inspect_address(pid, addr);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
        if (errno == ECONNREFUSED || errno == ENOENT)
            throw InspectError("process " + pid_text(pid) +
                               " does not serve asyncio-inspect: not a program linked with asyncio for C++, or not "
                               "started with ASYNCIO_INSPECT=1");
        throw InspectError("cannot connect to process " + pid_text(pid) + "'s asyncio-inspect socket: " +
                           std::strerror(errno));
    }
    const std::string request = std::string(kInspectMagic) + ' ' + std::to_string(kInspectVersion) + '\n';
    if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
        // A server that refuses (another user) may close before reading: its answer still says why.
        if (errno != EPIPE && errno != ECONNRESET) throw InspectError(os_error("sending the request"));
    }
    const std::string reply = receive_all(fd.get(), pid, deadline, timeout);

    const std::size_t nl = reply.find('\n');
    const std::string_view first = std::string_view(reply).substr(0, nl);
    const std::string magic = std::string(kInspectMagic) + ' ';
    if (nl == std::string::npos || first.substr(0, magic.size()) != magic)
        throw InspectError("process " + pid_text(pid) + " answered, but not as asyncio-inspect does");
    std::string_view rest = first.substr(magic.size());
    const std::size_t sp = rest.find(' ');
    const std::string version(rest.substr(0, sp));
    if (version != std::to_string(kInspectVersion))
        throw InspectError("process " + pid_text(pid) +
                           " uses a different library version: it serves asyncio-inspect protocol version " + version +
                           ", this tool speaks version " + std::to_string(kInspectVersion) +
                           " (use the asyncio-inspect installed with the program's library)");
    const std::string_view status = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
    if (status == "ERR permission denied")
        throw InspectError("permission denied: process " + pid_text(pid) +
                           " serves only its own user (run asyncio-inspect as that user, or as root)");
    if (status.substr(0, 4) == "ERR ")
        throw InspectError("process " + pid_text(pid) + " refused: " + std::string(status.substr(4)));
    if (status != "OK") throw InspectError("process " + pid_text(pid) + " answered an unknown status: " + std::string(status));
    return parse(std::string_view(reply).substr(nl + 1));
}

std::string format_table(const Snapshot& s) {
    const Index ix = index(s);
    std::string out;
    const auto row = [&out](std::initializer_list<std::string> cells) {
        // Python's f"{tid:<10} {task_id:<20} {name:<20} {stack:<50} {chain:<50} {awaiter:<15} {id:<15}"
        static constexpr std::size_t widths[] = {10, 20, 20, 50, 50, 15, 15};
        std::size_t i = 0;
        for (const std::string& cell : cells) {
            if (i > 0) out += ' ';
            pad(out, cell, widths[i++]);
        }
        out += '\n';
    };
    row({"tid", "task id", "task name", "coroutine stack", "awaiter chain", "awaiter name", "awaiter id"});
    out.append(180, '-');
    out += '\n';
    for (const Loop& l : s.loops) {
        const std::string tid = std::to_string(l.tid);
        for (const Task& t : l.tasks) {
            if (!t.is_task) continue;  // a future is not a row: it shows as what its awaiter waits on
            const std::string stack = join_functions(t.stack);
            if (t.awaited_by.empty()) {
                row({tid, hex(t.id), t.name, stack, "", "", "0x0"});
                continue;
            }
            for (std::uint64_t a : t.awaited_by) {
                const auto it = ix.by_id.find(a);
                const std::string chain = it != ix.by_id.end() ? join_functions(it->second->stack) : "";
                const std::string name = it != ix.by_id.end() ? label_of(*it->second) : "Unknown";
                row({tid, hex(t.id), t.name, stack, chain, name, hex(a)});
            }
        }
    }
    return out;
}

std::string format_tree(const Snapshot& s) {
    const Index ix = index(s);
    // Python's _index: the awaits (parent, parent's stack, child), each task's own stack.
    struct Await {
        std::uint64_t parent;
        const std::vector<Frame>* stack;
        std::uint64_t child;
    };
    static const std::vector<Frame> no_stack;
    std::vector<Await> awaits;
    for (const Task* t : ix.tasks)
        for (std::uint64_t a : t->awaited_by) {
            const auto it = ix.by_id.find(a);
            awaits.push_back({a, it != ix.by_id.end() ? &it->second->stack : &no_stack, t->id});
        }

    // Cycles in the task-to-task graph (_find_cycles: depth-first, back edges), iteratively.
    std::vector<std::uint64_t> parents;
    std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> graph;
    for (const Await& a : awaits) {
        auto [it, fresh] = graph.try_emplace(a.parent);
        if (fresh) parents.push_back(a.parent);
        if (std::find(it->second.begin(), it->second.end(), a.child) == it->second.end()) it->second.push_back(a.child);
    }
    enum Color { kWhite, kGrey, kBlack };
    std::unordered_map<std::uint64_t, Color> color;
    std::vector<std::vector<std::uint64_t>> cycles;
    for (std::uint64_t start : parents) {
        if (color[start] != kWhite) continue;
        std::vector<std::pair<std::uint64_t, std::size_t>> path{{start, 0}};
        color[start] = kGrey;
        while (!path.empty()) {
            auto& [v, next] = path.back();
            const auto g = graph.find(v);
            if (g == graph.end() || next == g->second.size()) {
                color[v] = kBlack;
                path.pop_back();
                continue;
            }
            const std::uint64_t w = g->second[next++];
            if (color[w] == kWhite) {
                color[w] = kGrey;
                path.emplace_back(w, 0);
            } else if (color[w] == kGrey) {
                std::vector<std::uint64_t> cycle;
                std::size_t i = 0;
                while (path[i].first != w) ++i;
                for (; i < path.size(); ++i) cycle.push_back(path[i].first);
                cycle.push_back(w);
                cycles.push_back(std::move(cycle));
            }
        }
    }
    if (!cycles.empty()) {
        std::string msg = "ERROR: await-graph contains cycles - cannot print a tree!\n\n";
        for (const auto& c : cycles) {
            msg += "cycle: ";
            for (std::size_t i = 0; i < c.size(); ++i) {
                if (i > 0) msg += " \u2192 ";
                const auto it = ix.by_id.find(c[i]);
                msg += it != ix.by_id.end() ? label_of(*it->second) : hex(c[i]);
            }
            msg += '\n';
        }
        throw CycleError(msg);
    }

    // Python's _build_tree: task nodes, and coroutine nodes shared by equal frames under one parent.
    struct Node {
        std::string label;  // with its flag: "(T) name", "(F) Future 0x...", " frame"
        std::vector<std::size_t> kids;
        std::map<std::string, std::size_t> frames;
        bool is_child = false;
    };
    std::vector<Node> nodes;
    std::unordered_map<std::uint64_t, std::size_t> task_node;
    const auto task_of = [&](std::uint64_t id) {
        const auto [it, fresh] = task_node.try_emplace(id, nodes.size());
        if (fresh) {
            const auto t = ix.by_id.find(id);
            const bool future = t != ix.by_id.end() && !t->second->is_task;
            nodes.push_back({std::string(future ? "(F) " : "(T) ") + (t != ix.by_id.end() ? label_of(*t->second) : hex(id)),
                             {}, {}, false});
        }
        return it->second;
    };
    for (const Task* t : ix.tasks) task_of(t->id);
    const auto frame_under = [&](std::size_t parent, const Frame& f) {
        const std::string text = format_frame(f);
        const auto found = nodes[parent].frames.find(text);
        if (found != nodes[parent].frames.end()) return found->second;
        const std::size_t n = nodes.size();
        nodes.push_back({" " + text, {}, {}, true});  // Python's empty cor_emoji, then a space
        nodes[parent].kids.push_back(n);
        nodes[parent].frames.emplace(text, n);
        return n;
    };
    std::unordered_set<std::uint64_t> awaiting;
    for (const Await& a : awaits) {
        awaiting.insert(a.parent);
        std::size_t cur = task_of(a.parent);
        for (auto f = a.stack->rbegin(); f != a.stack->rend(); ++f) cur = frame_under(cur, *f);
        const std::size_t child = task_of(a.child);
        if (std::find(nodes[cur].kids.begin(), nodes[cur].kids.end(), child) == nodes[cur].kids.end())
            nodes[cur].kids.push_back(child);
        nodes[child].is_child = true;
    }
    for (const Task* t : ix.tasks) {
        if (awaiting.count(t->id) != 0) continue;
        std::size_t cur = task_node.at(t->id);
        for (auto f = t->stack.rbegin(); f != t->stack.rend(); ++f) cur = frame_under(cur, *f);
    }

    // Python's render, iteratively (an await chain may be deeper than a thread's stack allows).
    std::string out;
    struct Pending {
        std::size_t node;
        std::string prefix;
        bool last;
    };
    const std::size_t count = nodes.size();
    for (std::size_t root = 0; root < count; ++root) {
        if (nodes[root].is_child) continue;
        std::vector<Pending> todo{{root, "", true}};
        while (!todo.empty()) {
            Pending p = std::move(todo.back());
            todo.pop_back();
            out += p.prefix + (p.last ? "\u2514\u2500\u2500 " : "\u251c\u2500\u2500 ") + nodes[p.node].label + '\n';
            const std::string prefix = p.prefix + (p.last ? "    " : "\u2502   ");
            const auto& kids = nodes[p.node].kids;
            for (std::size_t i = kids.size(); i-- > 0;) todo.push_back({kids[i], prefix, i + 1 == kids.size()});
        }
    }
    return out;
}

std::string format_silent_loops(const Snapshot& s) {
    std::string out;
    for (const Loop& l : s.loops)
        if (!l.answered)
            out += "loop on thread " + std::to_string(l.tid) + " did not answer within " + std::to_string(l.silent_ms) +
                   " ms (blocked, or not running)\n";
    return out;
}

int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
    const char* const usage =
        "usage: asyncio-inspect {ps,pstree} [--timing] PID\n"
        "\n"
        "Show every task of every event loop of a running program (linked with asyncio for C++ and\n"
        "started with ASYNCIO_INSPECT=1 in its environment).\n"
        "\n"
        "  ps      a table: tid, task id, task name, coroutine stack, awaiter chain, awaiter name, awaiter id\n"
        "  pstree  the tree of tasks and the coroutines between them\n"
        "  --timing  also print (on stderr) how long each loop was held and the whole request took\n";
    std::string command;
    bool timing = false;
    const char* pid_arg = nullptr;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            out << usage;
            return 0;
        }
        if (a == "--timing") {
            timing = true;
        } else if (command.empty()) {
            command = a;
        } else if (pid_arg == nullptr) {
            pid_arg = argv[i];
        } else {
            err << "asyncio-inspect: unexpected argument '" << a << "'\n" << usage;
            return 2;
        }
    }
    if (command != "ps" && command != "pstree") {
        err << (command.empty() ? std::string("asyncio-inspect: no command given\n")
                                : "asyncio-inspect: unknown command '" + command + "'\n")
            << usage;
        return 2;
    }
    long pid = 0;
    try {
        if (pid_arg == nullptr) throw InspectError("");
        pid = to_long(pid_arg);
        if (pid <= 0) throw InspectError("");
    } catch (const InspectError&) {
        err << "asyncio-inspect: PID must be a positive process id" << (pid_arg ? std::string(", not '") + pid_arg + "'" : "")
            << '\n'
            << usage;
        return 2;
    }
    try {
        const auto begin = std::chrono::steady_clock::now();
        const Snapshot s = fetch(static_cast<pid_t>(pid), std::chrono::seconds(5));
        out << (command == "ps" ? format_table(s) : format_tree(s)) << format_silent_loops(s);
        if (timing) {
            for (const Loop& l : s.loops)
                if (l.answered)
                    err << "loop on thread " << l.tid << ": " << l.tasks.size() << " tasks, the snapshot held the loop "
                        << static_cast<double>(l.stall_ns) / 1e6 << " ms\n";
            err << "asyncio-inspect: " << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count()
                << " ms in all\n";
        }
        return 0;
    } catch (const CycleError& e) {
        err << e.what();
        return 1;
    } catch (const InspectError& e) {
        err << "asyncio-inspect: " << e.what() << '\n';
        return 1;
    }
}

}  // namespace asyncio::inspect_tool
