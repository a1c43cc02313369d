// The C view of a TFLite flatbuffer (include/CMobileNetTFLite.h) over the code flatc generates.
#include "CMobileNetTFLite.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "generated/metadata_schema_generated.h"
#include "generated/schema_generated.h"

namespace {

const tflite::Model *root(const uint8_t *data) { return tflite::GetModel(data); }

template <typename T> uint32_t count(const flatbuffers::Vector<T> *v) { return v ? v->size() : 0; }

void set_message(char *message, size_t size, const char *text) {
    if (message && size > 0) std::snprintf(message, size, "%s", text);
}

}  // namespace

extern "C" int mn_tflite_verify(const uint8_t *data, size_t size, char *message, size_t message_size) {
    if (size < 8) {
        set_message(message, message_size, "the file is shorter than a flatbuffer header (8 bytes)");
        return 1;
    }
    if (size >= FLATBUFFERS_MAX_BUFFER_SIZE) {
        set_message(message, message_size, "the file is larger than a flatbuffer can be (2 GB)");
        return 1;
    }
    if (!tflite::ModelBufferHasIdentifier(data)) {
        set_message(message, message_size, "no TFLite file identifier (\"TFL3\" at byte 4)");
        return 1;
    }
    // Depth and table limits as flatbuffers' defaults (64 levels, 1,000,000 tables): a hostile
    // file cannot make the Verifier recurse or loop without bound.
    flatbuffers::Verifier verifier(data, size, 64, 1000000, true);
    if (!tflite::VerifyModelBuffer(verifier)) {
        set_message(message, message_size, "the flatbuffer is damaged (an offset, table, vector or string lies outside the file or is misaligned)");
        return 1;
    }
    return 0;
}

extern "C" void mn_tflite_model(const uint8_t *data, mn_tflite_model_info *info) {
    const tflite::Model *m = root(data);
    std::memset(info, 0, sizeof *info);
    info->version = m->version();
    info->operator_code_count = count(m->operator_codes());
    info->subgraph_count = count(m->subgraphs());
    info->buffer_count = count(m->buffers());
    info->metadata_count = count(m->metadata());
    info->signature_count = count(m->signature_defs());
    if (auto d = m->description()) {
        info->description = d->c_str();
        info->description_length = d->size();
    }
}

extern "C" int mn_tflite_operator_code_at(const uint8_t *data, uint32_t index, mn_tflite_operator_code *code) {
    auto codes = root(data)->operator_codes();
    std::memset(code, 0, sizeof *code);
    if (!codes || index >= codes->size() || !codes->Get(index)) return 1;
    auto c = codes->Get(index);
    code->builtin_code = std::max<int32_t>(c->builtin_code(), c->deprecated_builtin_code());
    code->version = c->version();
    if (auto s = c->custom_code()) {
        code->custom_code = s->c_str();
        code->custom_code_length = s->size();
    }
    return 0;
}

static const tflite::SubGraph *subgraph_of(const uint8_t *data, uint32_t index) {
    auto subgraphs = root(data)->subgraphs();
    if (!subgraphs || index >= subgraphs->size()) return nullptr;
    return subgraphs->Get(index);
}

extern "C" int mn_tflite_subgraph_at(const uint8_t *data, uint32_t index, mn_tflite_subgraph *subgraph) {
    std::memset(subgraph, 0, sizeof *subgraph);
    auto g = subgraph_of(data, index);
    if (!g) return 1;
    subgraph->tensor_count = count(g->tensors());
    subgraph->operator_count = count(g->operators());
    if (auto v = g->inputs()) { subgraph->inputs = v->data(); subgraph->input_count = v->size(); }
    if (auto v = g->outputs()) { subgraph->outputs = v->data(); subgraph->output_count = v->size(); }
    return 0;
}

