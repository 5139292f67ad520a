// Tests of asyncio::Generator through its public API: Python's generator semantics (next, send,
// throw_, close, StopIteration, GeneratorExit, yield from), the misuse errors, range-for, and the
// C++ promises (frames destroyed exactly once, nothing allocated per send, no stack growth).
// Every test checks at its end that no coroutine frame is left alive.
#include "asyncio/generator.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <any>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "asyncio/debug.hpp"
#include "asyncio/detail/frame_allocator.hpp"
#include "asyncio/exceptions.hpp"

// Allocations made by this thread, for the test that a send allocates nothing: the global
// operator new is replaced by one that counts (on top of malloc).
namespace {
thread_local std::int64_t t_allocations = 0;
}  // namespace

#if defined(__GNUC__) && !defined(__clang__)
// Once this operator delete is inlined into a caller of new, GCC sees free() of new's memory.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
    ++t_allocations;
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

using asyncio::Generator;
using asyncio::yield_from;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Every fixture checks that the test left no coroutine frame alive.
class FrameLeakCheck : public ::testing::Test {
  protected:
    void TearDown() override {
        EXPECT_EQ(asyncio::debug::live_frames(), frames_at_start_) << "a coroutine frame leaked";
    }

  private:
    std::int64_t frames_at_start_ = asyncio::debug::live_frames();
};

class AGenerator : public FrameLeakCheck {};
class AJustStartedGenerator : public FrameLeakCheck {};
class AFinishedGenerator : public FrameLeakCheck {};
class AnEmptyGenerator : public FrameLeakCheck {};
class IteratingAGenerator : public FrameLeakCheck {};
class YieldFrom : public FrameLeakCheck {};

/// Counts the constructions and destructions of Counted objects.
struct Tally {
    int constructed = 0;
    int destroyed = 0;
};

class Counted {
  public:
    explicit Counted(Tally& tally) : tally_(&tally) { ++tally_->constructed; }
    Counted(const Counted& other) : tally_(other.tally_) { ++tally_->constructed; }
    Counted& operator=(const Counted&) = default;
    ~Counted() { ++tally_->destroyed; }

  private:
    Tally* tally_;
};

/// The what() of the E that f throws.
template <class E, class F>
std::string error_of(F&& f) {
    try {
        std::forward<F>(f)();
    } catch (const E& e) {
        return e.what();
    }
    return "(nothing thrown)";
}

/// The value() of the StopIteration that g.next() throws; nullopt if it throws none.
template <class G>
std::optional<std::any> stop_value_of_next(G& g) {
    try {
        (void)g.next();
    } catch (const asyncio::StopIteration& stop) {
        return stop.value();
    }
    return std::nullopt;
}

/// Where the stack is in the function that calls this one.
[[gnu::noinline]] std::uintptr_t stack_position() {
    return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
}

struct Boom {
    int code;
};

Generator<int> count_to(int n) {
    for (int i = 1; i <= n; ++i) co_yield i;
}

// ---------------------------------------------------------------------------------------------
// next, send and the value of co_yield

TEST_F(AGenerator, ReturnsEachYieldedValueFromNextInTurn) {
    Generator<int> g = count_to(3);
    EXPECT_EQ(g.next(), 1);
    EXPECT_EQ(g.next(), 2);
    EXPECT_EQ(g.next(), 3);
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
}

Generator<int> flag_start(bool* ran) {
    *ran = true;
    co_yield 1;
}

TEST_F(AGenerator, DoesNotRunItsBodyBeforeTheFirstNext) {
    bool ran = false;
    Generator<int> g = flag_start(&ran);
    EXPECT_FALSE(ran);
    EXPECT_EQ(g.next(), 1);
    EXPECT_TRUE(ran);
}

Generator<int, int> record_received(std::vector<std::optional<int>>* received) {
    int n = 0;
    while (true) {
        auto v = co_yield n++;
        static_assert(std::is_same_v<decltype(v), std::optional<int>>);
        received->push_back(v);
    }
}

TEST_F(AGenerator, ReceivesNulloptFromNextAndTheSentValueFromSend) {
    std::vector<std::optional<int>> received;
    Generator<int, int> g = record_received(&received);
    EXPECT_EQ(g.next(), 0);  // starts it: no co_yield has a value to receive yet
    EXPECT_EQ(g.send(5), 1);
    EXPECT_EQ(g.next(), 2);
    EXPECT_EQ(g.send(7), 3);
    EXPECT_EQ(g.send(0), 4);
    const std::vector<std::optional<int>> expected{5, std::nullopt, 7, 0};
    EXPECT_EQ(received, expected);
}

template <class G>
concept CanSendInt = requires(G& g) {
    g.send(1);
};

static_assert(CanSendInt<Generator<int, int>>);
static_assert(!CanSendInt<Generator<int>>, "Send = void: no send()");

Generator<int> void_yield_expression(int* resumed) {
    co_yield 1;  // with Send = void the co_yield expression is void
    ++*resumed;
    co_yield 2;
}

TEST_F(AGenerator, WithoutASendTypeHasNoSendAndAVoidYieldExpression) {
    int resumed = 0;
    Generator<int> g = void_yield_expression(&resumed);
    EXPECT_EQ(g.next(), 1);
    EXPECT_EQ(g.next(), 2);
    EXPECT_EQ(resumed, 1);
}

// ---------------------------------------------------------------------------------------------
// Return values

Generator<int, void, std::string> yield_then_return(std::string result) {
    co_yield 1;
    co_return result;
}

TEST_F(AGenerator, ThrowsStopIterationCarryingItsReturnValue) {
    Generator<int, void, std::string> g = yield_then_return("done");
    EXPECT_EQ(g.next(), 1);
    const std::optional<std::any> value = stop_value_of_next(g);
    ASSERT_TRUE(value.has_value());
    ASSERT_TRUE(value->has_value());
    EXPECT_EQ(std::any_cast<std::string>(*value), "done");
}

