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
/// The weights and bias of a depthwise convolution fused into a 1x1 one (`dnnl_post_ops_append_dw`).
static const int CDNNL_ARG_DW_WEIGHTS = DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS;
static const int CDNNL_ARG_DW_BIAS = DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_BIAS;
static const int CDNNL_CPU_RUNTIME_IS_OMP = (DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP);

/// `name` looked up once in the loaded libraries (`dlsym(RTLD_DEFAULT, ...)`), then cached,
/// a missing symbol too; NULL when no loaded library has it. `cache` holds the result, `looked`
/// whether the lookup was made. (A race only repeats the same lookup.)
static inline void *cdnnl_lookup(void **cache, int *looked, const char *name) {
    if (__atomic_load_n(looked, __ATOMIC_ACQUIRE)) return __atomic_load_n(cache, __ATOMIC_RELAXED);
    void *f = dlsym(RTLD_DEFAULT, name);
    __atomic_store_n(cache, f, __ATOMIC_RELAXED);
    __atomic_store_n(looked, 1, __ATOMIC_RELEASE);
    return f;
}

/// Sets the OpenMP thread count of the calling thread (`omp_set_num_threads`), found at run
/// time in the OpenMP runtime oneDNN was built with. Returns 0 when there is none.
static inline int cdnnl_omp_set_num_threads(int n) {
    static void *cache;
    static int looked;
    void (*f)(int) = (void (*)(int))cdnnl_lookup(&cache, &looked, "omp_set_num_threads");
    if (!f) return 0;
    f(n);
    return 1;
}

/// The OpenMP thread count of the calling thread (`omp_get_max_threads`); 1 when there is no
/// OpenMP runtime.
static inline int cdnnl_omp_get_max_threads(void) {
    static void *cache;
    static int looked;
    int (*f)(void) = (int (*)(void))cdnnl_lookup(&cache, &looked, "omp_get_max_threads");
    return f ? f() : 1;
}

/// The body of ``cdnnl_parallel_slices``: called once per slice index with the caller's context.
typedef void (*cdnnl_slice_body)(void *context, int slice);

/// What one ``cdnnl_parallel_slices`` region shares with its threads.
struct cdnnl_parallel_slices_region_data {
    cdnnl_slice_body body;
    void *context;
    int slices;
    int (*thread_num)(void);
    int (*num_threads)(void);
};

/// One thread's part of ``cdnnl_parallel_slices``: the contiguous run of slices
/// [t * slices / T, (t + 1) * slices / T) of thread t of T.
static inline void cdnnl_parallel_slices_region(void *data) {
    const struct cdnnl_parallel_slices_region_data *d = (const struct cdnnl_parallel_slices_region_data *)data;
    const long t = d->thread_num(), n = d->num_threads();
    const int first = (int)(t * d->slices / n), end = (int)((t + 1) * d->slices / n);
    for (int s = first; s < end; s++) d->body(d->context, s);
}

/// Runs `body(context, s)` for every s in 0..<slices, split over `threads` OpenMP threads in
/// one parallel region of the OpenMP runtime oneDNN uses (GNU OpenMP's `GOMP_parallel`, the
/// entry point of `#pragma omp parallel`, found at run time like the functions above), so the
/// slices run on the same (spinning or sleeping) worker threads as oneDNN's primitives. Each
/// thread takes a contiguous run of slices; which thread runs a slice never changes what the
/// slice computes. On the calling thread alone, in order, when `threads` <= 1, `slices` <= 1,
/// or no loaded OpenMP runtime has libgomp's entry points (LLVM's libomp has them too). Returns
/// the number of threads asked of the runtime (`threads`, at most `slices`); the team it gives
/// may be smaller (one thread inside another parallel region), and its threads then share out
/// all the slices.
static inline int cdnnl_parallel_slices(int slices, int threads, cdnnl_slice_body body, void *context) {
    typedef void (*gomp_parallel_t)(void (*)(void *), void *, unsigned, unsigned);
    static void *parallel_cache, *thread_num_cache, *num_threads_cache;
    static int parallel_looked, thread_num_looked, num_threads_looked;
    gomp_parallel_t parallel = (gomp_parallel_t)cdnnl_lookup(&parallel_cache, &parallel_looked, "GOMP_parallel");
    int (*thread_num)(void) = (int (*)(void))cdnnl_lookup(&thread_num_cache, &thread_num_looked, "omp_get_thread_num");
    int (*num_threads)(void) = (int (*)(void))cdnnl_lookup(&num_threads_cache, &num_threads_looked, "omp_get_num_threads");
    if (threads > slices) threads = slices;
    if (threads <= 1 || !parallel || !thread_num || !num_threads) {
        for (int s = 0; s < slices; s++) body(context, s);
        return 1;
    }
    struct cdnnl_parallel_slices_region_data data = { body, context, slices, thread_num, num_threads };
    parallel(cdnnl_parallel_slices_region, &data, (unsigned)threads, 0);
    return threads;
}
