// WebP (libwebp), GIF (giflib, first frame) and BMP (stb_image) decoding to 8-bit RGBA. None of
// these libraries longjmps: errors come back as return codes, which are turned into messages.
#include "CMobileNetShims.h"
#include <gif_lib.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <webp/decode.h>
#include <webp/demux.h>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_FAILURE_USERMSG
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <stb/stb_image.h>
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif

static void mn_message(char *error, size_t error_length, const char *text) {
    if (error && error_length) snprintf(error, error_length, "%s", text ? text : "unknown error");
}

static int mn_over_limit(uint64_t w, uint64_t h, uint64_t max_pixels, char *error, size_t error_length) {
    if (w * h > max_pixels) {
        if (error && error_length) snprintf(error, error_length, "image is %llux%llu pixels, over the limit of %llu pixels",
                                            (unsigned long long)w, (unsigned long long)h, (unsigned long long)max_pixels);
        return 1;
    }
    return 0;
}

// MARK: WebP

// The first frame of an animated WebP, composited on its canvas by libwebpdemux's
// WebPAnimDecoder (what Pillow uses for animated files).
static int mn_webp_decode_first_frame(const uint8_t *data, size_t length, uint64_t max_pixels,
                                      uint8_t **out, int *width, int *height, int *had_alpha, char *error, size_t error_length) {
    WebPData webp = { data, length };
    WebPAnimDecoderOptions options;
    if (!WebPAnimDecoderOptionsInit(&options)) { mn_message(error, error_length, "libwebp version mismatch"); return -1; }
    options.color_mode = MODE_RGBA;
    options.use_threads = 0;
    WebPDemuxer *demux = WebPDemux(&webp);
    if (!demux) { mn_message(error, error_length, "invalid animated WebP data"); return -1; }
    uint64_t w = WebPDemuxGetI(demux, WEBP_FF_CANVAS_WIDTH), h = WebPDemuxGetI(demux, WEBP_FF_CANVAS_HEIGHT);
    WebPDemuxDelete(demux);
    if (w == 0 || h == 0) { mn_message(error, error_length, "invalid WebP canvas size"); return -1; }
    if (mn_over_limit(w, h, max_pixels, error, error_length)) return -3;
    WebPAnimDecoder *decoder = WebPAnimDecoderNew(&webp, &options);
    if (!decoder) { mn_message(error, error_length, "invalid animated WebP data"); return -1; }
    uint8_t *frame = NULL;
    int timestamp = 0;
    if (!WebPAnimDecoderGetNext(decoder, &frame, &timestamp) || !frame) {
        WebPAnimDecoderDelete(decoder);
        mn_message(error, error_length, "cannot decode the first WebP frame (corrupt or truncated)");
        return -1;
    }
    size_t size = (size_t)w * (size_t)h * 4;
    uint8_t *pixels = malloc(size);
    if (!pixels) { WebPAnimDecoderDelete(decoder); mn_message(error, error_length, "out of memory"); return -2; }
    memcpy(pixels, frame, size);
    WebPAnimDecoderDelete(decoder);
    *out = pixels;
    *width = (int)w;
    *height = (int)h;
    *had_alpha = 1;
    return 0;
}

int mn_webp_decode_rgba(const uint8_t *data, size_t length, uint64_t max_pixels,
                        uint8_t **out, int *width, int *height, int *had_alpha, char *error, size_t error_length) {
    *out = NULL;
    WebPBitstreamFeatures features;
    VP8StatusCode status = WebPGetFeatures(data, length, &features);
    if (status != VP8_STATUS_OK) {
        mn_message(error, error_length, status == VP8_STATUS_NOT_ENOUGH_DATA ? "the WebP data ends early (truncated file)" : "invalid WebP data");
        return -1;
    }
    if (features.has_animation) return mn_webp_decode_first_frame(data, length, max_pixels, out, width, height, had_alpha, error, error_length);
    if (features.width <= 0 || features.height <= 0) { mn_message(error, error_length, "invalid WebP size"); return -1; }
    if (mn_over_limit((uint64_t)features.width, (uint64_t)features.height, max_pixels, error, error_length)) return -3;
    size_t stride = (size_t)features.width * 4;
    size_t size = stride * (size_t)features.height;
    uint8_t *pixels = malloc(size);
    if (!pixels) { mn_message(error, error_length, "out of memory"); return -2; }
    if (!WebPDecodeRGBAInto(data, length, pixels, size, (int)stride)) {
        free(pixels);
        mn_message(error, error_length, "cannot decode the WebP data (corrupt or truncated)");
        return -1;
    }
    *out = pixels;
    *width = features.width;
    *height = features.height;
    *had_alpha = features.has_alpha ? 1 : 0;
    return 0;
}

