// Process helpers for isolating libhdf5 (which is not safe on damaged files) in a child process.
#include "CMobileNetShims.h"
#include <malloc.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

// One fork at a time in this process: OpenBLAS's pthreads build shuts its thread pool down in a
// pthread_atfork handler that deadlocks when two threads fork at once (OpenBLAS issue #2270,
// Debian's 0.3.21: seen as a test run that hung with two .faiss files read in parallel).
static pthread_mutex_t mn_fork_lock = PTHREAD_MUTEX_INITIALIZER;

int mn_fork(void) {
    pthread_mutex_lock(&mn_fork_lock);
    pid_t pid = fork();
    if (pid == 0) {
        pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
        mn_fork_lock = fresh;  // the child's copy was taken by its parent's thread
    } else {
        pthread_mutex_unlock(&mn_fork_lock);
    }
    return (int)pid;
}

int mn_limit_address_space(unsigned long long bytes) {
    struct rlimit limit = { (rlim_t)bytes, (rlim_t)bytes };
    return setrlimit(RLIMIT_AS, &limit);
}

int mn_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

int mn_set_trim_threshold(long bytes) { return mallopt(M_TRIM_THRESHOLD, (int)(bytes > 0x7fffffffL ? 0x7fffffffL : bytes)); }