TEST_F(AGenerator, ThrowsStopIterationWithAnEmptyValueWhenItReturnsVoid) {
    Generator<int> g = count_to(0);
    const std::optional<std::any> value = stop_value_of_next(g);
    ASSERT_TRUE(value.has_value());
    EXPECT_FALSE(value->has_value());
}

TEST_F(AFinishedGenerator, ThrowsStopIterationWithoutAValueFromNextAndSend) {
    std::vector<std::optional<int>> received;
    Generator<int, void, std::string> g = yield_then_return("done");
    (void)g.next();
    ASSERT_TRUE(stop_value_of_next(g).has_value());
    const std::optional<std::any> again = stop_value_of_next(g);
    ASSERT_TRUE(again.has_value());
    EXPECT_FALSE(again->has_value()) << "only the first StopIteration carries the value";

    Generator<int, int> s = record_received(&received);
    (void)s.next();
    s.close();
    EXPECT_THROW((void)s.send(1), asyncio::StopIteration);
    EXPECT_THROW((void)s.next(), asyncio::StopIteration);
}

TEST_F(AGenerator, KeepsItsReturnValueForReturnValueOnceItHasReturned) {
    Generator<int, void, std::string> g = yield_then_return("done");
    (void)g.next();
    (void)stop_value_of_next(g);
    EXPECT_EQ(g.return_value(), "done");
    g.return_value() += "!";
    EXPECT_EQ(std::as_const(g).return_value(), "done!");

    Generator<int> v = count_to(0);
    (void)stop_value_of_next(v);
    EXPECT_NO_THROW(v.return_value());
}

Generator<int, void, int> raise_after_one() {
    co_yield 1;
    throw std::runtime_error("boom");
}

TEST_F(AGenerator, ThrowsInvalidStateErrorFromReturnValueUntilItHasReturned) {
    Generator<int, void, std::string> g = yield_then_return("done");
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { g.return_value(); }),
              "return_value() of a generator that has not finished");
    (void)g.next();
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { g.return_value(); }),
              "return_value() of a generator that has not finished");

    Generator<int, void, int> raised = raise_after_one();
    (void)raised.next();
    EXPECT_THROW((void)raised.next(), std::runtime_error);
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { raised.return_value(); }),
              "return_value() of a generator that finished without returning");

    Generator<int, void, std::string> closed = yield_then_return("done");
    (void)closed.next();
    closed.close();
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { closed.return_value(); }),
              "return_value() of a generator that finished without returning");
}

Generator<int, void, std::unique_ptr<int>> return_move_only() {
    co_yield 1;
    co_return std::make_unique<int>(42);
}

TEST_F(AGenerator, WithAMoveOnlyReturnTypeHandsItOverThroughReturnValue) {
    Generator<int, void, std::unique_ptr<int>> g = return_move_only();
    (void)g.next();
    const std::optional<std::any> value = stop_value_of_next(g);
    ASSERT_TRUE(value.has_value());
    EXPECT_FALSE(value->has_value()) << "std::any cannot hold a move-only value";
    std::unique_ptr<int> result = std::move(g.return_value());
    ASSERT_NE(result, nullptr);
    EXPECT_EQ(*result, 42);
}

// ---------------------------------------------------------------------------------------------
// Exceptions from the body

TEST_F(AGenerator, PropagatesAnExceptionFromItsBodyAndIsThenFinished) {
    Generator<int, void, int> g = raise_after_one();
    EXPECT_EQ(g.next(), 1);
    EXPECT_EQ(error_of<std::runtime_error>([&] { (void)g.next(); }), "boom");
    EXPECT_TRUE(g.done());
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
}

Generator<int> leak_stop_iteration() {
    Generator<int> empty = count_to(0);
    co_yield empty.next();  // throws StopIteration, which the body does not catch
}

TEST_F(AGenerator, TurnsAStopIterationEscapingItsBodyIntoRuntimeError) {
    Generator<int> g = leak_stop_iteration();
    EXPECT_EQ(error_of<asyncio::RuntimeError>([&] { (void)g.next(); }),
              "generator raised StopIteration");  // PEP 479
    EXPECT_TRUE(g.done());
}

// ---------------------------------------------------------------------------------------------
// Yielded values: copies, moves, move-only and large types

Generator<std::string> yield_lvalue(std::string* after) {
    std::string s = "kept";
    co_yield s;
    *after = s;
}

TEST_F(AGenerator, YieldsAnLvalueAsACopySoItsOwnVariableIsUntouched) {
    std::string after;
    Generator<std::string> g = yield_lvalue(&after);
    EXPECT_EQ(g.next(), "kept");
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_EQ(after, "kept");
}

Generator<std::unique_ptr<int>> yield_move_only(bool* moved_out) {
    co_yield std::make_unique<int>(7);
    auto p = std::make_unique<int>(8);
    co_yield std::move(p);
    *moved_out = (p == nullptr);
}

TEST_F(AGenerator, HandsOverAnRvalueOperandByMovingFromIt) {
    bool moved_out = false;
    Generator<std::unique_ptr<int>> g = yield_move_only(&moved_out);
    std::unique_ptr<int> a = g.next();
    std::unique_ptr<int> b = g.next();
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(*a, 7);
    EXPECT_EQ(*b, 8);
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_TRUE(moved_out);
}

Generator<int, std::unique_ptr<int>> receive_move_only() {
    int last = 0;
    while (true) {
        std::optional<std::unique_ptr<int>> p = co_yield last;
        last = (p && *p) ? **p : -1;
    }
}

