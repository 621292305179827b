// Internal: the dtype rules of a load. A conversion that changes no value (widening) is always
// fine; one that rounds (narrowing) needs the caller's consent; one that turns a finite value into
// Inf or NaN (overflow) is an error naming the tensor unless the caller accepts that too.
#pragma once

#include <cstddef>
#include <string_view>

#include "ckptio/dtype.h"

namespace ckptio::detail {

// True when `from` == `to`, or convert_elements(from -> to) keeps every value of `from` exactly
// (NaN stays NaN, -0 stays -0, infinities stay infinite): F16/BF16 -> F32, F32 -> F64, F8 -> F16...
// False for pairs convert_elements cannot do.
bool is_widening(DType from, DType to);

// convert_elements, then, unless allow_overflow, Error(Mismatch) naming `tensor` and the first
// element whose finite source value became infinite or NaN in `to`. Widening pairs skip the check.
void convert_checked(DType from, const void* src, DType to, void* dst, size_t count,
                     std::string_view tensor, bool allow_overflow);

}  // namespace ckptio::detail
