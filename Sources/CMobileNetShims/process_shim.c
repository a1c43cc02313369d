// Process helpers for isolating libhdf5 (which is not safe on damaged files) in a child process.
#include "CMobileNetShims.h"
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

int mn_fork(void) { return (int)fork(); }

int mn_limit_address_space(unsigned long long bytes) {
    struct rlimit limit = { (rlim_t)bytes, (rlim_t)bytes };
    return setrlimit(RLIMIT_AS, &limit);
}

int mn_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }
