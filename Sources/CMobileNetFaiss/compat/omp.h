// faiss/impl/HNSW.h includes <omp.h> for the type omp_lock_t only. Swift's clang does not ship
// an omp.h and GCC's lies in a versioned private folder (/usr/lib/gcc/x86_64-linux-gnu/12/
// include), so this declares the type as libgomp (GCC 12, which built Debian's libfaiss) lays it
// out, and the two functions the shim calls to run a search on the calling thread only.
// libfaiss.a's OpenMP code links against libgomp.
#ifndef CMOBILENET_FAISS_OMP_COMPAT_H
#define CMOBILENET_FAISS_OMP_COMPAT_H
#ifndef _LIBGOMP_OMP_LOCK_DEFINED
#define _LIBGOMP_OMP_LOCK_DEFINED 1
typedef struct {
    unsigned char _x[4] __attribute__((__aligned__(4)));
} omp_lock_t;
#endif
#ifdef __cplusplus
extern "C" {
#endif
// libgomp's entry points the shim calls (declared as in GCC's omp.h).
int omp_get_max_threads(void);
void omp_set_num_threads(int);
#ifdef __cplusplus
}
#endif
#endif
