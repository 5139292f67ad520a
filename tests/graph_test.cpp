// Call graphs (asyncio/graph.hpp) and Task::get_stack/print_stack, through the public API.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

#include "asyncio/asyncio.hpp"

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

}  // namespace
