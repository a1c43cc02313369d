#define _GNU_SOURCE
// Process helpers: the fork/BLAS lock, isolating libhdf5 (not safe on damaged files) in a
// child process, malloc tuning.
#include "CMobileNetProcess.h"
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

// OpenBLAS's pthreads build (Debian 0.3.21) is not fork-safe: its pthread_atfork handler shuts
// the thread pool down, which deadlocks when two threads fork at once (OpenBLAS issue #2270) and
// strands a BLAS call running on another thread at that moment (seen: a test run that hung, one
// thread spinning in exec_blas for a worker the fork had shut down). So every BLAS call of the
// package holds this lock shared (mn_blas_enter/leave), and a fork holds it exclusively: no fork
// while BLAS runs, one fork at a time. Writers first, so BLAS calls in a loop cannot starve a fork.
static pthread_rwlock_t mn_blas_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

void mn_blas_enter(void) { pthread_rwlock_rdlock(&mn_blas_lock); }

void mn_blas_leave(void) { pthread_rwlock_unlock(&mn_blas_lock); }

int mn_fork(void) {
    pthread_rwlock_wrlock(&mn_blas_lock);
    pid_t pid = fork();
    if (pid == 0) {
        pthread_rwlock_t fresh = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
        mn_blas_lock = fresh;  // the child's copy is held by its parent's thread
    } else {
        pthread_rwlock_unlock(&mn_blas_lock);
    }
    return (int)pid;
}

int mn_blas_release_threads(void) {
    // OpenBLAS's own entry point of its fork handler; absent when another BLAS is linked.
    int (*shutdown)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
    if (!shutdown) return 0;
    pthread_rwlock_wrlock(&mn_blas_lock);  // not while a BLAS call of the package runs
    shutdown();
    pthread_rwlock_unlock(&mn_blas_lock);
    return 1;
}

int mn_limit_address_space(unsigned long long bytes) {
    struct rlimit limit = { (rlim_t)bytes, (rlim_t)bytes };
    return setrlimit(RLIMIT_AS, &limit);
}

int mn_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

int mn_set_trim_threshold(long bytes) { return mallopt(M_TRIM_THRESHOLD, (int)(bytes > 0x7fffffffL ? 0x7fffffffL : bytes)); }

int mn_set_top_pad(long bytes) { return mallopt(M_TOP_PAD, (int)(bytes > 0x7fffffffL ? 0x7fffffffL : bytes)); }