TEST_F(AGenerator, AcceptsAMoveOnlySendType) {
    Generator<int, std::unique_ptr<int>> g = receive_move_only();
    EXPECT_EQ(g.next(), 0);
    EXPECT_EQ(g.send(std::make_unique<int>(5)), 5);
    EXPECT_EQ(g.next(), -1);
}

using Block = std::array<int, 64>;  // trivially copyable but large: passed by pointer, not in place

Generator<Block, Block> double_blocks() {
    Block out{};
    while (true) {
        std::optional<Block> in = co_yield out;
        if (in) {
            for (std::size_t i = 0; i < out.size(); ++i) out[i] = 2 * (*in)[i];
        }
    }
}

TEST_F(AGenerator, PassesLargeValuesBothWaysIntact) {
    Generator<Block, Block> g = double_blocks();
    EXPECT_EQ(g.next(), Block{});
    Block in{};
    for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i);
    const Block out = g.send(in);
    for (std::size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], 2 * static_cast<int>(i));
}

// ---------------------------------------------------------------------------------------------
// Costs: frames, allocations, stack

Generator<int, int> running_total() {
    int total = 0;
    while (true) {
        auto v = co_yield total;
        total += *v;
    }
}

TEST_F(AGenerator, AllocatesNothingPerSend) {
    Generator<int, int> g = running_total();
    (void)g.next();
    const std::int64_t before = t_allocations;
    int last = 0;
    for (int i = 1; i <= 1000; ++i) last = g.send(i);
    EXPECT_EQ(t_allocations - before, 0);
    EXPECT_EQ(last, 500500);
}

TEST_F(AGenerator, AllocatesItsFrameFromTheFrameAllocator) {
    static_assert(
        asyncio::debug::frame_pooled<Generator<int, int>::promise_type>);
    const std::int64_t before = asyncio::debug::live_frames();
    {
        Generator<int, int> g = running_total();
        EXPECT_EQ(asyncio::debug::live_frames(), before + 1);
    }
    EXPECT_EQ(asyncio::debug::live_frames(), before);
}

Generator<std::uintptr_t> stack_positions() {
    while (true) co_yield stack_position();
}

[[gnu::noinline]] std::uintptr_t next_from_here(Generator<std::uintptr_t>& g) {
    return g.next();
}

TEST_F(AGenerator, RunsAMillionNextCallsAllAtTheSameStackDepth) {
    Generator<std::uintptr_t> g = stack_positions();
    const std::uintptr_t first = next_from_here(g);
    std::uintptr_t last = 0;
    for (int i = 0; i < 1'000'000; ++i) last = next_from_here(g);
    EXPECT_EQ(last, first);
}

// ---------------------------------------------------------------------------------------------
// Destruction

Generator<int> hold_locals(Tally* tally, bool* saw_generator_exit) {
    Counted outer(*tally);
    try {
        Counted inner(*tally);
        co_yield 1;
        co_yield 2;
    } catch (const asyncio::GeneratorExit&) {
        *saw_generator_exit = true;
        throw;
    }
}

TEST_F(AGenerator, DestroysTheLocalsOfAnUnfinishedGeneratorExactlyOnceWithoutClosingIt) {
    Tally tally;
    bool saw_generator_exit = false;
    {
        Generator<int> g = hold_locals(&tally, &saw_generator_exit);
        EXPECT_EQ(g.next(), 1);
        EXPECT_EQ(tally.constructed, 2);
        EXPECT_EQ(tally.destroyed, 0);
    }
    EXPECT_EQ(tally.constructed, 2);
    EXPECT_EQ(tally.destroyed, 2);
    EXPECT_FALSE(saw_generator_exit) << "destruction is RAII, not close()";
}

Generator<int> hold_parameter(Counted) {
    co_yield 1;
}

TEST_F(AGenerator, DestroysItsParametersWhenDestroyedBeforeStarting) {
    Tally tally;
    { Generator<int> g = hold_parameter(Counted(tally)); }
    EXPECT_GT(tally.constructed, 0);
    EXPECT_EQ(tally.destroyed, tally.constructed);
}

TEST_F(AGenerator, KeepsRunningAfterBeingMoved) {
    Generator<int> a = count_to(3);
    EXPECT_EQ(a.next(), 1);
    Generator<int> b = std::move(a);
    EXPECT_EQ(b.next(), 2);
    Generator<int> c;
    c = std::move(b);
    EXPECT_EQ(c.next(), 3);
    EXPECT_FALSE(a);
    EXPECT_FALSE(b);
    EXPECT_TRUE(c);
    c = count_to(1);  // assigning over a live generator destroys its frame
    EXPECT_EQ(c.next(), 1);
}

// ---------------------------------------------------------------------------------------------
// Observers

Generator<int> observe_self(Generator<int>* const* self, std::vector<bool>* seen) {
    seen->push_back((*self)->running());
    seen->push_back((*self)->started());
    seen->push_back((*self)->done());
    co_yield 1;
}

TEST_F(AGenerator, ReportsStartedRunningAndDoneAsItProgresses) {
    Generator<int>* self = nullptr;
    std::vector<bool> seen;
    Generator<int> g = observe_self(&self, &seen);
    self = &g;
    EXPECT_FALSE(g.started());
    EXPECT_FALSE(g.running());
    EXPECT_FALSE(g.done());
    EXPECT_TRUE(static_cast<bool>(g));
    (void)g.next();
    EXPECT_EQ(seen, (std::vector<bool>{true, true, false}));  // as seen from inside
    EXPECT_TRUE(g.started());
    EXPECT_FALSE(g.running());
    EXPECT_FALSE(g.done());
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_TRUE(g.started());
    EXPECT_FALSE(g.running());
    EXPECT_TRUE(g.done());
}

// ---------------------------------------------------------------------------------------------
// A just-started generator

TEST_F(AJustStartedGenerator, RejectsSendWithTypeErrorAndStaysJustStarted) {
    std::vector<std::optional<int>> received;
    Generator<int, int> g = record_received(&received);
    EXPECT_EQ(error_of<asyncio::TypeError>([&] { (void)g.send(1); }),
              "can't send non-None value to a just-started generator");
    EXPECT_FALSE(g.started());
    EXPECT_FALSE(g.done());
    EXPECT_EQ(g.next(), 0);  // runs from the beginning
    EXPECT_EQ(g.send(1), 1);
    EXPECT_EQ(received, (std::vector<std::optional<int>>{1}));
}

TEST_F(AJustStartedGenerator, FinishesWithoutRunningWhenAnExceptionIsThrownIn) {
    bool ran = false;
    Generator<int> g = flag_start(&ran);
    EXPECT_EQ(error_of<std::runtime_error>([&] { (void)g.throw_(std::runtime_error("in")); }),
              "in");
    EXPECT_FALSE(ran);
    EXPECT_TRUE(g.done());
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
}

TEST_F(AJustStartedGenerator, IsMarkedFinishedByCloseWithoutRunning) {
    bool ran = false;
    Generator<int> g = flag_start(&ran);
    g.close();
    EXPECT_FALSE(ran);
    EXPECT_TRUE(g.done());
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_THROW(g.return_value(), asyncio::InvalidStateError);
}

// ---------------------------------------------------------------------------------------------
// throw_

Generator<int, void, int> catch_runtime_error(bool return_after_catching) {
    bool caught = false;
    try {
        co_yield 1;
    } catch (const std::runtime_error&) {
        caught = true;
    }
    if (caught && return_after_catching) co_return 9;
    co_yield caught ? 2 : -2;
    co_return 0;
}

TEST_F(AGenerator, ReturnsTheNextValueFromThrowWhenItCatchesTheException) {
    Generator<int, void, int> g = catch_runtime_error(false);
    EXPECT_EQ(g.next(), 1);
    EXPECT_EQ(g.throw_(std::runtime_error("in")), 2);
    EXPECT_FALSE(g.done());
}

TEST_F(AGenerator, ThrowsStopIterationFromThrowWhenItReturnsAfterCatchingTheException) {
    Generator<int, void, int> g = catch_runtime_error(true);
    (void)g.next();
    try {
        (void)g.throw_(std::runtime_error("in"));
        ADD_FAILURE() << "no StopIteration";
    } catch (const asyncio::StopIteration& stop) {
        EXPECT_EQ(std::any_cast<int>(stop.value()), 9);
    }
    EXPECT_TRUE(g.done());
    EXPECT_EQ(g.return_value(), 9);
}

TEST_F(AGenerator, PropagatesAThrownExceptionItDoesNotCatch) {
    Generator<int, void, int> g = catch_runtime_error(false);
    (void)g.next();
    try {
        (void)g.throw_(Boom{3});
        ADD_FAILURE() << "Boom did not propagate";
    } catch (const Boom& boom) {
        EXPECT_EQ(boom.code, 3);
    }
    EXPECT_TRUE(g.done());
}

TEST_F(AGenerator, AcceptsAnExceptionPtrInThrow) {
    Generator<int, void, int> g = catch_runtime_error(false);
    (void)g.next();
    EXPECT_EQ(g.throw_(std::make_exception_ptr(std::runtime_error("in"))), 2);
}

TEST_F(AGenerator, RejectsANullExceptionPtrWithTypeError) {
    Generator<int, void, int> g = catch_runtime_error(false);
    (void)g.next();
    EXPECT_EQ(error_of<asyncio::TypeError>([&] { (void)g.throw_(std::exception_ptr()); }),
              "throw_() needs an exception, not a null exception_ptr");
    EXPECT_FALSE(g.done());
}

TEST_F(AFinishedGenerator, RethrowsTheExceptionGivenToThrow) {
    Generator<int> g = count_to(0);
    (void)stop_value_of_next(g);
    EXPECT_EQ(error_of<std::runtime_error>([&] { (void)g.throw_(std::runtime_error("late")); }),
              "late");  // as Python's gen.throw() on an exhausted generator
}

// ---------------------------------------------------------------------------------------------
// close

enum class OnExit { propagate, return_value, yield_again, raise_other };

Generator<int, void, int> closable(OnExit on_exit, std::vector<std::string>* log) {
    bool exiting = false;
    try {
        co_yield 1;
    } catch (const asyncio::GeneratorExit&) {
        log->push_back("GeneratorExit");
        if (on_exit == OnExit::propagate) throw;
        if (on_exit == OnExit::raise_other) throw std::logic_error("cleanup failed");
        exiting = true;
    }
    if (exiting && on_exit == OnExit::return_value) co_return 5;
    co_yield 2;
    co_yield 3;
    co_return 0;
}

TEST_F(AGenerator, ClosesByRaisingGeneratorExitAtItsSuspensionPoint) {
    std::vector<std::string> log;
    Generator<int, void, int> g = closable(OnExit::propagate, &log);
    (void)g.next();
    EXPECT_NO_THROW(g.close());
    EXPECT_EQ(log, std::vector<std::string>{"GeneratorExit"});
    EXPECT_TRUE(g.done());
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
}

TEST_F(AGenerator, ClosesNormallyWhenItReturnsOnGeneratorExit) {
    std::vector<std::string> log;
    Generator<int, void, int> g = closable(OnExit::return_value, &log);
    (void)g.next();
    EXPECT_NO_THROW(g.close());
    EXPECT_TRUE(g.done());
    EXPECT_EQ(g.return_value(), 5);
}