extern "C" int mn_tflite_tensor_at(const uint8_t *data, uint32_t subgraph, uint32_t index, mn_tflite_tensor *tensor) {
    std::memset(tensor, 0, sizeof *tensor);
    auto g = subgraph_of(data, subgraph);
    if (!g || !g->tensors() || index >= g->tensors()->size()) return 1;
    auto t = g->tensors()->Get(index);
    if (auto s = t->shape()) { tensor->shape = s->data(); tensor->rank = s->size(); }
    tensor->type = t->type();
    tensor->buffer = t->buffer();
    if (auto n = t->name()) { tensor->name = n->c_str(); tensor->name_length = n->size(); }
    if (auto q = t->quantization()) {
        tensor->has_quantization = 1;
        if (auto s = q->scale()) { tensor->scale = s->data(); tensor->scale_count = s->size(); }
        if (auto z = q->zero_point()) { tensor->zero_point = z->data(); tensor->zero_point_count = z->size(); }
        tensor->quantized_dimension = q->quantized_dimension();
        tensor->has_custom_quantization = q->details_type() != tflite::QuantizationDetails_NONE;
    }
    tensor->has_sparsity = t->sparsity() != nullptr;
    tensor->is_variable = t->is_variable();
    return 0;
}

extern "C" int mn_tflite_operator_at(const uint8_t *data, uint32_t subgraph, uint32_t index, mn_tflite_operator *op) {
    std::memset(op, 0, sizeof *op);
    auto g = subgraph_of(data, subgraph);
    if (!g || !g->operators() || index >= g->operators()->size()) return 1;
    auto o = g->operators()->Get(index);
    op->opcode_index = o->opcode_index();
    if (auto v = o->inputs()) { op->inputs = v->data(); op->input_count = v->size(); }
    if (auto v = o->outputs()) { op->outputs = v->data(); op->output_count = v->size(); }
    op->options_type = o->builtin_options_type();
    op->has_options = o->builtin_options() != nullptr;
    op->has_custom_options = o->custom_options() != nullptr && o->custom_options()->size() > 0;
    op->has_intermediates = o->intermediates() != nullptr && o->intermediates()->size() > 0;
    op->dilation_w = op->dilation_h = 1;
    if (auto c = o->builtin_options_as_Conv2DOptions()) {
        op->padding = c->padding();
        op->stride_w = c->stride_w();
        op->stride_h = c->stride_h();
        op->dilation_w = c->dilation_w_factor();
        op->dilation_h = c->dilation_h_factor();
        op->activation = c->fused_activation_function();
    } else if (auto d = o->builtin_options_as_DepthwiseConv2DOptions()) {
        op->padding = d->padding();
        op->stride_w = d->stride_w();
        op->stride_h = d->stride_h();
        op->dilation_w = d->dilation_w_factor();
        op->dilation_h = d->dilation_h_factor();
        op->depth_multiplier = d->depth_multiplier();
        op->activation = d->fused_activation_function();
    } else if (auto p = o->builtin_options_as_Pool2DOptions()) {
        op->padding = p->padding();
        op->stride_w = p->stride_w();
        op->stride_h = p->stride_h();
        op->filter_w = p->filter_width();
        op->filter_h = p->filter_height();
        op->activation = p->fused_activation_function();
    } else if (auto f = o->builtin_options_as_FullyConnectedOptions()) {
        op->activation = f->fused_activation_function();
        op->weights_format = f->weights_format();
        op->keep_num_dims = f->keep_num_dims();
    } else if (auto a = o->builtin_options_as_AddOptions()) {
        op->activation = a->fused_activation_function();
    } else if (auto r = o->builtin_options_as_ReducerOptions()) {
        op->keep_dims = r->keep_dims();
    } else if (auto s = o->builtin_options_as_SoftmaxOptions()) {
        op->beta = s->beta();
    } else if (auto r = o->builtin_options_as_ReshapeOptions()) {
        if (auto v = r->new_shape()) { op->new_shape = v->data(); op->new_shape_count = v->size(); }
    } else if (auto s = o->builtin_options_as_SqueezeOptions()) {
        if (auto v = s->squeeze_dims()) { op->squeeze_dims = v->data(); op->squeeze_dims_count = v->size(); }
    }
    return 0;
}

