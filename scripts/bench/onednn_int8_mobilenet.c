// oneDNN's int8 convolutions against its float ones on every convolution of MobileNetV2 (alpha
// 1.0, 224x224, batch 1): each layer as its own primitive in NHWC (TFLite's layout), float32
// (f32 in, f32 weights) and int8 as TFLite's full-integer files need it (u8 source with a zero
// point, s8 weights with per-output-channel scales, s32 bias, u8 destination with a zero point,
// ReLU6 as a clip), median of ITERS runs per layer, summed; the implementation oneDNN chose.
// First, a check of exactness: without VNNI, oneDNN's u8 x s8 kernels add products in pairs into
// 16 bits (vpmaddubsw), which saturate for full-range int8 weights (oneDNN's documented caveat).
// Issue 31 asks to measure oneDNN's int8 primitives beside XNNPACK's before choosing the integer
// kernels; this is that measurement (the whole integer network on XNNPACK is timed by
// `mobilenet bench --model FILE.tflite`). NO_SRC_ZP=1 drops the source zero point (symmetric
// activations: another oneDNN kernel for depthwise layers). Not part of the build; oneDNN 2.x
// (Debian's libdnnl-dev):
//
//   gcc -O2 -o /tmp/onednn_int8 scripts/bench/onednn_int8_mobilenet.c -ldnnl
//   OMP_NUM_THREADS=1 /tmp/onednn_int8 200
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { fprintf(stderr, "%s: status %d\n", #x, (int)s_); exit(1); } } while (0)

static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
static int compare(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static dnnl_engine_t engine;
static dnnl_stream_t stream;

// One convolution: H x H input, ic -> oc channels, k x k kernel (3 for Conv1 and depthwise), stride.
static double layer(int h, int ic, int oc, int k, int dw, int stride, int int8, int iters, const char **impl) {
    int oh = (h + stride - 1) / stride;
    int pad_total = (oh - 1) * stride + k - h;
    if (pad_total < 0) pad_total = 0;
    dnnl_dims_t src_dims = {1, ic, h, h}, dst_dims = {1, oc, oh, oh}, bias_dims = {oc};
    dnnl_dims_t w_dense = {oc, ic, k, k}, w_group = {ic, 1, 1, k, k};
    dnnl_dims_t strides = {stride, stride}, pad_l = {pad_total / 2, pad_total / 2}, pad_r = {pad_total - pad_total / 2, pad_total - pad_total / 2};
    dnnl_data_type_t src_t = int8 ? dnnl_u8 : dnnl_f32, w_t = int8 ? dnnl_s8 : dnnl_f32, b_t = int8 ? dnnl_s32 : dnnl_f32;
    dnnl_memory_desc_t src_md, dst_md, w_md, b_md;
    CK(dnnl_memory_desc_init_by_tag(&src_md, 4, src_dims, src_t, dnnl_nhwc));
    CK(dnnl_memory_desc_init_by_tag(&dst_md, 4, dst_dims, src_t, dnnl_nhwc));
    if (dw) CK(dnnl_memory_desc_init_by_tag(&w_md, 5, w_group, w_t, dnnl_format_tag_any));
    else CK(dnnl_memory_desc_init_by_tag(&w_md, 4, w_dense, w_t, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&b_md, 1, bias_dims, b_t, dnnl_a));
    dnnl_primitive_attr_t attr; CK(dnnl_primitive_attr_create(&attr));
    dnnl_post_ops_t post_ops; CK(dnnl_post_ops_create(&post_ops));
    if (int8) {
        // Per-output-channel requantization scales and the activations' zero points, fixed at
        // creation as a TFLite file fixes them.
        float *scales = malloc(sizeof(float) * (size_t)oc);
        for (int i = 0; i < oc; i++) scales[i] = 0.001f + 0.0001f * (float)(i % 7);
        CK(dnnl_primitive_attr_set_output_scales(attr, oc, 1 << 1, scales));
        int32_t zp_src = 3, zp_dst = 5;
        if (!getenv("NO_SRC_ZP")) CK(dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_SRC, 1, 0, &zp_src));
        CK(dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_DST, 1, 0, &zp_dst));
        CK(dnnl_post_ops_append_eltwise(post_ops, 1, dnnl_eltwise_clip, 0, 255));
        free(scales);
    } else {
        CK(dnnl_post_ops_append_eltwise(post_ops, 1, dnnl_eltwise_clip, 0, 6));
    }
    CK(dnnl_primitive_attr_set_post_ops(attr, post_ops));
    dnnl_convolution_desc_t desc;
    CK(dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &src_md, &w_md, &b_md, &dst_md, strides, pad_l, pad_r));
    dnnl_primitive_desc_t pd;
    dnnl_status_t status = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    if (status != dnnl_success) { *impl = "unsupported"; return -1; }
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl);
    const dnnl_memory_desc_t *w_q = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t src, dst, weights, bias;
    CK(dnnl_memory_create(&src, &src_md, engine, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&dst, &dst_md, engine, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&weights, w_q, engine, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&bias, &b_md, engine, DNNL_MEMORY_ALLOCATE));
    void *p;
    CK(dnnl_memory_get_data_handle(src, &p)); memset(p, 7, dnnl_memory_desc_get_size(&src_md));
    CK(dnnl_memory_get_data_handle(weights, &p)); memset(p, 1, dnnl_memory_desc_get_size(w_q));
    CK(dnnl_memory_get_data_handle(bias, &p)); memset(p, 0, dnnl_memory_desc_get_size(&b_md));
    dnnl_primitive_t primitive; CK(dnnl_primitive_create(&primitive, pd));
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}};
    double *times = malloc(sizeof(double) * (size_t)iters);
    for (int i = 0; i < iters; i++) {
        double start = now_ms();
        CK(dnnl_primitive_execute(primitive, stream, 4, args));
        CK(dnnl_stream_wait(stream));
        times[i] = now_ms() - start;
    }
    qsort(times, (size_t)iters, sizeof(double), compare);
    double median = times[iters / 2];
    free(times);
    return median;
}