TEST_F(AGenerator, ThrowsRuntimeErrorFromCloseWhenItYieldsInsteadOfFinishing) {
    std::vector<std::string> log;
    Generator<int, void, int> g = closable(OnExit::yield_again, &log);
    (void)g.next();
    EXPECT_EQ(error_of<asyncio::RuntimeError>([&] { g.close(); }),
              "generator ignored GeneratorExit");
    EXPECT_FALSE(g.done()) << "it is still suspended, at its next yield";
    EXPECT_EQ(g.next(), 3);
}

TEST_F(AGenerator, LetsAnotherExceptionRaisedWhileClosingPropagateFromClose) {
    std::vector<std::string> log;
    Generator<int, void, int> g = closable(OnExit::raise_other, &log);
    (void)g.next();
    EXPECT_EQ(error_of<std::logic_error>([&] { g.close(); }), "cleanup failed");
    EXPECT_TRUE(g.done());
}

TEST_F(AGenerator, DestroysItsLocalsWhenClosed) {
    Tally tally;
    bool saw_generator_exit = false;
    Generator<int> g = hold_locals(&tally, &saw_generator_exit);
    (void)g.next();
    g.close();
    EXPECT_TRUE(saw_generator_exit);
    EXPECT_EQ(tally.destroyed, tally.constructed);
}

TEST_F(AFinishedGenerator, IgnoresClose) {
    std::vector<std::string> log;
    Generator<int, void, int> g = closable(OnExit::propagate, &log);
    (void)g.next();
    g.close();
    EXPECT_NO_THROW(g.close());
    EXPECT_NO_THROW(g.close());
    EXPECT_EQ(log.size(), 1u);

    Generator<int> returned = count_to(0);
    (void)stop_value_of_next(returned);
    EXPECT_NO_THROW(returned.close());
}

// ---------------------------------------------------------------------------------------------
// Misuse

Generator<int, int> reenter(Generator<int, int>* const* self, std::vector<std::string>* errors) {
    const auto attempt = [errors](auto&& operation) {
        try {
            operation();
            errors->push_back("(nothing thrown)");
        } catch (const asyncio::ValueError& e) {
            errors->push_back(e.what());
        }
    };
    attempt([self] { (void)(*self)->next(); });
    attempt([self] { (void)(*self)->send(1); });
    attempt([self] { (void)(*self)->throw_(std::runtime_error("in")); });
    attempt([self] { (*self)->close(); });
    co_yield 1;
}

TEST_F(AGenerator, ThrowsValueErrorWhenResumedFromInsideItself) {
    Generator<int, int>* self = nullptr;
    std::vector<std::string> errors;
    Generator<int, int> g = reenter(&self, &errors);
    self = &g;
    EXPECT_EQ(g.next(), 1);
    EXPECT_EQ(errors, std::vector<std::string>(4, "generator already executing"));
    EXPECT_FALSE(g.done());
}

TEST_F(AnEmptyGenerator, ThrowsInvalidStateErrorFromEveryOperation) {
    Generator<int, int, int> g;
    const std::string message = "empty Generator (default-constructed or moved-from)";
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { (void)g.next(); }), message);
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { (void)g.send(1); }), message);
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { (void)g.throw_(Boom{1}); }), message);
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { g.close(); }), message);
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { g.return_value(); }), message);
    EXPECT_EQ(error_of<asyncio::InvalidStateError>([&] { (void)g.begin(); }), message);
}

TEST_F(AnEmptyGenerator, ReportsDoneAndNeitherStartedNorRunning) {
    Generator<int> g;
    EXPECT_FALSE(static_cast<bool>(g));
    EXPECT_TRUE(g.done());
    EXPECT_FALSE(g.started());
    EXPECT_FALSE(g.running());
}

TEST_F(AnEmptyGenerator, IsWhatAMoveLeavesBehind) {
    Generator<int> a = count_to(2);
    (void)a.next();
    Generator<int> b = std::move(a);
    EXPECT_FALSE(static_cast<bool>(a));
    EXPECT_TRUE(a.done());
    EXPECT_THROW((void)a.next(), asyncio::InvalidStateError);
    EXPECT_THROW(a.close(), asyncio::InvalidStateError);
    EXPECT_EQ(b.next(), 2);
}

// ---------------------------------------------------------------------------------------------
// Range-for

static_assert(std::input_iterator<Generator<int>::iterator>);
static_assert(std::sentinel_for<std::default_sentinel_t, Generator<int>::iterator>);
static_assert(std::ranges::input_range<Generator<int>>);
static_assert(std::is_same_v<std::iter_reference_t<Generator<int>::iterator>, int&&>);

TEST_F(IteratingAGenerator, VisitsEveryYieldedValueAndEndsWhenItReturns) {
    std::vector<int> seen;
    for (int v : count_to(5)) seen.push_back(v);
    EXPECT_EQ(seen, (std::vector<int>{1, 2, 3, 4, 5}));
}

TEST_F(IteratingAGenerator, PropagatesAnExceptionFromTheBody) {
    std::vector<int> seen;
    Generator<int, void, int> g = raise_after_one();
    EXPECT_THROW(
        {
            for (int v : g) seen.push_back(v);
        },
        std::runtime_error);
    EXPECT_EQ(seen, std::vector<int>{1});
    EXPECT_TRUE(g.done());
}

TEST_F(IteratingAGenerator, ContinuesFromWhereNextLeftOff) {
    Generator<int> g = count_to(4);
    EXPECT_EQ(g.next(), 1);
    std::vector<int> seen;
    for (int v : g) seen.push_back(v);
    EXPECT_EQ(seen, (std::vector<int>{2, 3, 4}));
}

