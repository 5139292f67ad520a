// asyncio::run: main's value or exception, shutdown of tasks left pending, misuse inside a running
// loop, and the seed's hello/gather program on virtual time.
#include "asyncio/run.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "asyncio/coroutine.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "asyncio/event.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/signals.hpp"
#include "test_support.hpp"

namespace {

using asyncio::CancelledError;
using asyncio::Coroutine;
using asyncio::Task;
using asyncio_test::Counted;
using asyncio_test::Reports;
using asyncio_test::virtual_time;
using namespace std::chrono_literals;

class Run : public asyncio_test::LeakChecked {};

using asyncio_test::elapsed;

Coroutine<int> answer() { co_return 42; }

Coroutine<> sleep_a_day() { co_await asyncio::sleep(24h); }

TEST_F(Run, ReturnsTheValueOfMain) {
    EXPECT_EQ(asyncio::run(answer(), virtual_time()), 42);
    auto text = []() -> Coroutine<std::string> {
        co_await asyncio::sleep(1s);
        co_return "done";
    };
    EXPECT_EQ(asyncio::run(text(), virtual_time()), "done");
}

TEST_F(Run, RunsAVoidMain) {
    bool ran = false;
    auto main = [&]() -> Coroutine<> {
        co_await asyncio::sleep(1s);
        ran = true;
    };
    asyncio::run(main(), virtual_time());
    EXPECT_TRUE(ran);
}

TEST_F(Run, RethrowsTheExceptionOfMain) {
    auto main = []() -> Coroutine<int> {
        co_await asyncio::sleep(1s);
        throw std::invalid_argument("main failed");
    };
    try {
        asyncio::run(main(), virtual_time());
        ADD_FAILURE() << "run did not throw";
    } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(), "main failed");
    }
}

TEST_F(Run, RethrowsCancelledErrorOfAMainThatWasCancelled) {
    auto main = []() -> Coroutine<> {
        asyncio::current_task().cancel();
        co_await asyncio::sleep(1s);
    };
    EXPECT_THROW(asyncio::run(main(), virtual_time()), CancelledError);
}

TEST_F(Run, WorksOnTheRealClock) {
    auto main = []() -> Coroutine<int> {
        co_await asyncio::sleep(0s);
        co_await asyncio::sleep(1us);
        co_return 5;
    };
    EXPECT_EQ(asyncio::run(main()), 5);
}

TEST_F(Run, CanBeCalledAgainAfterItReturned) {
    EXPECT_EQ(asyncio::run(answer(), virtual_time()), 42);
    EXPECT_EQ(asyncio::run(answer(), virtual_time()), 42);
    EXPECT_THROW(asyncio::get_running_loop(), asyncio::RuntimeError);
}

TEST_F(Run, RegressionRunCrashesWhenATaskIsLeftSleeping) {
    // Shutdown cancelled leftover tasks while the loop was not running: the sleep's cancel hook
    // dereferenced the (null) running loop.
    auto main = []() -> Coroutine<> {
        asyncio::create_task(sleep_a_day());
        co_await asyncio::sleep(0s);
    };
    asyncio::run(main(), virtual_time());
}

TEST_F(Run, CancelsAndFinishesTheTasksLeftPending) {
    std::vector<std::string> log;
    auto worker = [&](Counted c, std::string name) -> Coroutine<int> {
        bool cancelled = false;
        try {
            co_await asyncio::sleep(1h);
        } catch (const CancelledError&) {
            cancelled = true;
        }
        if (cancelled) {
            log.push_back(name + " cleanup");
            co_await asyncio::sleep(1s);  // cleanup may itself wait
            log.push_back(name + " cleaned");
            throw CancelledError();
        }
        co_return c.value();
    };
    Reports reports;
    auto main = [&]() -> Coroutine<int> {
        reports.install(asyncio::get_running_loop());
        asyncio::create_task(worker(Counted(1), "a"));
        Task<int> kept = asyncio::create_task(worker(Counted(2), "b"));
        co_await asyncio::sleep(1s);
        EXPECT_EQ(Counted::live(), 2);
        co_return 0;
    };
    EXPECT_EQ(asyncio::run(main(), virtual_time()), 0);
    EXPECT_EQ(Counted::live(), 0);
    // Both were cancelled together (in no particular order), then both finished their cleanup.
    ASSERT_EQ(log.size(), 4u);
    std::sort(log.begin(), log.begin() + 2);
    std::sort(log.begin() + 2, log.end());
    EXPECT_EQ(log, (std::vector<std::string>{"a cleanup", "b cleanup", "a cleaned", "b cleaned"}));
    EXPECT_EQ(reports.size(), 0u);  // cancellation is not an error to report
}

