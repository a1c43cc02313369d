// oneDNN 2.x C API (Debian 12 libdnnl-dev 2.6.3). oneDNN 3.x changed the C API (operation
// descriptors were removed and primitive descriptors are created directly), so this module
// targets 2.x only. The few macro-only pieces of the API are exposed as inline functions.
#include <oneapi/dnnl/dnnl.h>
#include <dlfcn.h>
#include <stddef.h>

static const int CDNNL_ARG_SRC = DNNL_ARG_SRC;
static const int CDNNL_ARG_SRC_1 = DNNL_ARG_SRC_1;
static const int CDNNL_ARG_DST = DNNL_ARG_DST;
static const int CDNNL_ARG_WEIGHTS = DNNL_ARG_WEIGHTS;
static const int CDNNL_ARG_BIAS = DNNL_ARG_BIAS;
static const int CDNNL_ARG_SCRATCHPAD = DNNL_ARG_SCRATCHPAD;
static const int CDNNL_CPU_RUNTIME_IS_OMP = (DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP);

/// Sets the OpenMP thread count of the calling thread (`omp_set_num_threads`), found at run
/// time in the OpenMP runtime oneDNN was built with. Returns 0 when there is none.
static inline int cdnnl_omp_set_num_threads(int n) {
    void (*f)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (!f) return 0;
    f(n);
    return 1;
}

/// The OpenMP thread count of the calling thread (`omp_get_max_threads`); 1 when there is no
/// OpenMP runtime.
static inline int cdnnl_omp_get_max_threads(void) {
    int (*f)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    return f ? f() : 1;
}
