// How many threads ckptio uses for its parallel work (reads, copies, conversions, writes).
//
// Every options struct with a thread count calls the field `threads`; 0 there means
// default_threads(). The environment variable CKPTIO_THREADS sets that default for the whole
// process without touching code (for example CKPTIO_THREADS=4 on a shared machine).
#pragma once

namespace ckptio {

// The default number of threads one parallel operation uses, the calling thread included:
// CKPTIO_THREADS when it is set, else the number of hardware threads, at most 16. Always >= 1.
// Throws Error(InvalidArgument) when CKPTIO_THREADS is set but is not an integer in [1, 1024].
// Read on every call, so a change of the variable applies to the next operation.
unsigned default_threads();

}  // namespace ckptio
