// Traces (asyncio/trace.hpp): a small program traced to a file, the file parsed as JSON (with the
// small parser below; tests/check_trace_json.cmake has python3 read one too), and the events it
// must hold checked in order: task creation before the first step, steps on the task's track,
// suspensions with their await site, I/O operations with fd and byte count, timers scheduled,
// fired and cancelled, completions by result, exception and cancellation.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "asyncio/asyncio.hpp"
#include "asyncio/trace.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using asyncio::Coroutine;
using asyncio_test::LeakChecked;
using asyncio_test::TempDir;

namespace {

// ---- a minimal JSON parser (RFC 8259, enough to reject what is not JSON) ----

struct Json;
using JsonArray = std::vector<Json>;
using JsonObject = std::map<std::string, Json>;
struct Json {
    std::variant<std::nullptr_t, bool, double, std::string, JsonArray, JsonObject> v;
    bool is_object() const { return std::holds_alternative<JsonObject>(v); }
    bool is_array() const { return std::holds_alternative<JsonArray>(v); }
    bool is_number() const { return std::holds_alternative<double>(v); }
    bool is_string() const { return std::holds_alternative<std::string>(v); }
    const JsonObject& obj() const { return std::get<JsonObject>(v); }
    const JsonArray& arr() const { return std::get<JsonArray>(v); }
    double num() const { return std::get<double>(v); }
    const std::string& str() const { return std::get<std::string>(v); }
    bool has(const std::string& k) const { return is_object() && obj().count(k) != 0; }
    const Json& operator[](const std::string& k) const { return obj().at(k); }
};

class Parser {
public:
    explicit Parser(const std::string& s) : s_(s) {}
    Json parse() {
        Json j = value();
        ws();
        if (i_ != s_.size()) fail("trailing characters");
        return j;
    }

private:
    [[noreturn]] void fail(const char* what) const {
        throw std::runtime_error(std::string("JSON: ") + what + " at offset " + std::to_string(i_));
    }
    void ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
    }
    char peek() {
        ws();
        if (i_ >= s_.size()) fail("unexpected end");
        return s_[i_];
    }
    void expect(char c) {
        if (peek() != c) fail("unexpected character");
        ++i_;
    }
    bool literal(const char* w) {
        const std::string word(w);
        if (s_.compare(i_, word.size(), word) != 0) return false;
        i_ += word.size();
        return true;
    }
    Json value() {
        const char c = peek();
        if (c == '{') return object();
        if (c == '[') return array();
        if (c == '"') return Json{string()};
        if (literal("true")) return Json{true};
        if (literal("false")) return Json{false};
        if (literal("null")) return Json{nullptr};
        return Json{number()};
    }
    Json object() {
        expect('{');
        JsonObject o;
        if (peek() == '}') {
            ++i_;
            return Json{std::move(o)};
        }
        for (;;) {
            if (peek() != '"') fail("object key");
            std::string k = string();
            expect(':');
            o[k] = value();
            if (peek() == ',') {
                ++i_;
                continue;
            }
            expect('}');
            return Json{std::move(o)};
        }
    }
    Json array() {
        expect('[');
        JsonArray a;
        if (peek() == ']') {
            ++i_;
            return Json{std::move(a)};
        }
        for (;;) {
            a.push_back(value());
            if (peek() == ',') {
                ++i_;
                continue;
            }
            expect(']');
            return Json{std::move(a)};
        }
    }
    std::string string() {
        expect('"');
        std::string out;
        while (i_ < s_.size() && s_[i_] != '"') {
            char c = s_[i_++];
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c == '\\') {
                if (i_ >= s_.size()) fail("bad escape");
                c = s_[i_++];
                switch (c) {
                    case '"': case '\\': case '/': out += c; break;
                    case 'n': out += '\n'; break;
                    case 't': out += '\t'; break;
                    case 'r': out += '\r'; break;
                    case 'b': out += '\b'; break;
                    case 'f': out += '\f'; break;
                    case 'u':
                        if (i_ + 4 > s_.size()) fail("bad \\u escape");
                        out += static_cast<char>(std::stoi(s_.substr(i_, 4), nullptr, 16));
                        i_ += 4;
                        break;
                    default: fail("bad escape");
                }
            } else {
                out += c;
            }
        }
        if (i_ >= s_.size()) fail("unterminated string");
        ++i_;
        return out;
    }
    double number() {
        const std::size_t start = i_;
        if (i_ < s_.size() && s_[i_] == '-') ++i_;
        if (i_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[i_]))) fail("value");
        while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.' ||
                                  s_[i_] == 'e' || s_[i_] == 'E' || s_[i_] == '+' || s_[i_] == '-'))
            ++i_;
        return std::stod(s_.substr(start, i_ - start));
    }
    const std::string& s_;
    std::size_t i_ = 0;
};

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

