// MobileNetV2 (alpha 1.0, 224x224, with the top; random weights) through Debian's XNNPACK
// (libxnnpack-dev 0.0~git20220216, the subgraph API; libpthreadpool-dev): batch-1 latency, to
// compare the XNNPACK a Debian package offers with the one LiteRT bundles and with our oneDNN
// backend (docs/performance.md, 2026-12-03). Not part of the build:
//   apt-get install libxnnpack-dev libpthreadpool-dev
//   gcc -O2 scripts/bench/xnnpack_mobilenet.c -o /tmp/xnnpack_mobilenet -lXNNPACK -lpthreadpool -lm
//   /tmp/xnnpack_mobilenet THREADS ITERATIONS
// The layers follow the paper's Table 2 and Keras's padding: Conv1 and each stride-2 depthwise
// layer pad (0, 1) rows and columns (TensorFlow SAME at stride 2), stride-1 depthwise layers 1.
#include <xnnpack.h>
#include <pthreadpool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <math.h>
static float *rnd(size_t n, float scale) { float *p = malloc(n * 4); for (size_t i = 0; i < n; i++) p[i] = ((float)rand() / RAND_MAX - 0.5f) * scale; return p; }
static xnn_subgraph_t sg;
static uint32_t tensor(size_t n, size_t h, size_t w, size_t c, const float *data, uint32_t ext, uint32_t flags) {
  size_t dims[4] = {n, h, w, c}; uint32_t id;
  if (xnn_define_tensor_value(sg, xnn_datatype_fp32, 4, dims, data, ext, flags, &id) != xnn_status_success) { puts("tensor"); exit(1); }
  return id;
}
static uint32_t vec(size_t n, const float *data) { size_t dims[1] = {n}; uint32_t id; xnn_define_tensor_value(sg, xnn_datatype_fp32, 1, dims, data, XNN_INVALID_VALUE_ID, 0, &id); return id; }
static int H, W;
static uint32_t conv(uint32_t in, int cin, int cout, int k, int s, int pt, int pb, int relu) {
  int oh = (H + pt + pb - k) / s + 1, ow = (W + pt + pb - k) / s + 1;
  uint32_t f = tensor(cout, k, k, cin, rnd((size_t)cout * k * k * cin, 0.2f), XNN_INVALID_VALUE_ID, 0);
  uint32_t b = vec(cout, rnd(cout, 0.1f));
  uint32_t out = tensor(1, oh, ow, cout, NULL, XNN_INVALID_VALUE_ID, 0);
  if (xnn_define_convolution_2d(sg, pt, pb, pb, pt, k, k, s, s, 1, 1, 1, cin, cout, relu ? 0 : -INFINITY, relu ? 6 : INFINITY, in, f, b, out, 0)) { puts("conv"); exit(1); }
  H = oh; W = ow; return out;
}
static uint32_t dw(uint32_t in, int c, int s) {
  int pt = s == 1 ? 1 : 0, pb = 1;
  int oh = (H + pt + pb - 3) / s + 1, ow = (W + pt + pb - 3) / s + 1;
  uint32_t f = tensor(1, 3, 3, c, rnd((size_t)9 * c, 0.5f), XNN_INVALID_VALUE_ID, 0);
  uint32_t b = vec(c, rnd(c, 0.1f));
  uint32_t out = tensor(1, oh, ow, c, NULL, XNN_INVALID_VALUE_ID, 0);
  if (xnn_define_depthwise_convolution_2d(sg, pt, pb, pb, pt, 3, 3, s, s, 1, 1, 1, c, 0, 6, in, f, b, out, 0)) { puts("dw"); exit(1); }
  H = oh; W = ow; return out;
}
int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1, iters = argc > 2 ? atoi(argv[2]) : 300;
  if (xnn_initialize(NULL)) { puts("init"); return 1; }
  xnn_create_subgraph(2, 0, &sg);
  float *input = rnd(224 * 224 * 3, 2), *output = malloc(1000 * 4);
  uint32_t x = tensor(1, 224, 224, 3, NULL, 0, XNN_VALUE_FLAG_EXTERNAL_INPUT);
  H = W = 224;
  x = conv(x, 3, 32, 3, 2, 0, 1, 1);
  int cfg[7][4] = {{1,16,1,1},{6,24,2,2},{6,32,3,2},{6,64,4,2},{6,96,3,1},{6,160,3,2},{6,320,1,1}};
  int cin = 32;
  for (int i = 0; i < 7; i++) for (int r = 0; r < cfg[i][2]; r++) {
    int t = cfg[i][0], c = cfg[i][1], s = r == 0 ? cfg[i][3] : 1;
    uint32_t y = x;
    if (t != 1) y = conv(y, cin, cin * t, 1, 1, 0, 0, 1);
    y = dw(y, cin * t, s);
    y = conv(y, cin * t, c, 1, 1, 0, 0, 0);
    if (s == 1 && cin == c) { uint32_t sum = tensor(1, H, W, c, NULL, XNN_INVALID_VALUE_ID, 0); xnn_define_add2(sg, -INFINITY, INFINITY, x, y, sum, 0); y = sum; }
    x = y; cin = c;
  }
  x = conv(x, 320, 1280, 1, 1, 0, 0, 1);
  uint32_t pooled = tensor(1, 1, 1, 1280, NULL, XNN_INVALID_VALUE_ID, 0);
  xnn_define_global_average_pooling_2d(sg, -INFINITY, INFINITY, x, pooled, 0);
  size_t fd[2] = {1000, 1280}; uint32_t fw; xnn_define_tensor_value(sg, xnn_datatype_fp32, 2, fd, rnd(1280000, 0.05f), XNN_INVALID_VALUE_ID, 0, &fw);
  size_t ld[2] = {1, 1000}; uint32_t logits; xnn_define_tensor_value(sg, xnn_datatype_fp32, 2, ld, NULL, XNN_INVALID_VALUE_ID, 0, &logits);
  if (xnn_define_fully_connected(sg, -INFINITY, INFINITY, pooled, fw, vec(1000, rnd(1000, 0.1f)), logits, XNN_FLAG_TENSORFLOW_RESHAPE_2D)) { puts("fc"); return 1; }
  uint32_t probs; xnn_define_tensor_value(sg, xnn_datatype_fp32, 2, ld, NULL, 1, XNN_VALUE_FLAG_EXTERNAL_OUTPUT, &probs);
  xnn_define_softmax(sg, logits, probs, 0);
  pthreadpool_t pool = threads > 1 ? pthreadpool_create(threads) : NULL;
  xnn_runtime_t rt;
  if (xnn_create_runtime_v2(sg, pool, 0, &rt)) { puts("runtime"); return 1; }
  struct xnn_external_value ev[2] = {{0, input}, {1, output}};
  if (xnn_setup_runtime(rt, 2, ev)) { puts("setup"); return 1; }
  for (int i = 0; i < 5; i++) xnn_invoke_runtime(rt);
  double *t = malloc(iters * sizeof(double));
  for (int i = 0; i < iters; i++) { struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a); xnn_invoke_runtime(rt); clock_gettime(CLOCK_MONOTONIC, &b); t[i] = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6; }
  for (int i = 0; i < iters; i++) for (int j = i + 1; j < iters; j++) if (t[j] < t[i]) { double z = t[i]; t[i] = t[j]; t[j] = z; }
  printf("xnnpack threads %d: median %.3f ms min %.3f\n", threads, t[iters / 2], t[0]);
  return 0;
}
