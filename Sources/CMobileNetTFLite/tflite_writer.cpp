// TFLite model files written with flatbuffers' FlatBufferBuilder over the generated tables
// (include/CMobileNetTFLiteWriter.h).
#include "CMobileNetTFLiteWriter.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "generated/metadata_schema_generated.h"
#include "generated/schema_generated.h"

namespace {

struct TensorRecord {
    std::vector<int32_t> shape;
    bool dynamic_batch;
    int32_t type;
    uint32_t buffer;
    std::string name;
    std::vector<float> scale;
    std::vector<int64_t> zero_point;
    int32_t quantized_dimension;
};

struct OperatorRecord {
    mn_tflite_operator_spec spec;
    uint32_t opcode_index;
    std::vector<int32_t> inputs, outputs;
};

void set_message(char *message, size_t size, const std::string &text) {
    if (message && size > 0) std::snprintf(message, size, "%s", text.c_str());
}

std::string text(const char *s) { return s ? std::string(s) : std::string(); }

}  // namespace

struct mn_tflite_writer {
    std::vector<std::vector<uint8_t>> buffers{std::vector<uint8_t>()};
    std::vector<TensorRecord> tensors;
    std::vector<OperatorRecord> operators;
    std::vector<std::pair<int32_t, int32_t>> codes;  // (builtin code, version)
    std::vector<std::pair<std::string, uint32_t>> metadata;
    int32_t input = -1, output = -1;
    std::string input_name, output_name, description;
    flatbuffers::FlatBufferBuilder builder{1 << 20};
};

extern "C" mn_tflite_writer *mn_tflite_writer_create(void) { return new mn_tflite_writer(); }

extern "C" void mn_tflite_writer_destroy(mn_tflite_writer *writer) { delete writer; }

extern "C" uint32_t mn_tflite_writer_add_buffer(mn_tflite_writer *writer, const uint8_t *data, size_t size) {
    writer->buffers.emplace_back(data, data + size);
    return static_cast<uint32_t>(writer->buffers.size() - 1);
}

extern "C" int32_t mn_tflite_writer_add_tensor(mn_tflite_writer *writer, const mn_tflite_tensor_spec *spec) {
    TensorRecord t;
    t.shape.assign(spec->shape, spec->shape + spec->rank);
    t.dynamic_batch = spec->dynamic_batch != 0;
    t.type = spec->type;
    t.buffer = spec->buffer;
    t.name = text(spec->name);
    if (spec->quantization_count > 0) {
        t.scale.assign(spec->scale, spec->scale + spec->quantization_count);
        t.zero_point.assign(spec->zero_point, spec->zero_point + spec->quantization_count);
    }
    t.quantized_dimension = spec->quantized_dimension;
    writer->tensors.push_back(std::move(t));
    return static_cast<int32_t>(writer->tensors.size() - 1);
}

extern "C" void mn_tflite_writer_add_operator(mn_tflite_writer *writer, const mn_tflite_operator_spec *spec) {
    OperatorRecord op;
    op.spec = *spec;
    op.inputs.assign(spec->inputs, spec->inputs + spec->input_count);
    op.outputs.assign(spec->outputs, spec->outputs + spec->output_count);
    op.spec.inputs = nullptr;
    op.spec.outputs = nullptr;
    std::pair<int32_t, int32_t> code{spec->builtin_code, spec->version};
    uint32_t index = 0;
    while (index < writer->codes.size() && writer->codes[index] != code) index++;
    if (index == writer->codes.size()) writer->codes.push_back(code);
    op.opcode_index = index;
    writer->operators.push_back(std::move(op));
}

extern "C" void mn_tflite_writer_set_io(mn_tflite_writer *writer, int32_t input, const char *input_name, int32_t output, const char *output_name) {
    writer->input = input;
    writer->output = output;
    writer->input_name = text(input_name);
    writer->output_name = text(output_name);
}

extern "C" void mn_tflite_writer_add_metadata(mn_tflite_writer *writer, const char *name, uint32_t buffer) {
    writer->metadata.emplace_back(text(name), buffer);
}

