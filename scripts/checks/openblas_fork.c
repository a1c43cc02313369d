// Reproduces the OpenBLAS fork hazard that mn_fork / mn_blas_enter (Sources/CMobileNetShims/process_shim.c)
// guard against: three threads running cblas_sgemm while three others fork. Debian's OpenBLAS 0.3.21
// (pthreads) hangs without the lock (3 of 3 runs killed after 20 s on 2026-12-02) and finishes with it
// (3 of 3, well under a second).
//   gcc -O1 -o /tmp/openblas_fork scripts/checks/openblas_fork.c -lopenblas -lpthread
//   timeout 20 /tmp/openblas_fork; echo $?        # 124: hung
//   timeout 20 /tmp/openblas_fork lock; echo $?   # 0
#define _GNU_SOURCE
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static int use_lock;
static pthread_rwlock_t lk = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
#define N 192
static void *blas(void *arg) {
    float *a = malloc(N*N*4), *c = malloc(N*N*4);
    for (int i = 0; i < N*N; i++) a[i] = i % 7;
    for (int r = 0; r < 300; r++) {
        if (use_lock) pthread_rwlock_rdlock(&lk);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, a, N, 0, c, N);
        if (use_lock) pthread_rwlock_unlock(&lk);
    }
    return NULL;
}
static void *forker(void *arg) {
    for (int r = 0; r < 40; r++) {
        if (use_lock) pthread_rwlock_wrlock(&lk);
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (use_lock) pthread_rwlock_unlock(&lk);
        waitpid(p, NULL, 0);
    }
    return NULL;
}
int main(int argc, char **argv) {
    use_lock = argc > 1;
    pthread_t t[6];
    for (int i = 0; i < 3; i++) { pthread_create(&t[2*i], 0, blas, 0); pthread_create(&t[2*i+1], 0, forker, 0); }
    for (int i = 0; i < 6; i++) pthread_join(t[i], 0);
    puts("done");
}