/// The events of a trace file, checked for the format's required fields.
std::vector<Json> load_events(const std::string& path) {
    const std::string text = read_file(path);
    Json root = Parser(text).parse();
    EXPECT_TRUE(root.is_object());
    EXPECT_TRUE(root.has("traceEvents"));
    std::vector<Json> events = root["traceEvents"].arr();
    for (const Json& e : events) {
        EXPECT_TRUE(e.has("ph") && e["ph"].is_string());
        EXPECT_TRUE(e.has("name") && e["name"].is_string());
        EXPECT_TRUE(e.has("pid") && e["pid"].is_number());
        EXPECT_TRUE(e.has("tid") && e["tid"].is_number());
        EXPECT_TRUE(e.has("ts") && e["ts"].is_number());
        if (e["ph"].str() == "X") {
            EXPECT_GE(e["dur"].num(), 0.0);
        }
    }
    return events;
}

/// The tid of the track whose thread_name starts with `prefix` (the last naming wins), or -1.
double track_of(const std::vector<Json>& events, const std::string& prefix) {
    double tid = -1;
    for (const Json& e : events)
        if (e["ph"].str() == "M" && e["name"].str() == "thread_name" &&
            e["args"]["name"].str().rfind(prefix, 0) == 0)
            tid = e["tid"].num();
    return tid;
}

/// Index of the first event after `from` with this ph/name (and on this tid if >= 0), or -1.
long find(const std::vector<Json>& events, const std::string& ph, const std::string& name, double tid = -1,
          long from = -1) {
    for (std::size_t i = static_cast<std::size_t>(from + 1); i < events.size(); ++i) {
        const Json& e = events[i];
        if (e["ph"].str() == ph && e["name"].str() == name && (tid < 0 || e["tid"].num() == tid))
            return static_cast<long>(i);
    }
    return -1;
}

long count(const std::vector<Json>& events, const std::string& ph, const std::string& name, double tid = -1) {
    long n = 0;
    for (long i = find(events, ph, name, tid); i >= 0; i = find(events, ph, name, tid, i)) ++n;
    return n;
}

// ---- the traced program ----

// The line of sleeper's co_await, for the "at" of its suspension (a constant: the scenario runs on
// several threads at once).
constexpr unsigned kSleeperAwaitLine = __LINE__ + 3;

Coroutine<int> sleeper() {
    co_await asyncio::sleep(10ms);
    co_return 7;
}

Coroutine<> echo_once(asyncio::Socket& s) {
    std::string data = co_await asyncio::sock_recv(s, 100);
    co_await asyncio::sock_sendall(s, data);
}

Coroutine<> forever() { co_await asyncio::sleep(1h); }

Coroutine<> raiser() {
    co_await asyncio::sleep(0s);
    throw asyncio::ValueError("boom");
}

struct Fds {
    int a = -1;
    int b = -1;
};

