// Call graphs (asyncio/graph.hpp) and Task::get_stack/print_stack, through the public API.
#include <gtest/gtest.h>

#include <chrono>
#include <coroutine>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "asyncio/asyncio.hpp"
#include "test_support.hpp"

// ASSERT_* returns void: inside a coroutine, a failed check ends it with co_return instead.
#define CO_ASSERT_EQ(a, b)               \
    do {                                 \
        EXPECT_EQ(a, b);                 \
        if (!((a) == (b))) co_return;    \
    } while (0)
#define CO_ASSERT_NE(a, b)               \
    do {                                 \
        EXPECT_NE(a, b);                 \
        if ((a) == (b)) co_return;       \
    } while (0)

using asyncio::Coroutine;

using namespace std::chrono_literals;

namespace {

constexpr unsigned kLeafLine = __LINE__ + 2;
Coroutine<> leaf(asyncio::Event& e) {
    co_await e.wait();
}
constexpr unsigned kMiddleLine = __LINE__ + 2;
Coroutine<> middle(asyncio::Event& e) {
    co_await leaf(e);
}

std::string at(const char* fn, unsigned line) {
    return std::string("File '") + __FILE__ + "', line " + std::to_string(line) + ", in async " + fn + "()";
}

TEST(CallGraph, ASuspendedTaskShowsItsChainInnermostFirstWithAwaitLinesAndWhoAwaitsIt) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::Event e;
        asyncio::Task<> child = asyncio::create_task(middle(e), "child");
        constexpr unsigned kAwaitLine = __LINE__ + 1;
        asyncio::Task<> parent = asyncio::create_task([](asyncio::Task<> c) -> Coroutine<> { co_await c; }(child), "parent");
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        asyncio::FutureCallGraph g = asyncio::capture_call_graph(child);
        EXPECT_TRUE(g.is_task);
        CO_ASSERT_EQ(g.call_stack.size(), 2u);
        EXPECT_STREQ(g.call_stack[0].function, "leaf");
        EXPECT_EQ(g.call_stack[0].line, kLeafLine);
        EXPECT_STREQ(g.call_stack[1].function, "middle");
        EXPECT_EQ(g.call_stack[1].line, kMiddleLine);
        CO_ASSERT_EQ(g.awaited_by.size(), 1u);
        EXPECT_TRUE(g.awaited_by[0].future == parent);
        CO_ASSERT_EQ(g.awaited_by[0].call_stack.size(), 1u);
        EXPECT_EQ(g.awaited_by[0].call_stack[0].line, kAwaitLine);

        const std::string text = asyncio::format_call_graph(child);
        EXPECT_NE(text.find("* Task(name='child', id=0x"), std::string::npos) << text;
        EXPECT_NE(text.find("  + Call stack:\n  |   " + at("leaf", kLeafLine) + "\n  |   " +
                                at("middle", kMiddleLine)),
                  std::string::npos)
            << text;
        EXPECT_NE(text.find("  + Awaited by:\n    * Task(name='parent', id=0x"), std::string::npos) << text;

        // Task::get_stack: oldest first; limit keeps the innermost.
        auto st = child.get_stack();
        CO_ASSERT_EQ(st.size(), 2u);
        EXPECT_STREQ(st[0].function, "middle");
        EXPECT_STREQ(st[1].function, "leaf");
        CO_ASSERT_EQ(child.get_stack(1).size(), 1u);
        EXPECT_STREQ(child.get_stack(1)[0].function, "leaf");
        EXPECT_TRUE(asyncio::capture_call_graph(child, 0).call_stack.empty());

        e.set();
        co_await parent;
        EXPECT_TRUE(child.get_stack().empty());  // done
    }());
}

constexpr unsigned kSelfLine = __LINE__ + 2;
Coroutine<std::string> describe_self() {
    std::optional<asyncio::FutureCallGraph> g = co_await asyncio::capture_call_graph();
    co_return g ? asyncio::format_call_graph(*g) : std::string("none");
}

TEST(CallGraph, TheRunningTaskSeesItsOwnChainThroughCoAwait) {
    std::string text = asyncio::run([]() -> Coroutine<std::string> {
        co_return co_await asyncio::create_task(describe_self(), "me");
    }());
    EXPECT_NE(text.find("* Task(name='me', id=0x"), std::string::npos) << text;
    EXPECT_NE(text.find(at("describe_self", kSelfLine)), std::string::npos) << text;
    EXPECT_NE(text.find("+ Awaited by:"), std::string::npos) << text;
}