extern "C" void mn_tflite_writer_set_description(mn_tflite_writer *writer, const char *description) {
    writer->description = text(description);
}

static flatbuffers::Offset<void> options(flatbuffers::FlatBufferBuilder &fbb, const mn_tflite_operator_spec &s) {
    auto padding = static_cast<tflite::Padding>(s.padding);
    auto activation = static_cast<tflite::ActivationFunctionType>(s.activation);
    switch (s.options_type) {
    case tflite::BuiltinOptions_Conv2DOptions:
        return tflite::CreateConv2DOptions(fbb, padding, s.stride_w, s.stride_h, activation).Union();
    case tflite::BuiltinOptions_DepthwiseConv2DOptions:
        return tflite::CreateDepthwiseConv2DOptions(fbb, padding, s.stride_w, s.stride_h, s.depth_multiplier, activation).Union();
    case tflite::BuiltinOptions_Pool2DOptions:
        return tflite::CreatePool2DOptions(fbb, padding, s.stride_w, s.stride_h, s.filter_w, s.filter_h, activation).Union();
    case tflite::BuiltinOptions_FullyConnectedOptions:
        return tflite::CreateFullyConnectedOptions(fbb, activation, tflite::FullyConnectedOptionsWeightsFormat_DEFAULT, false,
                                                   s.asymmetric_quantize_inputs != 0).Union();
    case tflite::BuiltinOptions_AddOptions:
        return tflite::CreateAddOptions(fbb, activation).Union();
    case tflite::BuiltinOptions_ReducerOptions:
        return tflite::CreateReducerOptions(fbb, s.keep_dims != 0).Union();
    case tflite::BuiltinOptions_SoftmaxOptions:
        return tflite::CreateSoftmaxOptions(fbb, s.beta).Union();
    case tflite::BuiltinOptions_QuantizeOptions:
        return tflite::CreateQuantizeOptions(fbb).Union();
    case tflite::BuiltinOptions_DequantizeOptions:
        return tflite::CreateDequantizeOptions(fbb).Union();
    default:
        return 0;
    }
}