TEST_F(IteratingAGenerator, VisitsNothingOnceItHasFinished) {
    Generator<int> g = count_to(1);
    (void)g.next();
    (void)stop_value_of_next(g);
    int visits = 0;
    for ([[maybe_unused]] int v : g) ++visits;
    EXPECT_EQ(visits, 0);
}

TEST_F(IteratingAGenerator, MovesMoveOnlyValuesOut) {
    bool moved_out = false;
    std::vector<int> seen;
    for (std::unique_ptr<int> p : yield_move_only(&moved_out)) seen.push_back(*p);
    EXPECT_EQ(seen, (std::vector<int>{7, 8}));
    EXPECT_TRUE(moved_out);
}

// ---------------------------------------------------------------------------------------------
// yield_from

Generator<int, void, std::string> one_two() {
    co_yield 1;
    co_yield 2;
    co_return "sub done";
}

Generator<int, void, int> around_one_two() {
    co_yield 0;
    std::string result = co_yield yield_from(one_two());
    co_yield static_cast<int>(result.size());
    co_return 100;
}

TEST_F(YieldFrom, PassesTheSubGeneratorsValuesOutAndEvaluatesToItsReturnValue) {
    std::vector<int> seen;
    Generator<int, void, int> g = around_one_two();
    for (int v : g) seen.push_back(v);
    EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 8}));
    EXPECT_EQ(g.return_value(), 100);
}

Generator<int, int, int> adder() {
    int total = 0;
    while (true) {
        std::optional<int> v = co_yield total;
        if (!v) co_return total;
        total += *v;
    }
}

Generator<int, int, int> around_adder() {
    int total = co_yield yield_from(adder());
    co_yield total * 100;
    co_return total;
}

TEST_F(YieldFrom, DeliversSentValuesToTheSubGenerator) {
    Generator<int, int, int> g = around_adder();
    EXPECT_EQ(g.next(), 0);
    EXPECT_EQ(g.send(2), 2);
    EXPECT_EQ(g.send(3), 5);
    EXPECT_EQ(g.next(), 500);  // adder returned 5
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_EQ(g.return_value(), 5);
}

Generator<int, void, int> around(Generator<int, void, int> sub, std::vector<std::string>* log) {
    bool caught = false;
    try {
        int r = co_yield yield_from(std::move(sub));
        log->push_back("sub returned " + std::to_string(r));
    } catch (const std::runtime_error& e) {
        log->push_back(std::string("caught ") + e.what());
        caught = true;
    } catch (const asyncio::GeneratorExit&) {
        log->push_back("GeneratorExit");
        throw;
    }
    if (caught) co_yield 99;
    co_return 7;
}

TEST_F(YieldFrom, RaisesAThrownExceptionInTheSubGeneratorFirst) {
    std::vector<std::string> log;
    Generator<int, void, int> g = around(catch_runtime_error(false), &log);
    EXPECT_EQ(g.next(), 1);
    EXPECT_EQ(g.throw_(std::runtime_error("in")), 2);  // the sub caught it and yielded
    EXPECT_TRUE(log.empty());
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_EQ(log, std::vector<std::string>{"sub returned 0"});
}

Generator<int, void, int> yield_one() {
    co_yield 1;
    co_return 1;
}

TEST_F(YieldFrom, PropagatesAnExceptionTheSubGeneratorDoesNotCatchIntoTheDelegator) {
    std::vector<std::string> log;
    Generator<int, void, int> g = around(yield_one(), &log);
    EXPECT_EQ(g.next(), 1);
    EXPECT_EQ(g.throw_(std::runtime_error("in")), 99);
    EXPECT_EQ(log, std::vector<std::string>{"caught in"});
}

TEST_F(YieldFrom, PropagatesAnExceptionRaisedInsideTheSubGeneratorIntoTheDelegator) {
    std::vector<std::string> log;
    Generator<int, void, int> g = around(raise_after_one(), &log);
    EXPECT_EQ(g.next(), 1);
    EXPECT_EQ(g.next(), 99);
    EXPECT_EQ(log, std::vector<std::string>{"caught boom"});
}

Generator<int, void, int> pass_through(Generator<int, void, int> sub) {
    co_return co_yield yield_from(std::move(sub));
}

TEST_F(YieldFrom, LetsAnExceptionNobodyCatchesOutOfNext) {
    Generator<int, void, int> g = pass_through(raise_after_one());
    EXPECT_EQ(g.next(), 1);
    EXPECT_EQ(error_of<std::runtime_error>([&] { (void)g.next(); }), "boom");
    EXPECT_TRUE(g.done());
}

TEST_F(YieldFrom, ClosesTheSubGeneratorFirstAndThenTheDelegator) {
    std::vector<std::string> log;
    std::vector<std::string> sub_log;
    Generator<int, void, int> g = around(closable(OnExit::propagate, &sub_log), &log);
    EXPECT_EQ(g.next(), 1);
    EXPECT_NO_THROW(g.close());
    EXPECT_EQ(sub_log, std::vector<std::string>{"GeneratorExit"});
    EXPECT_EQ(log, std::vector<std::string>{"GeneratorExit"});
    EXPECT_TRUE(g.done());
}

TEST_F(YieldFrom, RaisesGeneratorExitInTheDelegatorEvenWhenTheSubGeneratorReturnsOnClose) {
    std::vector<std::string> log;
    std::vector<std::string> sub_log;
    Generator<int, void, int> g = around(closable(OnExit::return_value, &sub_log), &log);
    (void)g.next();
    EXPECT_NO_THROW(g.close());
    EXPECT_EQ(sub_log, std::vector<std::string>{"GeneratorExit"});
    EXPECT_EQ(log, std::vector<std::string>{"GeneratorExit"}) << "not 'sub returned 5', as Python";
}

