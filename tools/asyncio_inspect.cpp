// asyncio-inspect ps|pstree PID: every task of every event loop of a running program that was
// started with ASYNCIO_INSPECT=1 (tools/inspect_client.cpp; the server is src/inspect.cpp).
#include <iostream>

#include "inspect_client.hpp"

int main(int argc, char** argv) { return asyncio::inspect_tool::run(argc, argv, std::cout, std::cerr); }