TEST_F(Run, LetsALeftoverTaskThatSuppressesCancellationFinish) {
    int result = 0;
    auto defiant = [&]() -> Coroutine<> {
        try {
            co_await asyncio::sleep(1h);
        } catch (const CancelledError&) {
        }
        co_await asyncio::sleep(1s);
        result = 1;
    };
    auto main = [&]() -> Coroutine<> {
        asyncio::create_task(defiant());
        co_await asyncio::sleep(0s);  // let it start: one cancelled before it ran would not run
    };
    asyncio::run(main(), virtual_time());
    EXPECT_EQ(result, 1);
}

TEST_F(Run, ReportsAFailureOfALeftoverTaskDuringShutdown) {
    Reports reports;
    auto fails_on_cancel = []() -> Coroutine<> {
        try {
            co_await asyncio::sleep(1h);
        } catch (const CancelledError&) {
            throw std::runtime_error("cleanup failed");
        }
    };
    auto main = [&]() -> Coroutine<> {
        reports.install(asyncio::get_running_loop());
        asyncio::create_task(fails_on_cancel(), "bad-cleanup");
        co_await asyncio::sleep(0s);
    };
    asyncio::run(main(), virtual_time());
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_EQ(reports.entries()[0].message, "unhandled exception during asyncio.run() shutdown");
    EXPECT_EQ(reports.entries()[0].task_name, "bad-cleanup");
    EXPECT_EQ(reports.what(0), "cleanup failed");
}

TEST_F(Run, CancelsLeftoverTasksAlsoWhenMainFails) {
    bool cleaned = false;
    auto worker = [&]() -> Coroutine<> {
        try {
            co_await asyncio::sleep(1h);
        } catch (const CancelledError&) {
            cleaned = true;
            throw;
        }
    };
    auto main = [&]() -> Coroutine<> {
        asyncio::create_task(worker());
        co_await asyncio::sleep(1s);
        throw std::runtime_error("main failed");
    };
    EXPECT_THROW(asyncio::run(main(), virtual_time()), std::runtime_error);
    EXPECT_TRUE(cleaned);
}

TEST_F(Run, InsideARunningLoopRaisesRuntimeError) {
    bool inner_ran = false;
    auto inner = [&](Counted) -> Coroutine<int> {
        inner_ran = true;
        co_return 1;
    };
    auto main = [&]() -> Coroutine<> {
        EXPECT_THROW(asyncio::run(inner(Counted(1)), virtual_time()), asyncio::RuntimeError);
        EXPECT_THROW(asyncio::run(inner(Counted(2))), asyncio::RuntimeError);
        co_return;
    };
    asyncio::run(main(), virtual_time());
    EXPECT_FALSE(inner_ran);
}

// The seed program (examples/seed_hello_gather.cpp), on virtual time.
Coroutine<std::string> hello(std::string name) {
    std::printf("Hello %s!\n", name.c_str());
    co_await asyncio::sleep(1s);
    std::printf("Hello %s again!\n", name.c_str());
    co_return name;
}

TEST_F(Run, DebugOptionTurnsTheLoopsDebugModeOn) {
    // Python's asyncio.run(main(), debug=True).
    bool seen = false;
    asyncio::run([](bool& out) -> Coroutine<> {
        out = asyncio::get_running_loop().get_debug();
        co_return;
    }(seen), {.debug = true, .clock = virtual_time()});
    EXPECT_TRUE(seen);
    asyncio::run([](bool& out) -> Coroutine<> {
        out = asyncio::get_running_loop().get_debug();
        co_return;
    }(seen), {.debug = false});
    EXPECT_FALSE(seen);
}