Generator<int, void, int> around_catching_runtime_error(Generator<int, void, int> sub,
                                                        std::vector<std::string>* log,
                                                        bool yield_after) {
    bool caught = false;
    try {
        static_cast<void>(co_yield yield_from(std::move(sub)));
    } catch (const asyncio::RuntimeError& e) {
        log->push_back(std::string("caught ") + e.what());
        caught = true;
    }
    if (caught && yield_after) co_yield 42;
    co_return 0;
}

TEST_F(YieldFrom, RaisesRuntimeErrorInTheDelegatorWhenTheSubGeneratorIgnoresClose) {
    std::vector<std::string> log;
    std::vector<std::string> sub_log;
    Generator<int, void, int> g =
        around_catching_runtime_error(closable(OnExit::yield_again, &sub_log), &log, false);
    (void)g.next();
    EXPECT_NO_THROW(g.close());  // the delegator returned: closed
    EXPECT_EQ(sub_log, std::vector<std::string>{"GeneratorExit"});
    EXPECT_EQ(log, std::vector<std::string>{"caught generator ignored GeneratorExit"});
    EXPECT_TRUE(g.done());
}

TEST_F(YieldFrom, ThrowsRuntimeErrorFromCloseWhenTheDelegatorIgnoresItToo) {
    std::vector<std::string> log;
    std::vector<std::string> sub_log;
    Generator<int, void, int> g =
        around_catching_runtime_error(closable(OnExit::yield_again, &sub_log), &log, true);
    (void)g.next();
    EXPECT_EQ(error_of<asyncio::RuntimeError>([&] { g.close(); }),
              "generator ignored GeneratorExit");
    EXPECT_EQ(log, std::vector<std::string>{"caught generator ignored GeneratorExit"});
    EXPECT_FALSE(g.done());
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
}

TEST_F(YieldFrom, ClosesTheSubGeneratorWhenGeneratorExitIsThrownIn) {
    std::vector<std::string> log;
    std::vector<std::string> sub_log;
    Generator<int, void, int> g = around(closable(OnExit::return_value, &sub_log), &log);
    (void)g.next();
    EXPECT_THROW((void)g.throw_(asyncio::GeneratorExit()), asyncio::GeneratorExit);
    EXPECT_EQ(sub_log, std::vector<std::string>{"GeneratorExit"});
    EXPECT_EQ(log, std::vector<std::string>{"GeneratorExit"});
    EXPECT_TRUE(g.done());
}

TEST_F(YieldFrom, DestroysTheSubGeneratorsLocalsWhenClosed) {
    Tally tally;
    bool saw_generator_exit = false;
    Generator<int> g = [](Generator<int> sub) -> Generator<int> {
        co_yield yield_from(std::move(sub));
    }(hold_locals(&tally, &saw_generator_exit));
    EXPECT_EQ(g.next(), 1);
    g.close();
    EXPECT_TRUE(saw_generator_exit);
    EXPECT_EQ(tally.destroyed, tally.constructed);
}

TEST_F(YieldFrom, ContinuesAnAlreadyStartedSubGeneratorFromWhereItIs) {
    Generator<int> sub = count_to(3);
    EXPECT_EQ(sub.next(), 1);
    std::vector<int> seen;
    for (int v : [](Generator<int> s) -> Generator<int> {
             co_yield yield_from(std::move(s));
         }(std::move(sub))) {
        seen.push_back(v);
    }
    EXPECT_EQ(seen, (std::vector<int>{2, 3}));
}

Generator<std::string, int, int> letters(std::vector<std::optional<int>>* received) {
    for (const char* letter : {"a", "b", "c"}) {
        received->push_back(co_yield letter);
    }
    co_return 3;
}

Generator<std::string, int, int> middle(std::vector<std::optional<int>>* received) {
    int n = co_yield yield_from(letters(received));
    co_yield "middle got " + std::to_string(n);
    co_return n * 10;
}

Generator<std::string, int, int> top(Generator<std::string, int, int> mid) {
    int n = co_yield yield_from(std::move(mid));
    co_yield "top got " + std::to_string(n);
    co_return n + 1;
}

TEST_F(YieldFrom, AdoptsASubGeneratorThatIsItselfDelegating) {
    std::vector<std::optional<int>> received;
    Generator<std::string, int, int> mid = middle(&received);
    EXPECT_EQ(mid.next(), "a");  // mid is now suspended inside its own yield_from
    Generator<std::string, int, int> g = top(std::move(mid));
    EXPECT_EQ(g.next(), "b");
    EXPECT_EQ(g.send(2), "c");
    EXPECT_EQ(g.send(3), "middle got 3");
    EXPECT_EQ(g.next(), "top got 30");
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_EQ(g.return_value(), 31);
    EXPECT_EQ(received, (std::vector<std::optional<int>>{std::nullopt, 2, 3}));
}

Generator<int, void, int> delegate_and_report(Generator<int, void, int>* sub,
                                              std::vector<std::string>* log) {
    try {
        int r = co_yield yield_from(std::move(*sub));
        log->push_back("returned " + std::to_string(r));
    } catch (const std::exception& e) {
        log->push_back(e.what());
    }
    co_return 0;
}

TEST_F(YieldFrom, EvaluatesToTheStoredReturnValueOfASubGeneratorThatHasReturned) {
    Generator<int, void, int> sub = [](int v) -> Generator<int, void, int> { co_return v; }(6);
    (void)stop_value_of_next(sub);
    std::vector<std::string> log;
    Generator<int, void, int> g = delegate_and_report(&sub, &log);
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);  // nothing yielded
    EXPECT_EQ(log, std::vector<std::string>{"returned 6"});
}

