#include "asyncio/detail/type_name.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace asyncio::detail {

std::string type_name(const std::type_info& t) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status),
                                                std::free);
    if (status != 0 || !name) return t.name();
    return name.get();
}

}  // namespace asyncio::detail
