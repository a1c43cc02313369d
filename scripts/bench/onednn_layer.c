// Times one MobileNetV2 layer (1x1 convolution or 3x3 depthwise, with the ReLU6 clip post-op)
// as oneDNN runs it alone: median and minimum of ITERS runs, GFLOP/s, and the implementation
// oneDNN picked. Builds against oneDNN 2.x (Debian's libdnnl-dev) or 3.x (the C API changed):
//
//   gcc -O2 -o onednn_layer scripts/bench/onednn_layer.c -ldnnl
//   OMP_NUM_THREADS=1 ./onednn_layer 14 64 384 1x1 1 2000 8c     # H, in, out, kind, stride, runs, layout
//
// layout: 8c (nChw8c), 16c (nChw16c), nhwc, any (oneDNN's choice). A 3.x build, from the PyPI
// wheels onednn-cpu-gomp + onednn-devel-cpu-gomp 2023.2.0 (oneDNN 3.2) unpacked in DIR:
//   I=DIR/onednn_devel_cpu_gomp-2023.2.0.data/data/include L=DIR/onednn_cpu_gomp-2023.2.0.data/data/lib
//   gcc -O2 -I $I -o onednn_layer3 scripts/bench/onednn_layer.c -L $L -ldnnl -Wl,-rpath,$L
// Used for docs/performance.md ("Row bands and oneDNN 3.2: measured, not adopted").
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { fprintf(stderr, "%s: status %d\n", #x, (int)s_); exit(1); } } while (0)

static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
static int compare(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: %s H IN OUT 1x1|dw STRIDE ITERS [8c|16c|nhwc|any]\n", argv[0]); return 2; }
    int h = atoi(argv[1]), ic = atoi(argv[2]), oc = atoi(argv[3]), dw = strcmp(argv[4], "dw") == 0, stride = atoi(argv[5]), iters = atoi(argv[6]);
    const char *layout = argc > 7 ? argv[7] : "8c";
    if (h < 1 || ic < 1 || oc < 1 || stride < 1 || stride > 2 || iters < 1 || iters > 1000000) { fprintf(stderr, "bad arguments\n"); return 2; }
    dnnl_format_tag_t tag = strcmp(layout, "nhwc") == 0 ? dnnl_nhwc : strcmp(layout, "16c") == 0 ? dnnl_nChw16c
                          : strcmp(layout, "any") == 0 ? dnnl_format_tag_any : dnnl_nChw8c;
    if (dw) oc = ic;
    int oh = dw && stride == 2 ? h / 2 : h;
    dnnl_engine_t engine; CK(dnnl_engine_create(&engine, dnnl_cpu, 0));
    dnnl_stream_t stream; CK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
    dnnl_dims_t src_dims = {1, ic, h, h}, dst_dims = {1, oc, oh, oh}, bias_dims = {oc};
    dnnl_dims_t w1 = {oc, ic, 1, 1}, w3 = {ic, 1, 1, 3, 3};
    dnnl_dims_t strides = {stride, stride};
    // Keras padding: "same" 3x3 stride 1 is 1 on each side; stride 2 is ((0, 1), (0, 1)).
    dnnl_dims_t pad_l = {dw && stride == 1, dw && stride == 1}, pad_r = {dw, dw};
    dnnl_primitive_attr_t attr; CK(dnnl_primitive_attr_create(&attr));
    dnnl_post_ops_t post_ops; CK(dnnl_post_ops_create(&post_ops));
#if DNNL_VERSION_MAJOR >= 3
    dnnl_memory_desc_t src_md, dst_md, w_md, b_md;
    CK(dnnl_memory_desc_create_with_tag(&src_md, 4, src_dims, dnnl_f32, tag));
    CK(dnnl_memory_desc_create_with_tag(&dst_md, 4, dst_dims, dnnl_f32, tag));
    if (dw) CK(dnnl_memory_desc_create_with_tag(&w_md, 5, w3, dnnl_f32, dnnl_format_tag_any));
    else CK(dnnl_memory_desc_create_with_tag(&w_md, 4, w1, dnnl_f32, dnnl_format_tag_any));
    CK(dnnl_memory_desc_create_with_tag(&b_md, 1, bias_dims, dnnl_f32, dnnl_a));
    CK(dnnl_post_ops_append_eltwise(post_ops, dnnl_eltwise_clip, 0, 6));
    CK(dnnl_primitive_attr_set_post_ops(attr, post_ops));
    dnnl_dims_t dilation = {0, 0};
    dnnl_primitive_desc_t pd;
    CK(dnnl_convolution_forward_primitive_desc_create(&pd, engine, dnnl_forward_inference, dnnl_convolution_direct,
                                                      src_md, w_md, b_md, dst_md, strides, dilation, pad_l, pad_r, attr));
    const_dnnl_memory_desc_t src_q = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const_dnnl_memory_desc_t dst_q = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const_dnnl_memory_desc_t w_q = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const_dnnl_memory_desc_t b_q = b_md;
#else
    dnnl_memory_desc_t src_md, dst_md, w_md, b_md;
    CK(dnnl_memory_desc_init_by_tag(&src_md, 4, src_dims, dnnl_f32, tag));
    CK(dnnl_memory_desc_init_by_tag(&dst_md, 4, dst_dims, dnnl_f32, tag));
    if (dw) CK(dnnl_memory_desc_init_by_tag(&w_md, 5, w3, dnnl_f32, dnnl_format_tag_any));
    else CK(dnnl_memory_desc_init_by_tag(&w_md, 4, w1, dnnl_f32, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&b_md, 1, bias_dims, dnnl_f32, dnnl_a));
    CK(dnnl_post_ops_append_eltwise(post_ops, 1, dnnl_eltwise_clip, 0, 6));
    CK(dnnl_primitive_attr_set_post_ops(attr, post_ops));
    dnnl_convolution_desc_t desc;
    CK(dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &src_md, &w_md, &b_md, &dst_md, strides, pad_l, pad_r));
    dnnl_primitive_desc_t pd; CK(dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL));
    const dnnl_memory_desc_t *src_q = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *dst_q = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *w_q = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *b_q = &b_md;
#endif
    const char *implementation = "";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &implementation);
    dnnl_memory_t src, dst, weights, bias;
    CK(dnnl_memory_create(&src, src_q, engine, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&dst, dst_q, engine, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&weights, w_q, engine, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_memory_create(&bias, b_q, engine, DNNL_MEMORY_ALLOCATE));
    void *p;
    CK(dnnl_memory_get_data_handle(src, &p));
    for (size_t i = 0; i < dnnl_memory_desc_get_size(src_q) / 4; i++) ((float *)p)[i] = (float)(i % 7) * 0.1f;
    CK(dnnl_memory_get_data_handle(weights, &p));
    for (size_t i = 0; i < dnnl_memory_desc_get_size(w_q) / 4; i++) ((float *)p)[i] = (float)(i % 5) * 0.01f;
    CK(dnnl_memory_get_data_handle(bias, &p));
    memset(p, 0, (size_t)oc * 4);
    dnnl_primitive_t primitive; CK(dnnl_primitive_create(&primitive, pd));
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}};
    double *times = malloc(sizeof(double) * (size_t)iters);
    if (!times) return 1;
    for (int i = 0; i < iters; i++) {
        double start = now_ms();
        CK(dnnl_primitive_execute(primitive, stream, 4, args));
        CK(dnnl_stream_wait(stream));
        times[i] = now_ms() - start;
    }
    qsort(times, (size_t)iters, sizeof(double), compare);
    double flops = dw ? 2.0 * oh * oh * ic * 9 : 2.0 * h * h * ic * oc;
    printf("%s %dx%d %d->%d %s stride %d: median %.4f ms, min %.4f ms, %.1f GFLOP/s\n", implementation, h, h, ic, oc, dw ? "dw" : "1x1",
           stride, times[iters / 2], times[0], flops / times[iters / 2] / 1e6);
    free(times);
    return 0;
}