// MARK: GIF

struct mn_gif_source {
    const uint8_t *data;
    size_t length;
    size_t offset;
};

static int mn_gif_read(GifFileType *gif, GifByteType *buffer, int count) {
    struct mn_gif_source *src = (struct mn_gif_source *)gif->UserData;
    if (count <= 0) return 0;
    size_t available = src->length - src->offset;
    size_t n = (size_t)count < available ? (size_t)count : available;
    memcpy(buffer, src->data + src->offset, n);
    src->offset += n;
    return (int)n;
}

static int mn_gif_fail(GifFileType *gif, int code, const char *fallback, char *error, size_t error_length) {
    const char *text = GifErrorString(code);
    if (error && error_length) snprintf(error, error_length, "%s", text ? text : fallback);
    int ignored = 0;
    if (gif) DGifCloseFile(gif, &ignored);
    return -1;
}

int mn_gif_decode_rgba(const uint8_t *data, size_t length, uint64_t max_pixels,
                       uint8_t **out, int *width, int *height, int *had_alpha, char *error, size_t error_length) {
    *out = NULL;
    struct mn_gif_source src = { data, length, 0 };
    int code = 0;
    GifFileType *gif = DGifOpen(&src, mn_gif_read, &code);
    if (!gif) return mn_gif_fail(NULL, code, "not a GIF", error, error_length);
    int transparent = -1;
    for (;;) {
        GifRecordType type;
        if (DGifGetRecordType(gif, &type) == GIF_ERROR) return mn_gif_fail(gif, gif->Error, "corrupt GIF", error, error_length);
        if (type == EXTENSION_RECORD_TYPE) {
            int ext_code = 0;
            GifByteType *ext = NULL;
            if (DGifGetExtension(gif, &ext_code, &ext) == GIF_ERROR) return mn_gif_fail(gif, gif->Error, "corrupt GIF", error, error_length);
            if (ext_code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4) transparent = (ext[1] & 1) ? ext[4] : -1;
            while (ext) {
                if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR) return mn_gif_fail(gif, gif->Error, "corrupt GIF", error, error_length);
            }
        } else if (type == IMAGE_DESC_RECORD_TYPE) {
            if (DGifGetImageDesc(gif) == GIF_ERROR) return mn_gif_fail(gif, gif->Error, "corrupt GIF", error, error_length);
            GifImageDesc desc = gif->Image;
            if (desc.Left < 0 || desc.Top < 0 || desc.Width <= 0 || desc.Height <= 0) {
                mn_message(error, error_length, "invalid GIF frame size");
                DGifCloseFile(gif, &code);
                return -1;
            }
            // Pillow grows the image when the first frame reaches outside the logical screen.
            uint64_t w = (uint64_t)(gif->SWidth > 0 ? gif->SWidth : 0), h = (uint64_t)(gif->SHeight > 0 ? gif->SHeight : 0);
            if ((uint64_t)desc.Left + (uint64_t)desc.Width > w) w = (uint64_t)desc.Left + (uint64_t)desc.Width;
            if ((uint64_t)desc.Top + (uint64_t)desc.Height > h) h = (uint64_t)desc.Top + (uint64_t)desc.Height;
            if (mn_over_limit(w, h, max_pixels, error, error_length)) { DGifCloseFile(gif, &code); return -3; }
            uint8_t *indices = malloc((size_t)(w * h));
            uint8_t *line = malloc((size_t)desc.Width);
            if (!indices || !line) {
                free(indices); free(line);
                mn_message(error, error_length, "out of memory");
                DGifCloseFile(gif, &code);
                return -2;
            }
            memset(indices, transparent >= 0 ? transparent : 0, (size_t)(w * h));
            static const int pass_start[4] = { 0, 4, 2, 1 }, pass_step[4] = { 8, 8, 4, 2 };
            int passes = desc.Interlace ? 4 : 1;
            for (int pass = 0; pass < passes; pass++) {
                int start = desc.Interlace ? pass_start[pass] : 0, step = desc.Interlace ? pass_step[pass] : 1;
                for (int y = start; y < desc.Height; y += step) {
                    if (DGifGetLine(gif, line, desc.Width) == GIF_ERROR) {
                        free(indices); free(line);
                        return mn_gif_fail(gif, gif->Error, "corrupt GIF", error, error_length);
                    }
                    memcpy(indices + ((size_t)desc.Top + (size_t)y) * w + (size_t)desc.Left, line, (size_t)desc.Width);
                }
            }
            free(line);
            ColorMapObject *map = desc.ColorMap ? desc.ColorMap : gif->SColorMap;
            uint8_t *pixels = malloc((size_t)(w * h) * 4);
            if (!pixels) {
                free(indices);
                mn_message(error, error_length, "out of memory");
                DGifCloseFile(gif, &code);
                return -2;
            }
            for (size_t i = 0; i < (size_t)(w * h); i++) {
                int index = indices[i];
                // Pillow's palette starts as a gray ramp: indices past the colour table stay gray.
                if (map && map->Colors && index < map->ColorCount) {
                    pixels[4 * i] = map->Colors[index].Red;
                    pixels[4 * i + 1] = map->Colors[index].Green;
                    pixels[4 * i + 2] = map->Colors[index].Blue;
                } else {
                    pixels[4 * i] = pixels[4 * i + 1] = pixels[4 * i + 2] = (uint8_t)index;
                }
                pixels[4 * i + 3] = index == transparent ? 0 : 255;
            }
            free(indices);
            DGifCloseFile(gif, &code);
            *out = pixels;
            *width = (int)w;
            *height = (int)h;
            *had_alpha = transparent >= 0;
            return 0;
        } else if (type == TERMINATE_RECORD_TYPE) {
            mn_message(error, error_length, "the GIF holds no image");
            DGifCloseFile(gif, &code);
            return -1;
        } else {
            mn_message(error, error_length, "corrupt GIF record");
            DGifCloseFile(gif, &code);
            return -1;
        }
    }
}