Coroutine<int> scenario(Fds& fds) {
    auto t_sleep = asyncio::create_task(sleeper(), "sleeper");
    auto [a, b] = asyncio::socketpair();
    fds = {a.fileno(), b.fileno()};
    auto t_echo = asyncio::create_task(echo_once(b), "echo");
    auto t_victim = asyncio::create_task(forever(), "victim");
    auto t_raise = asyncio::create_task(raiser(), "raiser");
    co_await asyncio::sock_sendall(a, std::string("ping"));
    const std::string back = co_await asyncio::sock_recv(a, 100);
    if (back != "ping") throw std::runtime_error("echo: " + back);
    co_await t_echo;
    t_victim.cancel();
    try {
        co_await t_victim;
    } catch (const asyncio::CancelledError&) {
    }
    try {
        co_await t_raise;
    } catch (const asyncio::ValueError&) {
    }
    co_return co_await t_sleep;
}

class Trace : public LeakChecked {};

/// Checks what the scenario must have written to `path`.
void check_scenario_trace(const std::string& path, const Fds& fds) {
    const std::vector<Json> ev = load_events(path);
    ASSERT_FALSE(ev.empty());
    EXPECT_EQ(track_of(ev, "event loop"), 1);
    const double sleeper_tid = track_of(ev, "sleeper");
    const double echo_tid = track_of(ev, "echo");
    const double victim_tid = track_of(ev, "victim");
    const double raiser_tid = track_of(ev, "raiser");
    const double main_tid = track_of(ev, "scenario");
    for (double tid : {sleeper_tid, echo_tid, victim_tid, raiser_tid, main_tid}) {
        ASSERT_GT(tid, 1) << "a task has no track of its own";
        // Created before its first step, and every step on its track.
        const long created = find(ev, "i", "create", tid);
        const long first_step = find(ev, "X", "step", tid);
        ASSERT_GE(created, 0);
        ASSERT_GT(first_step, created);
        EXPECT_LE(ev[created]["ts"].num(), ev[first_step]["ts"].num());
        EXPECT_EQ(count(ev, "f", "spawn", tid), 1) << "the arrow from where it was made";
        // Exactly one completion, after every step began.
        ASSERT_EQ(count(ev, "i", "done", tid), 1);
        const long done = find(ev, "i", "done", tid);
        for (long s = find(ev, "X", "step", tid); s >= 0; s = find(ev, "X", "step", tid, s))
            EXPECT_LE(ev[s]["ts"].num(), ev[done]["ts"].num());
    }
    // The sleeper: two steps around its sleep, the wait shown between them, and its result.
    EXPECT_EQ(count(ev, "X", "step", sleeper_tid), 2);
    const long susp = find(ev, "i", "suspend", sleeper_tid);
    ASSERT_GE(susp, 0);
    EXPECT_EQ(ev[susp]["args"]["await"].str(), "sleep()");
    EXPECT_EQ(ev[susp]["args"]["coro"].str().find("sleeper") != std::string::npos, true);
    // Where it suspended: the co_await's line in sleeper(), on the instant and on the wait's slice.
    const std::string at = std::string("sleeper() at ") + __FILE__ + ":" + std::to_string(kSleeperAwaitLine);
    EXPECT_EQ(ev[susp]["args"]["at"].str(), at);
    const long wait_slice = find(ev, "X", "await sleep()", sleeper_tid);
    ASSERT_GE(wait_slice, 0);
    EXPECT_EQ(ev[wait_slice]["args"]["at"].str(), at);
    EXPECT_EQ(ev[find(ev, "i", "done", sleeper_tid)]["args"]["outcome"].str(), "result");
    // Its timer: scheduled on its track, then fired on the loop's.
    const long sched = find(ev, "i", "timer scheduled", sleeper_tid);
    ASSERT_GE(sched, 0);
    EXPECT_EQ(ev[sched]["args"]["delay_us"].num(), 10000);
    const double timer = ev[sched]["args"]["timer"].num();
    bool fired = false;
    for (long f = find(ev, "i", "timer fired", 1, sched); f >= 0; f = find(ev, "i", "timer fired", 1, f))
        fired = fired || ev[f]["args"]["timer"].num() == timer;
    EXPECT_TRUE(fired);
    // The echo task's receive: submitted on b's fd, then done with the 4 bytes; then its send.
    const long rs = find(ev, "i", "recv submit", echo_tid);
    ASSERT_GE(rs, 0);
    EXPECT_EQ(ev[rs]["args"]["fd"].num(), fds.b);
    const long rd = find(ev, "i", "recv done", echo_tid, rs);
    ASSERT_GE(rd, 0);
    EXPECT_EQ(ev[rd]["args"]["bytes"].num(), 4);
    EXPECT_EQ(ev[rd]["args"]["op"].num(), ev[rs]["args"]["op"].num());
    const long sd = find(ev, "i", "send done", echo_tid, rd);
    ASSERT_GE(sd, 0);
    EXPECT_EQ(ev[sd]["args"]["bytes"].num(), 4);
    EXPECT_EQ(ev[find(ev, "i", "send submit", main_tid)]["args"]["fd"].num(), fds.a);
    // Async slices: one begin and one end per operation.
    EXPECT_EQ(count(ev, "b", "recv fd " + std::to_string(fds.b)), count(ev, "e", "recv fd " + std::to_string(fds.b)));
    // The victim: its sleep's timer cancelled, and it finished cancelled.
    EXPECT_GE(find(ev, "i", "timer cancelled", -1), 0);
    EXPECT_EQ(ev[find(ev, "i", "done", victim_tid)]["args"]["outcome"].str(), "cancelled");
    // The raiser: finished by its exception, with its text.
    const Json& rdone = ev[find(ev, "i", "done", raiser_tid)];
    EXPECT_EQ(rdone["args"]["outcome"].str(), "exception");
    EXPECT_NE(rdone["args"]["exception"].str().find("boom"), std::string::npos);
    // The main task awaited the victim as a Task.
    bool awaited_task = false;
    for (long s = find(ev, "i", "suspend", main_tid); s >= 0; s = find(ev, "i", "suspend", main_tid, s))
        awaited_task = awaited_task || ev[s]["args"]["await"].str() == "Task";
    EXPECT_TRUE(awaited_task);
}

