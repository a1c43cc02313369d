// A C view of a TensorFlow Lite model file (the flatbuffer of TFLite's schema.fbs), read through
// the C++ code flatc generates (generated/schema_generated.h) and its Verifier.
//
// mn_tflite_verify must accept a buffer before any other function reads it: the Verifier checks
// every offset, table, vector and string of the flatbuffer against the buffer's bounds and
// alignment (it does not check that indices between tables are in range, nor the sizes of tensor
// data: MobileNetTFLite checks those). The other functions then read the verified buffer without
// further checks but for the indices they are given; every pointer they return points into the
// buffer, valid while it is.
#ifndef CMOBILENET_TFLITE_H
#define CMOBILENET_TFLITE_H

#include <stddef.h>
#include <stdint.h>

#include "CMobileNetTFLiteWriter.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Verifies `size` bytes at `data` (aligned to 16 bytes) as a TFLite model: the "TFL3" file
/// identifier, then the whole flatbuffer. Returns 0 when valid; otherwise 1 and a message.
int mn_tflite_verify(const uint8_t *data, size_t size, char *message, size_t message_size);

/// The root table's counts.
typedef struct {
    uint32_t version;
    uint32_t operator_code_count;
    uint32_t subgraph_count;
    uint32_t buffer_count;
    uint32_t metadata_count;
    uint32_t signature_count;
    const char *description; /* NULL when absent */
    uint32_t description_length;
} mn_tflite_model_info;

void mn_tflite_model(const uint8_t *data, mn_tflite_model_info *info);

/// One operator code: the builtin operator (the larger of `builtin_code` and
/// `deprecated_builtin_code`, as TFLite's GetBuiltinCode reads it) and the custom code's name.
typedef struct {
    int32_t builtin_code;
    int32_t version;
    const char *custom_code; /* NULL when absent */
    uint32_t custom_code_length;
} mn_tflite_operator_code;

/// Returns 0, or 1 when `index` is out of range.
int mn_tflite_operator_code_at(const uint8_t *data, uint32_t index, mn_tflite_operator_code *code);

/// One subgraph's counts and its input and output tensor indices.
typedef struct {
    uint32_t tensor_count;
    uint32_t operator_count;
    const int32_t *inputs;
    uint32_t input_count;
    const int32_t *outputs;
    uint32_t output_count;
} mn_tflite_subgraph;

int mn_tflite_subgraph_at(const uint8_t *data, uint32_t index, mn_tflite_subgraph *subgraph);

/// One tensor of a subgraph.
typedef struct {
    const int32_t *shape; /* NULL when absent */
    uint32_t rank;
    int32_t type; /* tflite::TensorType */
    uint32_t buffer;
    const char *name; /* NULL when absent */
    uint32_t name_length;
    int32_t has_quantization;
    const float *scale;
    uint32_t scale_count;
    const int64_t *zero_point;
    uint32_t zero_point_count;
    int32_t quantized_dimension;
    int32_t has_custom_quantization; /* QuantizationDetails set: not a linear quantization */
    int32_t has_sparsity;
    int32_t is_variable;
} mn_tflite_tensor;

int mn_tflite_tensor_at(const uint8_t *data, uint32_t subgraph, uint32_t index, mn_tflite_tensor *tensor);

/// One operator of a subgraph with the builtin options this project reads, decoded; fields of
/// other options keep their zero values. `options_type` is the tflite::BuiltinOptions tag.
typedef struct {
    uint32_t opcode_index;
    const int32_t *inputs;
    uint32_t input_count;
    const int32_t *outputs;
    uint32_t output_count;
    int32_t options_type;
    int32_t has_options; /* the union's table is present */
    int32_t has_custom_options;
    int32_t has_intermediates;
    /* Conv2DOptions, DepthwiseConv2DOptions, Pool2DOptions */
    int32_t padding; /* tflite::Padding: 0 SAME, 1 VALID */
    int32_t stride_w, stride_h;
    int32_t dilation_w, dilation_h;
    int32_t depth_multiplier;
    int32_t filter_w, filter_h;
    /* every option with a fused activation: tflite::ActivationFunctionType */
    int32_t activation;
    /* FullyConnectedOptions */
    int32_t weights_format;
    int32_t keep_num_dims;
    /* ReducerOptions (MEAN) */
    int32_t keep_dims;
    /* SoftmaxOptions */
    float beta;
    /* ReshapeOptions */
    const int32_t *new_shape;
    uint32_t new_shape_count;
    /* SqueezeOptions */
    const int32_t *squeeze_dims;
    uint32_t squeeze_dims_count;
} mn_tflite_operator;

int mn_tflite_operator_at(const uint8_t *data, uint32_t subgraph, uint32_t index, mn_tflite_operator *op);

/// One buffer: its bytes inside the flatbuffer (`data`, `size`), or, for files over 2 GB, an
/// offset and size from the start of the file (`offset` > 1).
typedef struct {
    const uint8_t *data; /* NULL when the buffer has no data vector */
    uint64_t size;
    uint64_t offset;
    uint64_t external_size;
} mn_tflite_buffer;

int mn_tflite_buffer_at(const uint8_t *data, uint32_t index, mn_tflite_buffer *buffer);

/// One metadata entry: its name (such as "TFLITE_METADATA" or "min_runtime_version") and buffer.
typedef struct {
    const char *name;
    uint32_t name_length;
    uint32_t buffer;
} mn_tflite_metadata;

int mn_tflite_metadata_at(const uint8_t *data, uint32_t index, mn_tflite_metadata *metadata);

/// What TFLite Support's metadata (the "TFLITE_METADATA" buffer, metadata_schema.fbs) says about
/// an image model: its name, version and description; the first input's normalisation
/// (NormalizationOptions: (x - mean) / std per channel) and the first output's label file (the
/// first associated file of type TENSOR_AXIS_LABELS, packed in the ZIP appended to the model).
typedef struct {
    const char *name;
    uint32_t name_length;
    const char *version;
    uint32_t version_length;
    const char *description;
    uint32_t description_length;
    const float *mean;
    uint32_t mean_count;
    const float *std;
    uint32_t std_count;
    const char *labels_file;
    uint32_t labels_file_length;
} mn_tflite_metadata_info;

/// Verifies `size` bytes at `data` (aligned to 16 bytes) as a ModelMetadata flatbuffer and reads
/// it. Returns 0, or 1 with a message when it is not valid metadata.
int mn_tflite_read_metadata(const uint8_t *data, size_t size, mn_tflite_metadata_info *info, char *message, size_t message_size);

/// The schema's name of a builtin operator ("CONV_2D"), or "" for a code the schema does not know.
const char *mn_tflite_builtin_operator_name(int32_t code);

/// The schema's name of a tensor type ("UINT8"), or "" for a type the schema does not know.
const char *mn_tflite_tensor_type_name(int32_t type);

#ifdef __cplusplus
}
#endif

#endif