extern "C" int mn_tflite_buffer_at(const uint8_t *data, uint32_t index, mn_tflite_buffer *buffer) {
    std::memset(buffer, 0, sizeof *buffer);
    auto buffers = root(data)->buffers();
    if (!buffers || index >= buffers->size()) return 1;
    auto b = buffers->Get(index);
    if (!b) return 0;
    if (auto d = b->data()) { buffer->data = d->data(); buffer->size = d->size(); }
    buffer->offset = b->offset();
    buffer->external_size = b->size();
    return 0;
}

extern "C" int mn_tflite_metadata_at(const uint8_t *data, uint32_t index, mn_tflite_metadata *metadata) {
    std::memset(metadata, 0, sizeof *metadata);
    auto entries = root(data)->metadata();
    if (!entries || index >= entries->size()) return 1;
    auto e = entries->Get(index);
    if (!e) return 1;
    if (auto n = e->name()) { metadata->name = n->c_str(); metadata->name_length = n->size(); }
    metadata->buffer = e->buffer();
    return 0;
}

extern "C" const char *mn_tflite_builtin_operator_name(int32_t code) {
    if (code < tflite::BuiltinOperator_MIN || code > tflite::BuiltinOperator_MAX) return "";
    return tflite::EnumNameBuiltinOperator(static_cast<tflite::BuiltinOperator>(code));
}

extern "C" const char *mn_tflite_tensor_type_name(int32_t type) {
    if (type < tflite::TensorType_MIN || type > tflite::TensorType_MAX) return "";
    return tflite::EnumNameTensorType(static_cast<tflite::TensorType>(type));
}

extern "C" int mn_tflite_read_metadata(const uint8_t *data, size_t size, mn_tflite_metadata_info *info, char *message, size_t message_size) {
    std::memset(info, 0, sizeof *info);
    if (size < 8 || size >= FLATBUFFERS_MAX_BUFFER_SIZE || !tflite::ModelMetadataBufferHasIdentifier(data)) {
        set_message(message, message_size, "the TFLITE_METADATA buffer is not TFLite Support metadata (no \"M001\" identifier)");
        return 1;
    }
    flatbuffers::Verifier verifier(data, size, 64, 1000000, true);
    if (!tflite::VerifyModelMetadataBuffer(verifier)) {
        set_message(message, message_size, "the TFLITE_METADATA buffer is damaged");
        return 1;
    }
    auto m = tflite::GetModelMetadata(data);
    if (auto s = m->name()) { info->name = s->c_str(); info->name_length = s->size(); }
    if (auto s = m->version()) { info->version = s->c_str(); info->version_length = s->size(); }
    if (auto s = m->description()) { info->description = s->c_str(); info->description_length = s->size(); }
    auto subgraphs = m->subgraph_metadata();
    if (!subgraphs || subgraphs->size() == 0 || !subgraphs->Get(0)) return 0;
    auto g = subgraphs->Get(0);
    if (auto inputs = g->input_tensor_metadata(); inputs && inputs->size() > 0 && inputs->Get(0)) {
        if (auto units = inputs->Get(0)->process_units()) {
            for (auto unit : *units) {
                if (!unit) continue;
                if (auto n = unit->options_as_NormalizationOptions()) {
                    if (auto v = n->mean()) { info->mean = v->data(); info->mean_count = v->size(); }
                    if (auto v = n->std()) { info->std = v->data(); info->std_count = v->size(); }
                    break;
                }
            }
        }
    }
    if (auto outputs = g->output_tensor_metadata(); outputs && outputs->size() > 0 && outputs->Get(0)) {
        if (auto files = outputs->Get(0)->associated_files()) {
            for (auto file : *files) {
                if (file && file->type() == tflite::AssociatedFileType_TENSOR_AXIS_LABELS && file->name()) {
                    info->labels_file = file->name()->c_str();
                    info->labels_file_length = file->name()->size();
                    break;
                }
            }
        }
    }
    return 0;
}