TEST_F(Trace, ScenarioEventsInOrderOnTheirTracks) {
    TempDir dir;
    const std::string path = dir.file("trace.json");
    Fds fds;
    asyncio::RunOptions options;
    options.clock = asyncio_test::virtual_time();
    options.trace_file = path;
    EXPECT_EQ(asyncio::run(scenario(fds), std::move(options)), 7);
    check_scenario_trace(path, fds);
}

// tests/check_trace_json.cmake runs this one with ASYNCIO_TRACE set, and has python3 read the file.
TEST_F(Trace, ScenarioTracedThroughTheEnvironment) {
    TempDir dir;
    const char* given = std::getenv("ASYNCIO_TRACE");
    const std::string path = given != nullptr ? std::string(given) : dir.file("env.json");
    if (given == nullptr) ::setenv("ASYNCIO_TRACE", path.c_str(), 1);
    Fds fds;
    std::string traced_to;
    {
        asyncio::Runner runner(asyncio::RunOptions{std::nullopt, asyncio_test::virtual_time()});
        traced_to = runner.get_loop().trace_file();
        EXPECT_EQ(runner.run(scenario(fds)), 7);
    }
    if (given == nullptr) ::unsetenv("ASYNCIO_TRACE");
    EXPECT_EQ(traced_to.rfind(path, 0), 0u) << traced_to;  // path, or path.N after other loops
    check_scenario_trace(traced_to, fds);
}

Coroutine<> accept_one(asyncio::Socket& listener, int& accepted_fd) {
    auto [conn, peer] = co_await asyncio::sock_accept(listener);
    accepted_fd = conn.fileno();
}

Coroutine<> connect_and_accept(int& listen_fd, int& client_fd, int& accepted_fd) {
    asyncio::Socket listener(AF_INET, SOCK_STREAM);
    listener.bind(asyncio::Address::parse("127.0.0.1", 0));
    listener.listen();
    listen_fd = listener.fileno();
    auto server = asyncio::create_task(accept_one(listener, accepted_fd), "server");
    asyncio::Socket client(AF_INET, SOCK_STREAM);
    client_fd = client.fileno();
    co_await asyncio::sock_connect(client, listener.getsockname());
    co_await server;
}

