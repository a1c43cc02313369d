// C shims for swift-mobilenet: HDF5 (macros and global type ids), libjpeg-turbo and libpng
// (setjmp/longjmp error handling) cannot be called directly from Swift.
#ifndef CMOBILENET_SHIMS_H
#define CMOBILENET_SHIMS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: HDF5 (read-only access to Keras weight files)

/// Opens an HDF5 file read-only. Returns 0 and sets *out, or a negative value.
int mn_h5_open_file(const char *path, int64_t *out);
/// Opens an in-memory HDF5 file image (the bytes are copied). Returns 0 or negative.
int mn_h5_open_image(const void *bytes, size_t length, int64_t *out);
/// Closes a file, group or dataset id.
void mn_h5_close(int64_t id);
/// Opens a child group. Returns 0 or negative.
int mn_h5_group_open(int64_t loc, const char *name, int64_t *out);
/// Number of links in a group, or negative.
int64_t mn_h5_child_count(int64_t group);
/// Copies the name of the child at `index` (in name order) into buf; returns the name length,
/// or negative. A return value >= buflen means buf was too small.
int64_t mn_h5_child_name(int64_t group, uint64_t index, char *buf, size_t buflen);
/// 1: group, 2: dataset, 0: something else, negative: error.
int mn_h5_child_kind(int64_t group, const char *name);
/// 1 if the object has the attribute, 0 if not, negative on error.
int mn_h5_attr_exists(int64_t object, const char *name);
/// Reads a string or string-array attribute (fixed or variable length, scalar or 1-D) into a
/// newly allocated buffer of `*count` NUL-terminated strings laid end to end. A numeric
/// attribute with zero elements yields count 0. Free with mn_free. Returns 0, -1 on error,
/// -2 if the attribute is not a string type.
int mn_h5_attr_read_strings(int64_t object, const char *name, char **out, size_t *total_bytes, size_t *count);
/// Shape of a dataset: up to 8 dims. Returns the rank, or negative.
int mn_h5_dataset_shape(int64_t loc, const char *name, uint64_t *dims, int max_rank);
/// What a dataset is made of, read before any of its data.
typedef struct {
    int rank;                  // number of dimensions (dims filled up to max_rank)
    int is_numeric;            // a float or integer element type
    uint64_t element_size;     // bytes per stored element
    int external_files;        // external raw-data files (H5Pset_external): refused by callers
    int is_virtual;            // a virtual dataset (data in other files): refused by callers
    int filters;               // compression or other filters in the pipeline
    uint64_t storage_bytes;    // bytes allocated in the file
} mn_h5_dataset_info_t;
/// Fills `info` and `dims` for dataset `name` of `loc`. Returns 0, -1 on error, -3 when `name`
/// is an external link (a link into another file, never followed).
int mn_h5_dataset_info(int64_t loc, const char *name, uint64_t *dims, int max_rank, mn_h5_dataset_info_t *info);
/// 1 when the link `name` of `loc` is an external link (into another file), 0 when not, negative on error.
int mn_h5_link_is_external(int64_t loc, const char *name);
/// Reads a whole numeric dataset converted to float32. `count` must equal the element count.
int mn_h5_dataset_read_float(int64_t loc, const char *name, float *out, size_t count);
/// 1 when the dataset's stored type is a floating-point or integer type, 0 otherwise.
int mn_h5_dataset_is_numeric(int64_t loc, const char *name);
void mn_free(void *pointer);

// MARK: HDF5 writing (Keras 3 model.weights.h5 for `.keras` export)

/// Creates a new HDF5 file for writing (fails if it exists). Returns 0 and sets *out, or negative.
int mn_h5_create_file(const char *path, int64_t *out);
/// Creates the child group `name` (a path whose parents exist). Returns 0 and sets *out, or negative.
int mn_h5_group_create(int64_t loc, const char *name, int64_t *out);
/// Writes a scalar variable-length UTF-8 string attribute on an object, as h5py stores a
/// Python `str`. Returns 0 or negative.
int mn_h5_attr_write_string(int64_t object, const char *name, const char *value);
/// Creates the dataset `name` (contiguous, little-endian float32, rank 0...8, dims `dims`) and
/// writes `values` (row-major, the product of dims elements). Returns 0 or negative.
int mn_h5_dataset_write_float(int64_t loc, const char *name, const uint64_t *dims, int rank, const float *values);
/// Flushes and closes a file opened for writing; returns 0 or negative (a failed final write).
int mn_h5_close_file(int64_t file);