class ARunner : public asyncio_test::LeakChecked {};

TEST_F(ARunner, RunsSeveralCoroutinesOnOneLoopThenShutsDown) {
    asyncio::Runner runner({.clock = virtual_time()});
    asyncio::EventLoop& loop = runner.get_loop();
    Task<> left;
    int first = runner.run([](Task<>& keep) -> Coroutine<int> {
        keep = asyncio::create_task(asyncio_test::sleep_a_day());  // still pending after run()
        co_return 1;
    }(left));
    EXPECT_EQ(first, 1);
    EXPECT_EQ(&runner.get_loop(), &loop);  // the same loop
    int second = runner.run([]() -> Coroutine<int> { co_return 2; }());
    EXPECT_EQ(second, 2);
    EXPECT_FALSE(left.done());
    runner.close();  // cancels what is left and lets it finish, as asyncio.Runner.close()
    EXPECT_TRUE(left.cancelled());
    EXPECT_TRUE(loop.is_closed());
    runner.close();  // idempotent
    EXPECT_THROW(runner.get_loop(), asyncio::RuntimeError);
    EXPECT_THROW(runner.run([]() -> Coroutine<> { co_return; }()), asyncio::RuntimeError);
}

TEST_F(ARunner, InsideARunningLoopRaisesRuntimeErrorWithPythonsText) {
    std::string text = asyncio::run([]() -> Coroutine<std::string> {
        asyncio::Runner inner;
        try {
            inner.run([]() -> Coroutine<> { co_return; }());
        } catch (const asyncio::RuntimeError& e) {
            co_return e.what();
        }
        co_return "no error";
    }(), virtual_time());
    EXPECT_EQ(text, "Runner.run() cannot be called from a running event loop");
}

TEST_F(ARunner, ClosesOnDestruction) {
    Task<> left;
    {
        asyncio::Runner runner({.clock = virtual_time()});
        runner.run([](Task<>& keep) -> Coroutine<> {
            keep = asyncio::create_task(asyncio_test::sleep_a_day());
            co_return;
        }(left));
    }
    EXPECT_TRUE(left.cancelled());
}

TEST_F(Run, RunsTheSeedHelloGatherProgramInOneSecondOfVirtualTime) {
    asyncio::Duration took{};
    auto main = [&]() -> Coroutine<int> {
        auto [a, b] = co_await asyncio::gather(hello("Bob"), hello("Alice"));
        std::printf("['%s', '%s']\n", a.c_str(), b.c_str());
        took = elapsed();
        co_return 3;
    };
    std::fflush(stdout);
    ::testing::internal::CaptureStdout();
    const int result = asyncio::run(main(), virtual_time());
    std::fflush(stdout);
    const std::string out = ::testing::internal::GetCapturedStdout();
    EXPECT_EQ(result, 3);
    EXPECT_EQ(took, 1s);
    EXPECT_EQ(out,
              "Hello Bob!\n"
              "Hello Alice!\n"
              "Hello Bob again!\n"
              "Hello Alice again!\n"
              "['Bob', 'Alice']\n");
}

}  // namespace