TEST_F(Trace, AcceptAndConnectWithTheirFds) {
    TempDir dir;
    const std::string path = dir.file("tcp.json");
    asyncio::RunOptions options;
    options.trace_file = path;
    int listen_fd = -1, client_fd = -1, accepted_fd = -1;
    asyncio::run(connect_and_accept(listen_fd, client_fd, accepted_fd), std::move(options));
    const std::vector<Json> ev = load_events(path);
    const double server = track_of(ev, "server");
    const long as = find(ev, "i", "accept submit", server);
    ASSERT_GE(as, 0);
    EXPECT_EQ(ev[as]["args"]["fd"].num(), listen_fd);
    const long ad = find(ev, "i", "accept done", server, as);
    ASSERT_GE(ad, 0);
    EXPECT_EQ(ev[ad]["args"]["new_fd"].num(), accepted_fd);
    const long cs = find(ev, "i", "connect submit");
    ASSERT_GE(cs, 0);
    EXPECT_EQ(ev[cs]["args"]["fd"].num(), client_fd);
    const long cd = find(ev, "i", "connect done", ev[cs]["tid"].num(), cs);
    ASSERT_GE(cd, 0);
    EXPECT_EQ(ev[cd]["args"]["result"].num(), 0);
}

TEST_F(Trace, OffUnlessAsked) {
    if (std::getenv("ASYNCIO_TRACE") != nullptr) GTEST_SKIP() << "ASYNCIO_TRACE is set";
    asyncio::EventLoop loop(asyncio_test::virtual_time());
    EXPECT_EQ(loop.trace_file(), "");
    EXPECT_EQ(loop.tracer(), nullptr);
    loop.run_until_complete(sleeper());
    EXPECT_EQ(loop.trace_file(), "");
    // RunOptions::trace_file = "" wins over the environment.
    ::setenv("ASYNCIO_TRACE", "/nonexistent-dir/t.json", 1);
    asyncio::RunOptions options;
    options.clock = asyncio_test::virtual_time();
    options.trace_file = "";
    EXPECT_EQ(asyncio::run(sleeper(), std::move(options)), 7);  // the file was not even opened
    ::unsetenv("ASYNCIO_TRACE");
}

TEST_F(Trace, UnopenableFileFromTheEnvironmentFailsTheLoop) {
    if (std::getenv("ASYNCIO_TRACE") != nullptr) GTEST_SKIP() << "ASYNCIO_TRACE is set";
    ::setenv("ASYNCIO_TRACE", "/nonexistent-dir/t.json", 1);
    EXPECT_THROW(asyncio::EventLoop loop, std::system_error);
    ::unsetenv("ASYNCIO_TRACE");
    asyncio::EventLoop loop;  // nothing left behind
    EXPECT_FALSE(loop.get_debug());
}

Coroutine<> fails_after_a_while() {
    co_await asyncio::sleep(1ms);
    throw std::runtime_error("the program failed");
}

TEST_F(Trace, ValidJsonWhenTheProgramEndsByAnException) {
    TempDir dir;
    const std::string path = dir.file("throw.json");
    asyncio::RunOptions options;
    options.clock = asyncio_test::virtual_time();
    options.trace_file = path;
    EXPECT_THROW(asyncio::run(fails_after_a_while(), std::move(options)), std::runtime_error);
    const std::vector<Json> ev = load_events(path);
    const long done = find(ev, "i", "done");
    ASSERT_GE(done, 0);
    EXPECT_EQ(ev[done]["args"]["outcome"].str(), "exception");
    EXPECT_NE(ev[done]["args"]["exception"].str().find("the program failed"), std::string::npos);
}

Coroutine<> many_steps(const std::string& path, int n, std::size_t& events_seen) {
    for (int i = 0; i < n; ++i) co_await asyncio::sleep(0s);
    // While the loop runs, the file holds what was written so far, as valid JSON.
    asyncio::get_running_loop().flush_trace();
    events_seen = load_events(path).size();
}

