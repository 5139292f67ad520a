// GoogleTest glue for asyncio/testing.hpp: a listener that prints the chaos seed after every
// failed test, so a failure under ASYNCIO_SEED (or a Chaos option) says how to replay it.
//
//   ASYNCIO_TESTING_PRINT_SEED_ON_FAILURE();   // once, at namespace scope in one test file
//
// or, with your own main(): ::testing::UnitTest::GetInstance()->listeners().Append(
//     new asyncio::testing::SeedPrinter);
// It prints nothing when no loop of the process had chaos on. Header-only: the library itself
// does not depend on GoogleTest.
#pragma once

#include <gtest/gtest.h>

#include "asyncio/testing.hpp"

namespace asyncio::testing {

class SeedPrinter : public ::testing::EmptyTestEventListener {
public:
    void OnTestEnd(const ::testing::TestInfo& info) override {
        if (!info.result()->Failed()) return;
        if (const auto seed = last_seed()) print_seed(*seed);
    }
};

/// Appends a SeedPrinter to GoogleTest's listeners (which then owns it); returns true.
inline bool install_seed_printer() {
    ::testing::UnitTest::GetInstance()->listeners().Append(new SeedPrinter);
    return true;
}

}  // namespace asyncio::testing

/// Installs the listener before main() runs (works with gtest_main).
#define ASYNCIO_TESTING_PRINT_SEED_ON_FAILURE() \
    [[maybe_unused]] static const bool asyncio_testing_seed_printer_ = ::asyncio::testing::install_seed_printer()