TEST_F(YieldFrom, ThrowsInvalidStateErrorForASubGeneratorThatFinishedWithoutReturning) {
    Generator<int, void, int> sub = yield_one();
    sub.close();
    std::vector<std::string> log;
    Generator<int, void, int> g = delegate_and_report(&sub, &log);
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_EQ(log,
              std::vector<std::string>{"yield_from a generator that finished without returning"});
}

TEST_F(YieldFrom, ThrowsInvalidStateErrorForAnEmptyGenerator) {
    Generator<int, void, int> sub;
    std::vector<std::string> log;
    Generator<int, void, int> g = delegate_and_report(&sub, &log);
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_EQ(log, std::vector<std::string>{
                       "yield_from an empty Generator (default-constructed or moved-from)"});
}

TEST_F(YieldFrom, ThrowsValueErrorForAGeneratorThatIsRunning) {
    Generator<int, void, int> g;
    std::vector<std::string> log;
    g = delegate_and_report(&g, &log);  // delegates to itself while running
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_EQ(log, std::vector<std::string>{"generator already executing"});
    EXPECT_TRUE(static_cast<bool>(g)) << "the running generator was not taken over";
}

Generator<int> flatten(const std::vector<std::vector<int>>* lists) {
    for (const std::vector<int>& list : *lists) {
        co_yield yield_from([](const std::vector<int>* l) -> Generator<int> {
            for (int v : *l) co_yield v;
        }(&list));
    }
}

TEST_F(YieldFrom, WorksWithoutASendType) {
    const std::vector<std::vector<int>> lists{{1, 2}, {}, {3}, {4, 5}};
    std::vector<int> seen;
    for (int v : flatten(&lists)) seen.push_back(v);
    EXPECT_EQ(seen, (std::vector<int>{1, 2, 3, 4, 5}));
}

// A chain of `depth` delegations; the innermost yields where the stack is, sums what it is sent,
// and returns the sum when resumed by next(); each level adds 1 to it.
Generator<std::uintptr_t, int, int> chain(int depth) {
    if (depth > 0) {
        int r = co_yield yield_from(chain(depth - 1));
        co_return r + 1;
    }
    int total = 0;
    while (true) {
        std::optional<int> v = co_yield stack_position();
        if (!v) co_return total;
        total += *v;
    }
}

[[gnu::noinline]] std::uintptr_t send_from_here(Generator<std::uintptr_t, int, int>& g, int v) {
    return g.send(v);
}

TEST_F(YieldFrom, HandlesTenThousandNestedDelegations) {
    Generator<std::uintptr_t, int, int> g = chain(10'000);
    (void)g.next();
    (void)g.send(2);
    (void)g.send(3);
    const std::optional<std::any> value = stop_value_of_next(g);
    ASSERT_TRUE(value.has_value());
    EXPECT_EQ(std::any_cast<int>(*value), 5 + 10'000);
}

TEST_F(YieldFrom, SendsStraightToTheInnermostGeneratorWhateverTheDepth) {
    Generator<std::uintptr_t, int, int> flat = chain(0);
    Generator<std::uintptr_t, int, int> deep = chain(10'000);
    (void)flat.next();
    (void)deep.next();
    const std::uintptr_t flat_position = send_from_here(flat, 1);
    const std::uintptr_t deep_position = send_from_here(deep, 1);
    // Not necessarily equal (the delegated path may use another prologue), but not 10,000 levels
    // apart: even one byte a level would be 10 KB.
    const std::uintptr_t distance = deep_position > flat_position ? deep_position - flat_position
                                                                  : flat_position - deep_position;
    EXPECT_LT(distance, 1024u);
    EXPECT_EQ(send_from_here(deep, 1), deep_position);
}

// Records where the stack is at the innermost generator once the chain is set up, and at each
// level as the chain unwinds.
Generator<int, void, int> record_unwinding(int depth, std::vector<std::uintptr_t>* positions) {
    if (depth > 0) {
        int r = co_yield yield_from(record_unwinding(depth - 1, positions));
        positions->push_back(stack_position());
        co_return r + 1;
    }
    positions->push_back(stack_position());
    co_yield 0;
    co_return 0;
}

TEST_F(YieldFrom, SetsUpAndUnwindsADeepChainWithoutGrowingTheStack) {
    std::vector<std::uintptr_t> positions;
    Generator<int, void, int> g = record_unwinding(10'000, &positions);
    EXPECT_EQ(g.next(), 0);
    EXPECT_THROW((void)g.next(), asyncio::StopIteration);
    EXPECT_EQ(g.return_value(), 10'000);
    ASSERT_EQ(positions.size(), 10'001u);
    const auto [lowest, highest] = std::minmax_element(positions.begin(), positions.end());
    EXPECT_LT(*highest - *lowest, 4096u) << "the stack grew with the depth of the chain";
}

Generator<int, int, int> counted_chain(int depth, Tally* tally) {
    Counted local(*tally);
    if (depth > 0) co_return co_yield yield_from(counted_chain(depth - 1, tally));
    co_yield 0;
    co_return 0;
}

TEST_F(YieldFrom, DestroysEveryLevelOfAnUnfinishedChainExactlyOnce) {
    Tally tally;
    {
        Generator<int, int, int> g = counted_chain(10'000, &tally);
        EXPECT_EQ(g.next(), 0);
        EXPECT_EQ(tally.constructed, 10'001);
        EXPECT_EQ(tally.destroyed, 0);
    }
    EXPECT_EQ(tally.constructed, 10'001);
    EXPECT_EQ(tally.destroyed, 10'001);
}

TEST_F(YieldFrom, ClosesEveryLevelOfADeepChain) {
    Tally tally;
    Generator<int, int, int> g = counted_chain(10'000, &tally);
    (void)g.next();
    EXPECT_NO_THROW(g.close());
    EXPECT_TRUE(g.done());
    EXPECT_EQ(tally.destroyed, tally.constructed);
}

}  // namespace
