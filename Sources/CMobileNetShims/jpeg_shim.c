// JPEG decoding through libjpeg-turbo's libjpeg API, with setjmp-based error recovery so that a
// corrupt file returns an error instead of calling exit().
#include "CMobileNetShims.h"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

struct mn_jpeg_error {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    int strict_eof;  // a premature end of data is an error (as in Pillow), not grey padding
    int too_many_scans;
    unsigned declared_width, declared_height;
};

static void mn_jpeg_error_exit(j_common_ptr cinfo) {
    struct mn_jpeg_error *err = (struct mn_jpeg_error *)cinfo->err;
    longjmp(err->jump, 1);
}

// Warnings (msg_level -1) are silent, except a premature end of the data when strict_eof is set:
// libjpeg would pad the rest with grey, Pillow refuses the file ("image file is truncated"). The
// data may also end at a marker before the image does (JWRN_HIT_MARKER, "premature end of data
// segment": a file cut and closed with EOI, or a header claiming more pixels than the data
// holds, 10000x10000 from a few hundred bytes); that is the same missing data, refused too.
static void mn_jpeg_emit_message(j_common_ptr cinfo, int msg_level) {
    struct mn_jpeg_error *err = (struct mn_jpeg_error *)cinfo->err;
    if (msg_level < 0 && err->strict_eof && (err->base.msg_code == JWRN_JPEG_EOF || err->base.msg_code == JWRN_HIT_MARKER)) {
        if (cinfo->is_decompressor) {
            err->declared_width = ((j_decompress_ptr)cinfo)->image_width;
            err->declared_height = ((j_decompress_ptr)cinfo)->image_height;
        }
        (*cinfo->err->error_exit)(cinfo);
    }
}

// Progressive JPEGs with thousands of scans take minutes to decode (a known denial-of-service
// pattern); libjpeg-turbo's TurboJPEG API refuses more than 500 scans, and so do we.
static void mn_jpeg_progress(j_common_ptr cinfo) {
    if (cinfo->is_decompressor && ((j_decompress_ptr)cinfo)->input_scan_number > 500) {
        ((struct mn_jpeg_error *)cinfo->err)->too_many_scans = 1;
        (*cinfo->err->error_exit)(cinfo);
    }
}

static void mn_jpeg_silent(j_common_ptr cinfo) { (void)cinfo; }

static void mn_copy_message(j_common_ptr cinfo, char *error, size_t error_length) {
    if (!error || error_length == 0) return;
    char message[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, message);
    snprintf(error, error_length, "%s", message);
}

int mn_jpeg_read_size(const uint8_t *data, size_t length, int *width, int *height, char *error, size_t error_length) {
    struct jpeg_decompress_struct cinfo;
    struct mn_jpeg_error jerr;
    cinfo.err = jpeg_std_error(&jerr.base);
    jerr.base.error_exit = mn_jpeg_error_exit;
    jerr.base.output_message = mn_jpeg_silent;
    if (setjmp(jerr.jump)) {
        mn_copy_message((j_common_ptr)&cinfo, error, error_length);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)length);
    jpeg_read_header(&cinfo, TRUE);
    *width = (int)cinfo.image_width;
    *height = (int)cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

int mn_jpeg_decode_rgb(const uint8_t *data, size_t length, int dct_method, int scale_denom, uint64_t max_pixels,
                       uint8_t **out, int *width, int *height, char *error, size_t error_length) {
    return mn_jpeg_decode_rgb_ex(data, length, dct_method, scale_denom, max_pixels, 0, out, width, height, error, error_length);
}