extern "C" int mn_tflite_writer_finish(mn_tflite_writer *writer, const uint8_t **bytes, size_t *size, char *message, size_t message_size) {
    const size_t tensor_count = writer->tensors.size();
    auto valid_tensor = [&](int32_t i) { return i >= 0 && static_cast<size_t>(i) < tensor_count; };
    for (size_t i = 0; i < tensor_count; i++) {
        if (writer->tensors[i].buffer >= writer->buffers.size()) {
            set_message(message, message_size, "tensor " + std::to_string(i) + " names buffer " + std::to_string(writer->tensors[i].buffer) + ", which does not exist");
            return 1;
        }
    }
    for (size_t i = 0; i < writer->operators.size(); i++) {
        for (auto t : writer->operators[i].inputs) if (t != -1 && !valid_tensor(t)) { set_message(message, message_size, "operator " + std::to_string(i) + " names tensor " + std::to_string(t) + ", which does not exist"); return 1; }
        for (auto t : writer->operators[i].outputs) if (!valid_tensor(t)) { set_message(message, message_size, "operator " + std::to_string(i) + " names tensor " + std::to_string(t) + ", which does not exist"); return 1; }
    }
    if (!valid_tensor(writer->input) || !valid_tensor(writer->output)) {
        set_message(message, message_size, "the model's input or output tensor is not set");
        return 1;
    }
    for (auto &m : writer->metadata) {
        if (m.second >= writer->buffers.size()) { set_message(message, message_size, "metadata " + m.first + " names a buffer that does not exist"); return 1; }
    }
    size_t total = 0;
    for (auto &b : writer->buffers) total += b.size() + 16;
    if (total >= FLATBUFFERS_MAX_BUFFER_SIZE / 2) {
        set_message(message, message_size, "the model's constants take more than 1 GB; TFLite's flatbuffer holds at most 2 GB");
        return 1;
    }

    auto &fbb = writer->builder;
    fbb.Clear();
    // Buffers first (the largest part), each aligned to 16 bytes as TFLite's converter stores them.
    std::vector<flatbuffers::Offset<tflite::Buffer>> buffers;
    for (auto &b : writer->buffers) {
        if (b.empty()) {
            buffers.push_back(tflite::CreateBuffer(fbb));
        } else {
            fbb.ForceVectorAlignment(b.size(), sizeof(uint8_t), 16);
            auto data = fbb.CreateVector(b);
            buffers.push_back(tflite::CreateBuffer(fbb, data));
        }
    }
    std::vector<flatbuffers::Offset<tflite::Tensor>> tensors;
    for (auto &t : writer->tensors) {
        flatbuffers::Offset<tflite::QuantizationParameters> q = 0;
        if (!t.scale.empty()) {
            q = tflite::CreateQuantizationParameters(fbb, 0, 0, fbb.CreateVector(t.scale), fbb.CreateVector(t.zero_point),
                                                     tflite::QuantizationDetails_NONE, 0, t.quantized_dimension);
        }
        flatbuffers::Offset<flatbuffers::Vector<int32_t>> signature = 0;
        if (t.dynamic_batch && !t.shape.empty()) {
            std::vector<int32_t> s = t.shape;
            s[0] = -1;
            signature = fbb.CreateVector(s);
        }
        tensors.push_back(tflite::CreateTensor(fbb, fbb.CreateVector(t.shape), static_cast<tflite::TensorType>(t.type), t.buffer,
                                               fbb.CreateString(t.name), q, false, 0, signature));
    }
    std::vector<flatbuffers::Offset<tflite::Operator>> operators;
    for (auto &o : writer->operators) {
        auto opts = options(fbb, o.spec);
        operators.push_back(tflite::CreateOperator(fbb, o.opcode_index, fbb.CreateVector(o.inputs), fbb.CreateVector(o.outputs),
                                                   opts.IsNull() ? tflite::BuiltinOptions_NONE : static_cast<tflite::BuiltinOptions>(o.spec.options_type), opts));
    }
    std::vector<int32_t> inputs{writer->input}, outputs{writer->output};
    auto subgraph = tflite::CreateSubGraph(fbb, fbb.CreateVector(tensors), fbb.CreateVector(inputs), fbb.CreateVector(outputs),
                                           fbb.CreateVector(operators), fbb.CreateString("main"));
    std::vector<flatbuffers::Offset<tflite::OperatorCode>> codes;
    for (auto &c : writer->codes) {
        // Codes below 127 are also written to the deprecated 8-bit field, as TFLite's converter
        // does, for runtimes older than the 32-bit field.
        int8_t deprecated = static_cast<int8_t>(c.first < tflite::BuiltinOperator_PLACEHOLDER_FOR_GREATER_OP_CODES ? c.first : tflite::BuiltinOperator_PLACEHOLDER_FOR_GREATER_OP_CODES);
        codes.push_back(tflite::CreateOperatorCode(fbb, deprecated, 0, c.second, static_cast<tflite::BuiltinOperator>(c.first)));
    }
    std::vector<flatbuffers::Offset<tflite::Metadata>> metadata;
    for (auto &m : writer->metadata) metadata.push_back(tflite::CreateMetadata(fbb, fbb.CreateString(m.first), m.second));
    std::vector<flatbuffers::Offset<tflite::TensorMap>> sig_inputs{tflite::CreateTensorMap(fbb, fbb.CreateString(writer->input_name), writer->input)};
    std::vector<flatbuffers::Offset<tflite::TensorMap>> sig_outputs{tflite::CreateTensorMap(fbb, fbb.CreateString(writer->output_name), writer->output)};
    std::vector<flatbuffers::Offset<tflite::SignatureDef>> signatures{
        tflite::CreateSignatureDef(fbb, fbb.CreateVector(sig_inputs), fbb.CreateVector(sig_outputs), fbb.CreateString("serving_default"), 0)};
    std::vector<flatbuffers::Offset<tflite::SubGraph>> subgraphs{subgraph};
    auto model = tflite::CreateModel(fbb, 3, fbb.CreateVector(codes), fbb.CreateVector(subgraphs), fbb.CreateString(writer->description),
                                     fbb.CreateVector(buffers), 0, fbb.CreateVector(metadata), fbb.CreateVector(signatures));
    tflite::FinishModelBuffer(fbb, model);
    *bytes = fbb.GetBufferPointer();
    *size = fbb.GetSize();
    return 0;
}

