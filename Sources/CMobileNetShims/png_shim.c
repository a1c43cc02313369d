// PNG decoding through libpng's classic API with setjmp-based error recovery.
#include "CMobileNetShims.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mn_png_source {
    const uint8_t *data;
    size_t length;
    size_t offset;
};

struct mn_png_error {
    char *message;
    size_t length;
};

static void mn_png_read(png_structp png, png_bytep out, png_size_t count) {
    struct mn_png_source *src = (struct mn_png_source *)png_get_io_ptr(png);
    if (src->length - src->offset < count) png_error(png, "unexpected end of file (truncated PNG)");
    memcpy(out, src->data + src->offset, count);
    src->offset += count;
}

static void mn_png_error_fn(png_structp png, png_const_charp message) {
    struct mn_png_error *err = (struct mn_png_error *)png_get_error_ptr(png);
    if (err && err->message && err->length) snprintf(err->message, err->length, "%s", message);
    png_longjmp(png, 1);
}

static void mn_png_warning_fn(png_structp png, png_const_charp message) { (void)png; (void)message; }

int mn_png_decode_rgba(const uint8_t *data, size_t length, uint64_t max_pixels,
                       uint8_t **out, int *width, int *height, int *had_alpha, char *error, size_t error_length) {
    *out = NULL;
    if (error && error_length) error[0] = 0;
    if (length < 8 || png_sig_cmp((png_const_bytep)data, 0, 8) != 0) {
        if (error && error_length) snprintf(error, error_length, "not a PNG signature");
        return -1;
    }
    struct mn_png_error err = { error, error_length };
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, mn_png_error_fn, mn_png_warning_fn);
    if (!png) return -2;
    png_infop info = png_create_info_struct(png);
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); return -2; }
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    struct mn_png_source src = { data, length, 0 };
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        return -1;
    }
    png_set_read_fn(png, &src, mn_png_read);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((uint64_t)w * (uint64_t)h > max_pixels) {
        if (error && error_length) snprintf(error, error_length, "image is %ux%u pixels, over the limit of %llu pixels",
                                            (unsigned)w, (unsigned)h, (unsigned long long)max_pixels);
        png_destroy_read_struct(&png, &info, NULL);
        return -3;
    }
    int color_type = png_get_color_type(png, info);
    int bit_depth = png_get_bit_depth(png, info);
    int alpha = (color_type & PNG_COLOR_MASK_ALPHA) != 0 || png_get_valid(png, info, PNG_INFO_tRNS);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (bit_depth == 16) png_set_strip_16(png);
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (!alpha) png_set_add_alpha(png, 0xff, PNG_FILLER_AFTER);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 4) png_error(png, "unexpected row layout after conversion");
    pixels = malloc((size_t)w * (size_t)h * 4);
    rows = malloc(sizeof(png_bytep) * (size_t)(h ? h : 1));
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + (size_t)y * (size_t)w * 4;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *out = pixels;
    *width = (int)w;
    *height = (int)h;
    *had_alpha = alpha;
    return 0;
}