TEST_F(Trace, ValidJsonAfterEveryChunkWhileTheLoopRuns) {
    TempDir dir;
    const std::string path = dir.file("long.json");
    asyncio::RunOptions options;
    options.trace_file = path;
    std::size_t seen = 0;
    // 20,000 steps: several 256 KiB chunks written while it runs.
    asyncio::run(many_steps(path, 20000, seen), std::move(options));
    EXPECT_GT(seen, 40000u);  // a step and a suspension each
    const std::vector<Json> ev = load_events(path);
    EXPECT_GT(ev.size(), seen);
    EXPECT_EQ(count(ev, "X", "step"), 20001);
}

TEST_F(Trace, OneFilePerLoopAcrossThreads) {
    TempDir dir;
    const std::string path = dir.file("threads.json");
    dir.file("threads.json.2");
    std::vector<std::string> files(2);
    auto body = [&](int k) {
        asyncio::Runner runner(asyncio::RunOptions{std::nullopt, asyncio_test::virtual_time(), path});
        files[static_cast<std::size_t>(k)] = runner.get_loop().trace_file();
        runner.run(sleeper());
    };
    std::thread t1(body, 0), t2(body, 1);
    t1.join();
    t2.join();
    std::sort(files.begin(), files.end());
    EXPECT_EQ(files[0], path);
    EXPECT_EQ(files[1], path + ".2");
    for (const std::string& f : files) {
        const std::vector<Json> ev = load_events(f);
        EXPECT_EQ(count(ev, "X", "step"), 2) << f;  // the sleeper, before and after its sleep
    }
}

TEST_F(Trace, SetTraceFileRules) {
    TempDir dir;
    asyncio::EventLoop loop(asyncio_test::virtual_time());
    const std::string a = dir.file("a.json");
    const std::string b = dir.file("b.json");
    loop.set_trace_file(a);
    EXPECT_EQ(loop.trace_file(), a);
    loop.run_until_complete(sleeper());
    loop.set_trace_file(b);  // completes a, starts b
    EXPECT_EQ(loop.trace_file(), b);
    EXPECT_EQ(count(load_events(a), "X", "step"), 2);
    loop.set_trace_file("");
    EXPECT_EQ(loop.trace_file(), "");
    EXPECT_EQ(count(load_events(b), "X", "step"), 0);
    EXPECT_THROW(loop.set_trace_file(dir.file("no/such/dir.json")), std::system_error);
    loop.close();
    EXPECT_THROW(loop.set_trace_file(a), asyncio::RuntimeError);
}

// A task pending when a trace starts (set_trace_file between runs) has its later suspensions
// recorded, as one made under the trace: the loop marks its pending tasks traced (kTraced, which
// a suspension tests together with a pending cancellation).
TEST_F(Trace, ATaskPendingWhenTheTraceStartsHasItsSuspensionsRecorded) {
    TempDir dir;
    const std::string path = dir.file("late.json");
    asyncio::EventLoop loop(asyncio_test::virtual_time());
    asyncio::Event go;
    auto waiter = [](asyncio::Event& e) -> Coroutine<int> {
        co_await e.wait();
        co_await asyncio::sleep(10ms);
        co_return 5;
    };
    asyncio::Task<int> t = loop.create_task(waiter(go));
    loop.run_until_complete([]() -> Coroutine<> { co_await asyncio::sleep(0s); }());  // t waits for go
    loop.set_trace_file(path);
    go.set();
    EXPECT_EQ(loop.run_until_complete(t), 5);
    loop.set_trace_file("");
    const std::vector<Json> ev = load_events(path);
    bool slept = false;
    for (long s = find(ev, "i", "suspend"); s >= 0; s = find(ev, "i", "suspend", -1, s))
        slept = slept || ev[s]["args"]["await"].str() == "sleep()";
    EXPECT_TRUE(slept) << read_file(path);
    loop.close();
}

}  // namespace