// MARK: JPEG (libjpeg-turbo, libjpeg API)

/// JPEG inverse DCT methods (libjpeg J_DCT_METHOD).
enum { MN_DCT_ISLOW = 0, MN_DCT_IFAST = 1, MN_DCT_FLOAT = 2 };

/// Decodes a JPEG to interleaved 8-bit RGB (gray, YCbCr, CMYK and YCCK inputs, Adobe inverted
/// CMYK included). `scale_denom` is 1, 2, 4 or 8 (DCT-domain downscaling). Images over
/// `max_pixels` pixels are refused (-3). On success returns 0
/// and a malloc'ed buffer of width*height*3 bytes (free with mn_free). On failure returns
/// negative and writes libjpeg's message into `error` (NUL-terminated, at most error_length).
int mn_jpeg_decode_rgb(const uint8_t *data, size_t length, int dct_method, int scale_denom, uint64_t max_pixels,
                       uint8_t **out, int *width, int *height, char *error, size_t error_length);

/// As mn_jpeg_decode_rgb; with `allow_truncated` 0 a stream that ends early is an error (-1, as
/// in Pillow) instead of being padded with grey. More than 500 progressive scans are refused.
/// CMYK/YCCK are converted as Pillow does (stored values taken as Adobe-inverted).
int mn_jpeg_decode_rgb_ex(const uint8_t *data, size_t length, int dct_method, int scale_denom, uint64_t max_pixels,
                          int allow_truncated, uint8_t **out, int *width, int *height, char *error, size_t error_length);

/// Reads only the JPEG header and reports the image dimensions. Returns 0 or negative.
int mn_jpeg_read_size(const uint8_t *data, size_t length, int *width, int *height, char *error, size_t error_length);

// MARK: PNG (libpng)

/// Decodes a PNG to interleaved 8-bit RGBA (palette, gray, gray+alpha, RGB, RGBA, 16-bit and
/// interlaced inputs; 16-bit samples are reduced by taking the high byte as PIL does; images
/// without alpha get alpha 255). Returns 0 and a malloc'ed width*height*4 buffer, or negative
/// with libpng's message in `error`. Images over `max_pixels` pixels are refused (-3).
int mn_png_decode_rgba(const uint8_t *data, size_t length, uint64_t max_pixels,
                       uint8_t **out, int *width, int *height, int *had_alpha, char *error, size_t error_length);

// MARK: WebP (libwebp), GIF (giflib), BMP (stb_image)

/// Decodes a WebP (lossy, lossless, with or without alpha; the first frame of an animation, on
/// its canvas) to 8-bit RGBA (not premultiplied). Returns 0 and a malloc'ed width*height*4
/// buffer (free with mn_free), -3 over `max_pixels`, other negative values with a message.
int mn_webp_decode_rgba(const uint8_t *data, size_t length, uint64_t max_pixels,
                        uint8_t **out, int *width, int *height, int *had_alpha, char *error, size_t error_length);

/// Decodes the first frame of a GIF to 8-bit RGBA as Pillow shows it: the logical screen (grown
/// to hold the frame, as Pillow does), pixels outside the frame filled with the frame's
/// transparent index or index 0, the local colour table or else the global one (a gray ramp
/// when there is none), the transparent index with alpha 0. Interlaced frames are de-interlaced.
/// Returns 0, -3 over `max_pixels`, other negative values with a message.
int mn_gif_decode_rgba(const uint8_t *data, size_t length, uint64_t max_pixels,
                       uint8_t **out, int *width, int *height, int *had_alpha, char *error, size_t error_length);

/// Decodes a BMP (1, 4, 8, 16, 24, 32 bits per pixel, bottom-up or top-down; not RLE) to 8-bit
/// RGBA through stb_image. Returns 0, -3 over `max_pixels`, other negative values with a message.
int mn_bmp_decode_rgba(const uint8_t *data, size_t length, uint64_t max_pixels,
                       uint8_t **out, int *width, int *height, int *had_alpha, char *error, size_t error_length);

// Process-level helpers (the fork/BLAS lock, address-space limits, malloc tuning) are in
// CMobileNetProcess.


#ifdef __cplusplus
}
#endif
#endif
