#ifndef CMOBILENET_PROCESS_H
#define CMOBILENET_PROCESS_H
// Process-level concerns of the package, in one small C target that links nothing but libc:
// the fork lock shared with every BLAS call (OpenBLAS is not fork-safe), the child's
// address-space limit, and glibc malloc tuning. The codecs, HDF5, training, search and FAISS
// shims use it; none of them needs the others to get it.

#ifdef __cplusplus
extern "C" {
#endif

// Process isolation (reading untrusted weight files in a child process) and BLAS.

/// fork(2), which Swift does not import, made safe with OpenBLAS: it waits until no BLAS call of
/// the package runs (see mn_blas_enter) and forks one at a time, because OpenBLAS's fork handler
/// deadlocks with a concurrent fork (OpenBLAS #2270) and strands a concurrent BLAS call. Every
/// fork of the package goes through it. Returns the child's pid in the parent, 0 in the child,
/// -1 on failure.
int mn_fork(void);
/// Brackets a BLAS call (cblas_*, or FAISS work that calls BLAS): any number at once, never
/// during mn_fork. Not reentrant: do not fork, and do not enter again, between enter and leave.
void mn_blas_enter(void);
void mn_blas_leave(void);
/// Ends OpenBLAS's idle worker threads (its pthreads build starts them when it is loaded, and
/// each spins, yielding, for about 2^28 cycles before it sleeps), while no BLAS call of the
/// package runs; the next multi-threaded BLAS call starts them again (as after a fork). Returns
/// 1 when OpenBLAS is the BLAS linked, else 0 (nothing done).
int mn_blas_release_threads(void);
/// Sets the child's address-space limit (RLIMIT_AS) in bytes. Returns 0 or -1.
int mn_limit_address_space(unsigned long long bytes);
/// glibc mallopt(M_MMAP_THRESHOLD, bytes): a fixed threshold (dynamic adjustment off). Returns 1 on success.
int mn_set_mmap_threshold(int bytes);
/// mallopt(M_TRIM_THRESHOLD, bytes) (clamped to INT_MAX); 1 on success.
int mn_set_trim_threshold(long bytes);
/// mallopt(M_TOP_PAD, bytes) (clamped to INT_MAX): extra bytes taken from the system with each heap growth; 1 on success.
int mn_set_top_pad(long bytes);

#ifdef __cplusplus
}
#endif

#endif
