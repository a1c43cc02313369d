// XNNPACK (Debian libxnnpack-dev 0.0~git20220216, the library LiteRT runs its quantized
// operators with) and its thread pool (libpthreadpool-dev): the operator API, C.
#include <xnnpack.h>
#include <pthreadpool.h>