// Reliability issue #7 (4): asyncio::run's shutdown cancels every task left, newest first, and a
// cancel() of a task awaiting a task travels down the chain below it (it recursed once per task:
// 10,000 overflowed under ASan). A task that passed its cancellation on stays waiting, so each
// later cancel() walks the rest of the chain again, as CPython's Task.cancel does through
// _fut_waiter: shutdown over a chain costs depth^2/2 hook calls. Hence 5,000 here, on a 256 KiB
// stack, which a recursion of that depth would overflow (100,000 deep: task_test's tests).
namespace {

Coroutine<> leaves_a_chain_innermost_first(int depth) {
    static asyncio::Event never;  // outlives the run
    (void)asyncio_test::chain_of(depth, never, [](Task<> inner) -> Coroutine<> { co_await inner; });
    co_await asyncio::sleep(0s);
    co_await asyncio::sleep(0s);
}

using asyncio_test::chain_link;

Coroutine<> leaves_a_chain_outermost_first(int depth) {
    static asyncio::Event never;
    static int built;
    built = 0;
    (void)asyncio::create_task(chain_link(depth, built, never));
    while (built < depth) co_await asyncio::sleep(0s);
    co_await asyncio::sleep(0s);
}

TEST_F(Run, RegressionShutdownCancelsADeepAwaitChainWhoseOutermostIsNewest) {
    asyncio::run(leaves_a_chain_innermost_first(5'000), virtual_time());
}

TEST_F(Run, RegressionShutdownCancelsDeepAwaitChainsOnASmallStack) {
    ASSERT_TRUE(asyncio_test::run_on_small_stack(256 * 1024, [] {
        asyncio::run(leaves_a_chain_innermost_first(5'000), virtual_time());
        asyncio::run(leaves_a_chain_outermost_first(5'000), virtual_time());
    }));
}

}  // namespace

// ---- Ctrl-C (Python 3.11+'s Runner): tests/cpython_scenarios/s12_ctrl_c.py ----
//
// These run on the main thread (gtest's), where run() handles SIGINT; the signal goes to this
// process only (kill(getpid())).

namespace ctrl_c {

void (*disposition(int sig))(int) {
    struct sigaction sa {};
    sigaction(sig, nullptr, &sa);
    return sa.sa_handler;
}

void press() { ::kill(::getpid(), SIGINT); }

/// Presses Ctrl-C from a callback 10 ms (real time) from now.
void press_soon() { asyncio::get_running_loop().call_later(10ms, press); }

}  // namespace ctrl_c

class RunCtrlC : public asyncio_test::LeakChecked {
protected:
    void SetUp() override {
        LeakChecked::SetUp();
        ASSERT_EQ(ctrl_c::disposition(SIGINT), SIG_DFL);
    }
    void TearDown() override {
        EXPECT_EQ(ctrl_c::disposition(SIGINT), SIG_DFL) << "SIGINT's disposition not restored";
        LeakChecked::TearDown();
    }
};

TEST_F(RunCtrlC, TheFirstCtrlCCancelsMainAndRunRaisesKeyboardInterrupt) {  // s12 b
    bool cancelled = false;
    EXPECT_THROW(asyncio::run([](bool& c) -> Coroutine<> {
                     EXPECT_NE(ctrl_c::disposition(SIGINT), SIG_DFL);  // handled while run() runs
                     ctrl_c::press_soon();
                     try {
                         co_await asyncio::sleep(10s);
                     } catch (const CancelledError&) {
                         c = true;
                         throw;
                     }
                 }(cancelled)),
                 asyncio::KeyboardInterrupt);
    EXPECT_TRUE(cancelled);
}

TEST_F(RunCtrlC, KeyboardInterruptIsABaseExceptionNotAStdException) {
    static_assert(std::is_base_of_v<asyncio::BaseException, asyncio::KeyboardInterrupt>);
    static_assert(!std::is_base_of_v<std::exception, asyncio::KeyboardInterrupt>);
    EXPECT_STREQ(asyncio::KeyboardInterrupt().what(), "KeyboardInterrupt");
}

TEST_F(RunCtrlC, AMainThatSwallowsTheCancellationReturnsItsValue) {  // s12 d
    EXPECT_EQ(asyncio::run([]() -> Coroutine<int> {
                  ctrl_c::press_soon();
                  try {
                      co_await asyncio::sleep(10s);
                  } catch (const CancelledError&) {
                      co_return 42;
                  }
                  co_return 0;
              }()),
              42);
}

TEST_F(RunCtrlC, ACtrlCWhenMainIsAlreadyFinishingRaisesKeyboardInterrupt) {
    // Pressed in main's last step: too late to be delivered as a cancellation (in Python the
    // cancellation lands on the finishing task, which ends cancelled): KeyboardInterrupt.
    EXPECT_THROW(asyncio::run([]() -> Coroutine<int> {
                     ctrl_c::press();
                     co_return 7;
                 }()),
                 asyncio::KeyboardInterrupt);
}

TEST_F(RunCtrlC, CancelledAlsoByAnotherRequestStaysCancelledError) {
    // Python: KeyboardInterrupt only if task.uncancel() == 0, i.e. the Ctrl-C was the only request.
    EXPECT_THROW(asyncio::run([]() -> Coroutine<> {
                     Task<> self = asyncio::current_task();
                     asyncio::get_running_loop().call_later(5ms, [self]() mutable { self.cancel(); });
                     ctrl_c::press_soon();
                     try {
                         co_await asyncio::sleep(10s);
                     } catch (const CancelledError&) {
                     }
                     co_await asyncio::sleep(30ms);  // the other request is still pending: raised here
                     co_await asyncio::sleep(10s);
                 }()),
                 CancelledError);
}

TEST_F(RunCtrlC, AMainWithItsOwnSigintHandlerReplacesRunsOne) {  // s12 e
    std::string got = asyncio::run([]() -> Coroutine<std::string> {
        asyncio::EventLoop& loop = asyncio::get_running_loop();
        asyncio::Event ev;
        loop.add_signal_handler(SIGINT, [&] { ev.set(); });
        ctrl_c::press_soon();
        co_await ev.wait();
        // A second press goes to the handler too: no kill.
        ev.clear();
        ctrl_c::press_soon();
        co_await ev.wait();
        co_return "handler";
    }());
    EXPECT_EQ(got, "handler");
}

TEST_F(RunCtrlC, AMainThatWaitsForSigintGetsItInsteadOfBeingCancelled) {
    EXPECT_EQ(asyncio::run([]() -> Coroutine<int> {
                  ctrl_c::press_soon();
                  const int sig = co_await asyncio::wait_signal(SIGINT, SIGTERM);
                  co_await asyncio::sleep(1ms);  // not cancelled meanwhile
                  co_return sig;
              }()),
              SIGINT);
}

TEST_F(RunCtrlC, WithSigintIgnoredRunLeavesItAlone) {  // s12 f
    struct sigaction ign {}, before{};
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGINT, &ign, &before);
    EXPECT_EQ(asyncio::run([]() -> Coroutine<std::string> {
                  EXPECT_EQ(ctrl_c::disposition(SIGINT), SIG_IGN);
                  ctrl_c::press();
                  co_await asyncio::sleep(50ms);
                  co_return "not interrupted";
              }()),
              "not interrupted");
    EXPECT_EQ(ctrl_c::disposition(SIGINT), SIG_IGN);
    sigaction(SIGINT, &before, nullptr);
}

TEST_F(RunCtrlC, OffTheMainThreadRunDoesNotTakeSigint) {
    void (*during)(int) = nullptr;
    std::thread t([&] {
        asyncio::run([](void (*&d)(int)) -> Coroutine<> {
            d = ctrl_c::disposition(SIGINT);
            co_return;
        }(during));
    });
    t.join();
    EXPECT_EQ(during, SIG_DFL);
}

TEST_F(RunCtrlC, ARunnerHandlesCtrlCInEachRunAndNotBetween) {
    asyncio::Runner runner;
    EXPECT_THROW(runner.run([]() -> Coroutine<> {
                     ctrl_c::press_soon();
                     co_await asyncio::sleep(10s);
                 }()),
                 asyncio::KeyboardInterrupt);
    EXPECT_EQ(ctrl_c::disposition(SIGINT), SIG_DFL);
    EXPECT_EQ(runner.run([]() -> Coroutine<int> {
                  EXPECT_NE(ctrl_c::disposition(SIGINT), SIG_DFL);
                  co_await asyncio::sleep(1ms);
                  co_return 5;
              }()),
              5);  // the count of presses starts again
    runner.close();
}

TEST(RunCtrlCDeathTest, ASecondCtrlCWhileUnwindingKillsTheProcessBySigint) {  // s12 c
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            asyncio::run([]() -> Coroutine<> {
                ctrl_c::press_soon();
                try {
                    co_await asyncio::sleep(10s);
                } catch (const CancelledError&) {
                    // Unwinding, and stuck (the loop does not run): the second press must not
                    // wait for the loop.
                    std::thread([] {
                        std::this_thread::sleep_for(20ms);
                        ctrl_c::press();
                    }).detach();
                    std::this_thread::sleep_for(10s);
                }
            }());
            std::exit(0);
        },
        ::testing::KilledBySignal(SIGINT), "");
}
