#!/usr/bin/env bash
# Generates the Swift of TensorFlow's and TensorFlow Serving's protocol buffers and gRPC services.
# Run once by hand when the schema changes; CI compiles the committed output, never this script.
#
#   Sources/MobileNetTFProtos/Generated/*.pb.swift   messages (swift-protobuf, public): SavedModel
#       (saved_model.proto and what it imports, tensor_bundle.proto) and TF Serving's APIs
#       (tensorflow_serving/apis/*.proto: predict, classification, get_model_metadata,
#       get_model_status, model_management and what they import).
#   Sources/MobileNetServingGRPC/Generated/*.grpc.swift   the services PredictionService and
#       ModelService (grpc-swift 2, public server and client).
#
# The schema is TensorFlow's own, as the TensorFlow 2.21 and tensorflow-serving-api 2.21.0 wheels
# (scripts/requirements-fixtures.txt, in .venv) carry it: the descriptors compiled into their
# *_pb2.py modules, written as one FileDescriptorSet
# (Sources/MobileNetTFProtos/schema/tensorflow-2.21.protoset, committed) that protoc reads with
# --descriptor_set_in. Needs protoc (Debian protobuf-compiler 3.21), protoc-gen-swift 1.39.0 and
# protoc-gen-grpc-swift-2 2.4.1, built from the packages the project depends on:
#   git clone /opt/swift-packages/apple/swift-protobuf.git /tmp/swift-protobuf
#   (cd /tmp/swift-protobuf && git checkout 1.39.0 && swift build -c release --product protoc-gen-swift)
#   git clone /opt/swift-packages/grpc/grpc-swift-protobuf.git /tmp/grpc-swift-protobuf
#   (cd /tmp/grpc-swift-protobuf && git checkout 2.4.1 && swift build -c release --product protoc-gen-grpc-swift-2)
#   scripts/generate-tensorflow-protos.sh /tmp/swift-protobuf/.build/release/protoc-gen-swift \
#       /tmp/grpc-swift-protobuf/.build/release/protoc-gen-grpc-swift-2
set -euo pipefail
cd "$(dirname "$0")/.."
plugin="${1:?usage: $0 PATH/TO/protoc-gen-swift PATH/TO/protoc-gen-grpc-swift-2}"
grpc_plugin="${2:?usage: $0 PATH/TO/protoc-gen-swift PATH/TO/protoc-gen-grpc-swift-2}"
schema=Sources/MobileNetTFProtos/schema/tensorflow-2.21.protoset
out=Sources/MobileNetTFProtos/Generated
grpc_out=Sources/MobileNetServingGRPC/Generated
TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python - "$schema" <<'PY'
import sys
from google.protobuf import descriptor_pb2
from tensorflow.core.protobuf import saved_model_pb2, tensor_bundle_pb2
from tensorflow_serving.apis import prediction_service_pb2, model_service_pb2
seen, files = set(), []
def add(fd):
    if fd.name in seen:
        return
    seen.add(fd.name)
    for dep in fd.dependencies:
        add(dep)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    files.append(proto)
for module in (saved_model_pb2, tensor_bundle_pb2, prediction_service_pb2, model_service_pb2):
    add(module.DESCRIPTOR)
s = descriptor_pb2.FileDescriptorSet(file=files)
open(sys.argv[1], "wb").write(s.SerializeToString())
PY
# Every file but the well-known types (SwiftProtobuf has them) and the two service files (whose
# messages are in the files they import; their services are generated below).
files=$(TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -c "
from google.protobuf import descriptor_pb2
s = descriptor_pb2.FileDescriptorSet(); s.ParseFromString(open('$schema','rb').read())
print(' '.join(f.name for f in s.file if not f.name.startswith('google/protobuf/')))")
rm -f "$out"/*.pb.swift "$grpc_out"/*.swift
mkdir -p "$grpc_out"
protoc --plugin=protoc-gen-swift="$plugin" --descriptor_set_in="$schema" \
    --swift_out="$out" --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores $files
# The services import the messages from MobileNetTFProtos.
mapping=$(mktemp)
trap 'rm -f "$mapping"' EXIT
for f in $files; do
    case "$f" in tensorflow_serving/apis/prediction_service.proto|tensorflow_serving/apis/model_service.proto) continue ;; esac
    printf 'mapping { module_name: "MobileNetTFProtos" proto_file_path: "%s" }\n' "$f" >> "$mapping"
done
protoc --plugin=protoc-gen-grpc-swift-2="$grpc_plugin" --descriptor_set_in="$schema" \
    --grpc-swift-2_out="$grpc_out" --grpc-swift-2_opt=Visibility=Public,Server=true,Client=true,FileNaming=PathToUnderscores,ProtoPathModuleMappings="$mapping" \
    tensorflow_serving/apis/prediction_service.proto tensorflow_serving/apis/model_service.proto
ls "$out" "$grpc_out"