TEST(CallGraph, GatherChildrenAreAwaitedByTheGatheringTask) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::Event e;
        asyncio::Task<> g = asyncio::create_task(
            [](asyncio::Event& ev) -> Coroutine<> {
                co_await asyncio::gather(leaf(ev), leaf(ev));
            }(e),
            "gatherer");
        asyncio::TaskGroup tg;
        asyncio::Task<> member = tg.create_task(leaf(e), "member");
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        int gathered = 0;
        for (asyncio::Task<> t : asyncio::all_tasks()) {
            asyncio::FutureCallGraph cg = asyncio::capture_call_graph(t);
            if (!cg.awaited_by.empty() && cg.awaited_by[0].future == g) ++gathered;
        }
        EXPECT_EQ(gathered, 2);
        e.set();
        co_await tg.wait();
        co_await g;
    }());
}

// True when t is somewhere in g's awaited-by tree.
bool awaited_by(const asyncio::FutureCallGraph& g, const asyncio::Task<>& t) {
    for (const asyncio::FutureCallGraph& a : g.awaited_by)
        if (a.future == t || awaited_by(a, t)) return true;
    return false;
}

TEST(CallGraph, EveryCombinatorLinksATaskToTheTaskAwaitingIt) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::Event e;
        asyncio::Task<> c1 = asyncio::create_task(leaf(e), "c1");
        asyncio::Task<> w1 = asyncio::create_task(
            [](asyncio::Task<> c) -> Coroutine<> { co_await asyncio::wait_for(c, 100s); }(c1), "by_wait_for");
        asyncio::Task<> c2 = asyncio::create_task(leaf(e), "c2");
        asyncio::Task<> w2 = asyncio::create_task(
            [](asyncio::Task<> c) -> Coroutine<> { co_await asyncio::shield(c); }(c2), "by_shield");
        asyncio::Task<> c3 = asyncio::create_task(leaf(e), "c3");
        asyncio::Task<> w3 = asyncio::create_task(
            [](asyncio::Task<> c) -> Coroutine<> {
                std::vector<asyncio::Task<>> v{c};
                auto done_pending = co_await asyncio::wait(v);
                (void)done_pending;
            }(c3),
            "by_wait");
        asyncio::Task<> c4 = asyncio::create_task(leaf(e), "c4");
        asyncio::Task<> w4 = asyncio::create_task(
            [](asyncio::Task<> c) -> Coroutine<> {
                std::vector<asyncio::Task<>> v{c};
                for (auto next : asyncio::as_completed(v)) co_await next;
            }(c4),
            "by_as_completed");
        // wait_for of a coroutine runs it inside the awaiting task: one chain, no edge.
        constexpr unsigned kInlineLine = __LINE__ + 2;
        asyncio::Task<> w5 = asyncio::create_task(
            [](asyncio::Event& ev) -> Coroutine<> { co_await asyncio::wait_for(middle(ev), 100s); }(e), "inline");
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        EXPECT_TRUE(awaited_by(asyncio::capture_call_graph(c1), w1));
        EXPECT_TRUE(awaited_by(asyncio::capture_call_graph(c2), w2));
        EXPECT_TRUE(awaited_by(asyncio::capture_call_graph(c3), w3));
        EXPECT_TRUE(awaited_by(asyncio::capture_call_graph(c4), w4));
        asyncio::FutureCallGraph g5 = asyncio::capture_call_graph(w5);
        CO_ASSERT_NE(g5.call_stack.size(), 0u);
        EXPECT_STREQ(g5.call_stack[0].function, "leaf");
        EXPECT_EQ(g5.call_stack[0].line, kLeafLine);
        EXPECT_STREQ(g5.call_stack[1].function, "middle");
        EXPECT_EQ(g5.call_stack.back().line, kInlineLine);
        e.set();
        for (asyncio::Task<>* t : {&w1, &w2, &w3, &w4, &w5}) co_await *t;
    }());
}

