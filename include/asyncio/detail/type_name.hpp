// The readable name of a type for reports ("std::runtime_error", not "St13runtime_error").
#pragma once

#include <string>
#include <typeinfo>

namespace asyncio::detail {

/// The demangled name of t (the mangled one if demangling fails). Never throws but bad_alloc.
std::string type_name(const std::type_info& t);

}  // namespace asyncio::detail
