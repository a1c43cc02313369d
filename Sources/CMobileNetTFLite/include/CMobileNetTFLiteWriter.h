// Writing TensorFlow Lite model files: the flatbuffer of TFLite's schema.fbs and the TFLite
// Support metadata of metadata_schema.fbs, built with the C++ code flatc generates
// (generated/*.h) and flatbuffers' FlatBufferBuilder. The caller (MobileNetTFLite's exporter)
// decides every tensor, quantization and operator; this layer only serialises them.
#ifndef CMOBILENET_TFLITE_WRITER_H
#define CMOBILENET_TFLITE_WRITER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mn_tflite_writer mn_tflite_writer;

/// One tensor of the model's only subgraph.
typedef struct {
    const int32_t *shape;
    uint32_t rank;
    int32_t dynamic_batch;  /* nonzero: shape_signature = shape with -1 for dimension 0 */
    int32_t type;           /* tflite::TensorType */
    uint32_t buffer;        /* 0: the empty buffer (an activation) */
    const char *name;
    const float *scale;     /* quantization_count scales and zero points; 0: not quantized */
    const int64_t *zero_point;
    uint32_t quantization_count;
    int32_t quantized_dimension;
} mn_tflite_tensor_spec;

/// One operator: a builtin operator code and version, its tensors, and the fields of the builtin
/// options `options_type` (tflite::BuiltinOptions) names; other fields are ignored.
typedef struct {
    int32_t builtin_code;  /* tflite::BuiltinOperator */
    int32_t version;
    const int32_t *inputs;
    uint32_t input_count;
    const int32_t *outputs;
    uint32_t output_count;
    int32_t options_type;  /* 0: none */
    int32_t padding;       /* Conv2D, DepthwiseConv2D, Pool2D: tflite::Padding */
    int32_t stride_w, stride_h;
    int32_t filter_w, filter_h;  /* Pool2D */
    int32_t depth_multiplier;
    int32_t activation;    /* tflite::ActivationFunctionType */
    int32_t keep_dims;     /* ReducerOptions */
    float beta;            /* SoftmaxOptions */
    int32_t asymmetric_quantize_inputs; /* FullyConnectedOptions */
} mn_tflite_operator_spec;

mn_tflite_writer *mn_tflite_writer_create(void);
void mn_tflite_writer_destroy(mn_tflite_writer *writer);

/// Adds a buffer holding a copy of `size` bytes (stored 16-byte aligned); returns its index.
/// Buffer 0, the empty buffer, exists from the start.
uint32_t mn_tflite_writer_add_buffer(mn_tflite_writer *writer, const uint8_t *data, size_t size);

/// Adds a tensor; returns its index.
int32_t mn_tflite_writer_add_tensor(mn_tflite_writer *writer, const mn_tflite_tensor_spec *spec);

/// Adds an operator (its operator code is shared with earlier ones of the same code and version).
void mn_tflite_writer_add_operator(mn_tflite_writer *writer, const mn_tflite_operator_spec *spec);

/// The subgraph's input and output tensor, and the names its "serving_default" signature gives them.
void mn_tflite_writer_set_io(mn_tflite_writer *writer, int32_t input, const char *input_name, int32_t output, const char *output_name);

/// Adds a metadata entry (such as "min_runtime_version", "TFLITE_METADATA") naming a buffer.
void mn_tflite_writer_add_metadata(mn_tflite_writer *writer, const char *name, uint32_t buffer);

/// The model's description string.
void mn_tflite_writer_set_description(mn_tflite_writer *writer, const char *description);

/// Serialises the model ("TFL3", schema version 3). Returns 0 and the bytes (owned by the writer,
/// valid until it is destroyed), or 1 with a message (a tensor or buffer index out of range, a
/// model over 2 GB).
int mn_tflite_writer_finish(mn_tflite_writer *writer, const uint8_t **bytes, size_t *size, char *message, size_t message_size);

/// TFLite Support metadata of an image model with one input and one output (metadata_schema.fbs,
/// "M001"), as its MetadataWriter for image classifiers writes it.
typedef struct {
    const char *name;
    const char *version;
    const char *description;
    const char *author;
    const char *license;
    const char *input_name;
    const char *input_description;
    const float *mean;       /* NormalizationOptions, per channel or one value; count 0: none */
    const float *std;
    uint32_t normalization_count;
    float input_min, input_max; /* stats of the input values */
    const char *output_name;
    const char *output_description;
    int32_t output_is_probability; /* stats 0...1 */
    const char *labels_file;   /* NULL: no associated label file */
    const char *labels_description;
} mn_tflite_metadata_spec;

/// Serialises metadata; returns the bytes (free with mn_tflite_free) and their size.
uint8_t *mn_tflite_write_metadata(const mn_tflite_metadata_spec *spec, size_t *size);

void mn_tflite_free(void *pointer);

#ifdef __cplusplus
}
#endif

#endif