// MARK: BMP

static uint32_t mn_le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t mn_le32(const uint8_t *p) { return mn_le16(p) | mn_le16(p + 2) << 16; }

int mn_bmp_decode_rgba(const uint8_t *data, size_t length, uint64_t max_pixels,
                       uint8_t **out, int *width, int *height, int *had_alpha, char *error, size_t error_length) {
    *out = NULL;
    if (length > 0x7fffffff) { mn_message(error, error_length, "BMP file too large"); return -1; }
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(data, (int)length, &w, &h, &comp)) {
        mn_message(error, error_length, stbi_failure_reason());
        return -1;
    }
    // A negative height means top-down rows; stb_image reports it as is from stbi_info.
    if (h < 0 && h != INT_MIN) h = -h;
    if (w <= 0 || h <= 0) { mn_message(error, error_length, "invalid BMP size"); return -1; }
    if (mn_over_limit((uint64_t)w, (uint64_t)h, max_pixels, error, error_length)) return -3;
    // stb_image pads a file that ends early with zeros; Pillow (and we) call it truncated.
    if (length >= 30) {
        uint32_t offset = mn_le32(data + 10), header = mn_le32(data + 14);
        uint32_t bpp = header == 12 ? mn_le16(data + 24) : mn_le16(data + 28);
        uint32_t compression = header >= 40 && length >= 34 ? mn_le32(data + 30) : 0;
        if (compression == 0 || compression == 3 || compression == 6) {
            uint64_t stride = (((uint64_t)w * bpp + 31) / 32) * 4;
            if ((uint64_t)offset + stride * (uint64_t)h > (uint64_t)length) {
                mn_message(error, error_length, "the BMP pixel data ends early (truncated file)");
                return -1;
            }
        }
    }
    int got = 0;
    stbi_uc *decoded = stbi_load_from_memory(data, (int)length, &w, &h, &got, 4);
    if (!decoded) {
        const char *reason = stbi_failure_reason();
        if (error && error_length) snprintf(error, error_length, "cannot decode the BMP: %s", reason ? reason : "corrupt data");
        return -1;
    }
    size_t size = (size_t)w * (size_t)h * 4;
    uint8_t *pixels = malloc(size);
    if (!pixels) { stbi_image_free(decoded); mn_message(error, error_length, "out of memory"); return -2; }
    memcpy(pixels, decoded, size);
    stbi_image_free(decoded);
    *out = pixels;
    *width = w;
    *height = h;
    *had_alpha = got == 4;
    return 0;
}