extern "C" uint8_t *mn_tflite_write_metadata(const mn_tflite_metadata_spec *s, size_t *size) {
    flatbuffers::FlatBufferBuilder fbb(4096);
    auto str = [&](const char *p) -> flatbuffers::Offset<flatbuffers::String> { return p ? fbb.CreateString(p) : 0; };
    // Input: an RGB image, its normalisation and value range.
    std::vector<flatbuffers::Offset<tflite::ProcessUnit>> units;
    if (s->normalization_count > 0) {
        std::vector<float> mean(s->mean, s->mean + s->normalization_count), std(s->std, s->std + s->normalization_count);
        auto n = tflite::CreateNormalizationOptions(fbb, fbb.CreateVector(mean), fbb.CreateVector(std));
        units.push_back(tflite::CreateProcessUnit(fbb, tflite::ProcessUnitOptions_NormalizationOptions, n.Union()));
    }
    auto image = tflite::CreateImageProperties(fbb, tflite::ColorSpaceType_RGB);
    auto input_content = tflite::CreateContent(fbb, tflite::ContentProperties_ImageProperties, image.Union());
    std::vector<float> in_min{s->input_min}, in_max{s->input_max};
    auto input_stats = tflite::CreateStats(fbb, fbb.CreateVector(in_max), fbb.CreateVector(in_min));
    auto input_name = str(s->input_name), input_description = str(s->input_description);
    auto input = tflite::CreateTensorMetadata(fbb, input_name, input_description, 0, input_content,
                                              units.empty() ? 0 : fbb.CreateVector(units), input_stats);
    // Output: features (the class scores), 0...1 when probabilities, with the label file.
    auto features = tflite::CreateFeatureProperties(fbb);
    auto output_content = tflite::CreateContent(fbb, tflite::ContentProperties_FeatureProperties, features.Union());
    flatbuffers::Offset<tflite::Stats> output_stats = 0;
    if (s->output_is_probability) {
        std::vector<float> lo{0.0f}, hi{1.0f};
        output_stats = tflite::CreateStats(fbb, fbb.CreateVector(hi), fbb.CreateVector(lo));
    }
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<tflite::AssociatedFile>>> files = 0;
    if (s->labels_file) {
        std::vector<flatbuffers::Offset<tflite::AssociatedFile>> list{
            tflite::CreateAssociatedFile(fbb, str(s->labels_file), str(s->labels_description), tflite::AssociatedFileType_TENSOR_AXIS_LABELS)};
        files = fbb.CreateVector(list);
    }
    auto output_name = str(s->output_name), output_description = str(s->output_description);
    auto output = tflite::CreateTensorMetadata(fbb, output_name, output_description, 0, output_content, 0, output_stats, files);
    std::vector<flatbuffers::Offset<tflite::TensorMetadata>> ins{input}, outs{output};
    auto subgraph = tflite::CreateSubGraphMetadata(fbb, 0, 0, fbb.CreateVector(ins), fbb.CreateVector(outs));
    std::vector<flatbuffers::Offset<tflite::SubGraphMetadata>> subgraphs{subgraph};
    auto name = str(s->name), description = str(s->description), version = str(s->version);
    auto author = str(s->author), license = str(s->license);
    auto model = tflite::CreateModelMetadata(fbb, name, description, version, fbb.CreateVector(subgraphs), author, license, 0,
                                             fbb.CreateString("1.0.0"));
    tflite::FinishModelMetadataBuffer(fbb, model);
    uint8_t *out = static_cast<uint8_t *>(std::malloc(fbb.GetSize()));
    if (!out) return nullptr;
    std::memcpy(out, fbb.GetBufferPointer(), fbb.GetSize());
    *size = fbb.GetSize();
    return out;
}

extern "C" void mn_tflite_free(void *pointer) { std::free(pointer); }
