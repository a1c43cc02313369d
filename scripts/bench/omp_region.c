// Times an empty OpenMP parallel region at 2 threads and how far apart the two threads start it
// (docs/performance.md, "Where the second thread waits"). gcc -O2 -fopenmp omp_region.c -o omp_region
#include <omp.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec*1e9+t.tv_nsec;}
int main(){
  omp_set_num_threads(2);
  int n=20000; double lagSum=0; double total=0, maxlag=0; static double seen[2];
  for(int i=0;i<n;i++){
    double t0=now();
    #pragma omp parallel
    { seen[omp_get_thread_num()]=now(); }
    double t1=now();
    total+=t1-t0; double l=seen[1]-seen[0]; if(l<0)l=-l; lagSum+=l; if(l>maxlag)maxlag=l;
    // some work between regions, as between primitives
    volatile double x=0; for(int k=0;k<20000;k++) x+=k*0.5;
  }
  printf("empty region %.2f us, |worker - caller| start gap mean %.2f us, max %.1f us\n", total/n/1e3, lagSum/n/1e3, maxlag/1e3);
}