TEST(CallGraph, ATaskGroupChildIsAwaitedByTheTaskThatMadeItFromItsCreation) {
    // 3.14 links a child to the group's task at create_task; with no body, the group's task is
    // known only at wait(): until then the task that made the child stands for it.
    asyncio::run([]() -> Coroutine<> {
        asyncio::Event e;
        asyncio::TaskGroup tg;
        asyncio::Task<> member = tg.create_task(leaf(e), "member");
        co_await asyncio::sleep(0s);
        asyncio::FutureCallGraph g = asyncio::capture_call_graph(member);
        CO_ASSERT_EQ(g.awaited_by.size(), 1u);
        EXPECT_TRUE(g.awaited_by[0].future == asyncio::current_task());
        asyncio::Task<> releaser = asyncio::create_task([](asyncio::Event& ev) -> Coroutine<> {
            co_await asyncio::sleep(0s);
            ev.set();
        }(e));
        co_await tg.wait();
        co_await releaser;
    }());
}

TEST(CallGraph, RegressionAGroupOutlivingTheTaskThatMadeItsChildrenPointsAtNoFreedTask) {
    // The creator edge is weak: once the creator is done (or abandoned by a closing loop), the
    // child shows no awaiting task instead of a freed one (ASan would see the read).
    auto tg = std::make_unique<asyncio::TaskGroup>();
    asyncio::run([](asyncio::TaskGroup& group) -> Coroutine<> {
        asyncio::Event e;
        std::optional<asyncio::Task<>> member;
        co_await asyncio::create_task([](asyncio::TaskGroup& g, asyncio::Event& ev,
                                         std::optional<asyncio::Task<>>& m) -> Coroutine<> {
            m = g.create_task(leaf(ev), "member");
            co_return;
        }(group, e, member), "creator");
        asyncio::FutureCallGraph g = asyncio::capture_call_graph(*member);
        EXPECT_TRUE(g.awaited_by.empty());
        e.set();
        co_await group.wait();
    }(*tg));
    tg.reset();
    // A creator still pending when its loop closes: abandoned, its frame freed before the group.
    auto tg2 = std::make_unique<asyncio::TaskGroup>();
    asyncio::Event never;
    {
        asyncio::EventLoop loop;
        asyncio_test::Reports reports;
        reports.install(loop);
        loop.create_task([](asyncio::TaskGroup& g, asyncio::Event& ev) -> Coroutine<> {
            g.create_task(leaf(ev), "member");
            co_await ev.wait();
        }(*tg2, never), "creator");
        loop.call_soon([&] { loop.stop(); });
        loop.run_forever();  // one iteration: the creator makes its child and suspends
        loop.close();
        EXPECT_EQ(reports.count("Task was destroyed but it is pending!"), 1u);
    }
    tg2.reset();
}

// An awaiter of the user's: it keeps the handle, which a loop callback resumes.
struct UsersAwaiter {
    std::coroutine_handle<>* slot;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const noexcept { *slot = h; }
    void await_resume() const noexcept {}
};

TEST(CallGraph, ATaskSuspendedInAUsersAwaiterShowsNoStaleLine) {
    // Only the library's awaiters note the line of a co_await: the task's frame still holds that
    // of its sleep, which it has left. Its chain is not known, and neither is its line (0).
    asyncio::run([]() -> Coroutine<> {
        std::coroutine_handle<> slot;
        asyncio::Task<> t = asyncio::create_task(
            [](std::coroutine_handle<>& s) -> Coroutine<> {
                co_await asyncio::sleep(0s);
                co_await UsersAwaiter{&s};
            }(slot),
            "users");
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(0s);
        CO_ASSERT_EQ(static_cast<bool>(slot), true);
        asyncio::FutureCallGraph g = asyncio::capture_call_graph(t);
        CO_ASSERT_EQ(g.call_stack.size(), 1u);
        EXPECT_STREQ(g.call_stack[0].function, "operator()");
        EXPECT_EQ(g.call_stack[0].line, 0u);
        asyncio::get_running_loop().call_soon([&slot] { slot.resume(); });
        co_await t;
    }());
}