// The non-VNNI hazard: u8 x s8 products summed in pairs into int16 (vpmaddubsw) saturate.
// A 1x1 convolution of 32 channels of 255 by weights of 127 should give 255 * 127 * 32.
static void saturation_check(void) {
    
    
    int ic = 32, oc = 16, h = 4;
    dnnl_dims_t sd = {1, ic, h, h}, dd = {1, oc, h, h}, wd = {oc, ic, 1, 1}, st = {1, 1}, pl = {0, 0}, pr = {0, 0};
    dnnl_memory_desc_t s, d, w;
    CK(dnnl_memory_desc_init_by_tag(&s, 4, sd, dnnl_u8, dnnl_nhwc));
    CK(dnnl_memory_desc_init_by_tag(&d, 4, dd, dnnl_s32, dnnl_nhwc));
    CK(dnnl_memory_desc_init_by_tag(&w, 4, wd, dnnl_s8, dnnl_format_tag_any));
    dnnl_convolution_desc_t desc;
    CK(dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &s, &w, NULL, &d, st, pl, pr));
    dnnl_primitive_desc_t pd; CK(dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL));
    const char *impl; dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    // Plain weights filled with 127, reordered into the primitive's layout.
    dnnl_memory_desc_t wp; CK(dnnl_memory_desc_init_by_tag(&wp, 4, wd, dnnl_s8, dnnl_oihw));
    dnnl_memory_t S, D, W, WP;
    CK(dnnl_memory_create(&S, &s, engine, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&D, &d, engine, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&W, wq, engine, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&WP, &wp, engine, DNNL_MEMORY_ALLOCATE));
    void *p; CK(dnnl_memory_get_data_handle(S, &p)); memset(p, 255, (size_t)ic * h * h);
    CK(dnnl_memory_get_data_handle(WP, &p)); memset(p, 127, (size_t)ic * oc);
    dnnl_primitive_desc_t rpd; CK(dnnl_reorder_primitive_desc_create(&rpd, &wp, engine, wq, engine, NULL));
    dnnl_primitive_t r; CK(dnnl_primitive_create(&r, rpd));
    dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, WP}, {DNNL_ARG_TO, W}};
    CK(dnnl_primitive_execute(r, stream, 2, ra)); CK(dnnl_stream_wait(stream));
    dnnl_primitive_t c; CK(dnnl_primitive_create(&c, pd));
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, S}, {DNNL_ARG_WEIGHTS, W}, {DNNL_ARG_DST, D}};
    CK(dnnl_primitive_execute(c, stream, 3, a)); CK(dnnl_stream_wait(stream));
    CK(dnnl_memory_get_data_handle(D, &p));
    printf("%s: u8 255 x s8 127 x %d channels = %d (exact %d)\n", impl, ic, ((int *)p)[0], 255 * 127 * ic);
    }

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 100;
    if (iters < 1 || iters > 100000) { fprintf(stderr, "usage: %s [ITERS]\n", argv[0]); return 2; }
    CK(dnnl_engine_create(&engine, dnnl_cpu, 0));
    CK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
    saturation_check();
    // Table 2 of the paper: expansion t, channels c, repeats n, stride s.
    int blocks[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    struct { int h, ic, oc, k, dw, stride; } layers[64];
    int n = 0, h = 224, c = 3;
    layers[n++] = (typeof(layers[0])){h, c, 32, 3, 0, 2};
    h = 112; c = 32;
    for (int b = 0; b < 7; b++) {
        for (int r = 0; r < blocks[b][2]; r++) {
            int s = r == 0 ? blocks[b][3] : 1, e = c * blocks[b][0];
            if (blocks[b][0] != 1) layers[n++] = (typeof(layers[0])){h, c, e, 1, 0, 1};
            layers[n++] = (typeof(layers[0])){h, e, e, 3, 1, s};
            h = (h + s - 1) / s;
            layers[n++] = (typeof(layers[0])){h, e, blocks[b][1], 1, 0, 1};
            c = blocks[b][1];
        }
    }
    layers[n++] = (typeof(layers[0])){h, c, 1280, 1, 0, 1};
    double total[2] = {0, 0};
    for (int i = 0; i < n; i++) {
        const char *impl[2] = {"", ""};
        double t[2];
        for (int q = 0; q < 2; q++) {
            t[q] = layer(layers[i].h, layers[i].ic, layers[i].oc, layers[i].k, layers[i].dw, layers[i].stride, q, iters, &impl[q]);
            total[q] += t[q];
        }
        printf("%2d %3dx%-3d %4d->%-4d %s s%d  f32 %.4f ms (%s)  int8 %.4f ms (%s)  int8/f32 %.2f\n", i, layers[i].h, layers[i].h, layers[i].ic,
               layers[i].oc, layers[i].dw ? "dw " : (layers[i].k == 3 ? "3x3" : "1x1"), layers[i].stride, t[0], impl[0], t[1], impl[1], t[1] / t[0]);
    }
    printf("all %d convolutions: f32 %.3f ms, int8 %.3f ms, int8/f32 %.2f\n", n, total[0], total[1], total[1] / total[0]);
    return 0;
}