int mn_jpeg_decode_rgb_ex(const uint8_t *data, size_t length, int dct_method, int scale_denom, uint64_t max_pixels,
                          int allow_truncated, uint8_t **out, int *width, int *height, char *error, size_t error_length) {
    struct jpeg_decompress_struct cinfo;
    struct mn_jpeg_error jerr;
    struct jpeg_progress_mgr progress;
    uint8_t *volatile pixels = NULL;
    uint8_t *volatile row = NULL;
    *out = NULL;
    cinfo.err = jpeg_std_error(&jerr.base);
    jerr.base.error_exit = mn_jpeg_error_exit;
    jerr.base.output_message = mn_jpeg_silent;
    jerr.base.emit_message = mn_jpeg_emit_message;
    jerr.strict_eof = !allow_truncated;
    jerr.too_many_scans = 0;
    jerr.declared_width = jerr.declared_height = 0;
    if (setjmp(jerr.jump)) {
        if (jerr.too_many_scans) {
            if (error && error_length) snprintf(error, error_length, "more than 500 progressive scans (refused)");
        } else if (jerr.base.msg_code == JWRN_JPEG_EOF) {
            if (error && error_length) snprintf(error, error_length, "the JPEG data ends early (truncated file)");
        } else if (jerr.base.msg_code == JWRN_HIT_MARKER) {
            if (error && error_length)
                snprintf(error, error_length, "the JPEG data ends before the %ux%u image its header declares (truncated or corrupt file)",
                         jerr.declared_width, jerr.declared_height);
        } else {
            mn_copy_message((j_common_ptr)&cinfo, error, error_length);
        }
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(row);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    progress.progress_monitor = mn_jpeg_progress;
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, data, (unsigned long)length);
    jpeg_read_header(&cinfo, TRUE);
    if ((uint64_t)cinfo.image_width * (uint64_t)cinfo.image_height > max_pixels) {
        if (error && error_length) snprintf(error, error_length, "image is %ux%u pixels, over the limit of %llu pixels",
                                            cinfo.image_width, cinfo.image_height, (unsigned long long)max_pixels);
        jpeg_destroy_decompress(&cinfo);
        return -3;
    }
    cinfo.dct_method = dct_method == MN_DCT_IFAST ? JDCT_IFAST : (dct_method == MN_DCT_FLOAT ? JDCT_FLOAT : JDCT_ISLOW);
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)(scale_denom == 2 || scale_denom == 4 || scale_denom == 8 ? scale_denom : 1);
    int cmyk = (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK);
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height, comps = cinfo.output_components;
    pixels = malloc((size_t)w * (size_t)h * 3);
    row = malloc((size_t)w * (size_t)comps);
    if (!pixels || !row) {
        if (error && error_length) snprintf(error, error_length, "out of memory");
        jpeg_destroy_decompress(&cinfo);
        free(pixels); free(row);
        return -2;
    }
    // Pillow reads every CMYK/YCCK JPEG with raw mode "CMYK;I" ("assume adobe conventions",
    // JpegImagePlugin), Adobe APP14 marker or not: the stored values are 255 - ink. Its cmyk2rgb
    // then gives R = nk - nk*C/255 with nk = 255 - K (C, K the inverted values), which is
    // round(c * k / 255) on the stored bytes c, k (MULDIV255 rounds exactly for 8-bit operands).
    while (cinfo.output_scanline < cinfo.output_height) {
        int y = (int)cinfo.output_scanline;
        if (cmyk) {
            JSAMPROW rows[1] = { row };
            jpeg_read_scanlines(&cinfo, rows, 1);
            uint8_t *dst = pixels + (size_t)y * (size_t)w * 3;
            for (int x = 0; x < w; x++) {
                int c = row[4 * x], m = row[4 * x + 1], yy = row[4 * x + 2], k = row[4 * x + 3];
                int t;
                t = c * k + 128; dst[3 * x] = (uint8_t)(((t >> 8) + t) >> 8);
                t = m * k + 128; dst[3 * x + 1] = (uint8_t)(((t >> 8) + t) >> 8);
                t = yy * k + 128; dst[3 * x + 2] = (uint8_t)(((t >> 8) + t) >> 8);
            }
        } else {
            JSAMPROW rows[1] = { pixels + (size_t)y * (size_t)w * 3 };
            jpeg_read_scanlines(&cinfo, rows, 1);
        }
    }
    // A missing EOI marker after complete image data is tolerated, as Pillow does.
    jerr.strict_eof = 0;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    *out = pixels;
    *width = w;
    *height = h;
    return 0;
}