TEST(CallGraph, PrintStackWritesPythonsFormatWithTheSourceLine) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::Event e;
        asyncio::Task<> t = asyncio::create_task(middle(e), "waiter");
        co_await asyncio::sleep(0s);
        std::FILE* f = std::tmpfile();
        CO_ASSERT_NE(f, nullptr);
        t.print_stack(std::nullopt, f);
        std::rewind(f);
        std::string out;
        for (int c; (c = std::fgetc(f)) != EOF;) out += static_cast<char>(c);
        std::fclose(f);
        EXPECT_EQ(out.rfind("Stack for <Task pending name='waiter' coro=<middle() running at ", 0), 0u) << out;
        EXPECT_NE(out.find("(most recent call last):\n  File \"" + std::string(__FILE__) + "\", line " +
                           std::to_string(kMiddleLine) + ", in middle\n    co_await leaf(e);\n"),
                  std::string::npos)
            << out;
        e.set();
        co_await t;
    }());
}

// The frame's name is what __builtin_FUNCTION() gives inside the coroutine, whatever its shape. (With
// GCC the library keeps one std::source_location per frame and works the name out of the full
// signature it holds: "int ns::C<T>::m(T) const [with T = int]" is "m", a lambda is "operator()".)
namespace shapes {
template <class T>
struct Box {
    Coroutine<> method(asyncio::Event& e, const char*& name, T) const {
        name = __builtin_FUNCTION();
        co_await e.wait();
    }
    static Coroutine<std::pair<int, T>> made(asyncio::Event& e, const char*& name) {
        name = __builtin_FUNCTION();
        co_await e.wait();
        co_return std::pair<int, T>{1, T{}};
    }
    Coroutine<> operator()(asyncio::Event& e, const char*& name) {
        name = __builtin_FUNCTION();
        co_await e.wait();
    }
    Coroutine<bool> operator<(asyncio::Event& e) {
        last = __builtin_FUNCTION();
        co_await e.wait();
        co_return true;
    }
    const char* last = nullptr;
};
template <class F>
Coroutine<> templated(asyncio::Event& e, const char*& name, F (*)(F)) {
    name = __builtin_FUNCTION();
    co_await e.wait();
}
int twice(int x) { return 2 * x; }
}  // namespace shapes

TEST(CallGraph, AFramesNameIsTheCoroutinesNameWhateverItsShape) {
    asyncio::run([]() -> Coroutine<> {
        asyncio::Event e;
        std::vector<const char*> expected(7, nullptr);
        shapes::Box<std::vector<int>> box;
        int captured = 3;
        std::vector<asyncio::Task<>> tasks;
        tasks.push_back(asyncio::create_task(box.method(e, expected[0], {})));
        tasks.push_back(asyncio::create_task([](asyncio::Event& ev, const char*& n) -> Coroutine<> {
            co_await shapes::Box<std::vector<int>>::made(ev, n);
        }(e, expected[1])));
        tasks.push_back(asyncio::create_task(box(e, expected[2])));
        tasks.push_back(asyncio::create_task(shapes::templated(e, expected[3], &shapes::twice)));
        // A capturing lambda's coroutine refers to the lambda object: it must outlive the task.
        auto bump = [&captured](asyncio::Event& ev, const char*& n) -> Coroutine<> {
            n = __builtin_FUNCTION();
            co_await ev.wait();
            ++captured;
        };
        tasks.push_back(asyncio::create_task(bump(e, expected[4])));
        tasks.push_back(asyncio::create_task([](auto& ev, const char*& n) -> Coroutine<> {
            n = __builtin_FUNCTION();
            co_await ev.wait();
        }(e, expected[5])));
        tasks.push_back(asyncio::create_task([](shapes::Box<std::vector<int>>& b, asyncio::Event& ev) -> Coroutine<> {
            co_await (b < ev);
        }(box, e)));
        co_await asyncio::sleep(0s);
        expected[6] = box.last;
        for (std::size_t i = 0; i < tasks.size(); ++i) {
            SCOPED_TRACE(i);
            auto st = tasks[i].get_stack(1);
            CO_ASSERT_EQ(st.size(), 1u);
            CO_ASSERT_NE(expected[i], nullptr);
            EXPECT_STREQ(st[0].function, expected[i]);
            EXPECT_STREQ(st[0].file, __FILE__);
        }
        EXPECT_STREQ(expected[0], "method");
        EXPECT_STREQ(expected[1], "made");
        EXPECT_STREQ(expected[6], "operator<");
        e.set();
        for (auto& t : tasks) co_await t;
        EXPECT_EQ(captured, 4);
    }());
}

}  // namespace
