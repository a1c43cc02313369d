#!/usr/bin/env bash
# Generates Sources/MobileNetSavedModel/Generated/*.pb.swift, the Swift of TensorFlow's SavedModel
# protocol buffers (saved_model.proto and what it imports, tensor_bundle.proto), with
# swift-protobuf. Run once by hand when the schema changes; CI compiles the committed output.
#
# The schema is TensorFlow's own, as the TensorFlow 2.21 wheel (scripts/requirements-fixtures.txt,
# in .venv) carries it: the descriptors compiled into its *_pb2.py modules, written as one
# FileDescriptorSet (Sources/MobileNetSavedModel/schema/tensorflow-2.21.protoset, committed) that
# protoc reads with --descriptor_set_in. Needs protoc (Debian protobuf-compiler 3.21) and
# protoc-gen-swift 1.39.0 built from the swift-protobuf package the project depends on:
#   git clone /opt/swift-packages/apple/swift-protobuf.git /tmp/swift-protobuf
#   (cd /tmp/swift-protobuf && git checkout 1.39.0 && swift build -c release --product protoc-gen-swift)
#   scripts/generate-savedmodel-protos.sh /tmp/swift-protobuf/.build/release/protoc-gen-swift
set -euo pipefail
cd "$(dirname "$0")/.."
plugin="${1:?usage: $0 PATH/TO/protoc-gen-swift}"
schema=Sources/MobileNetSavedModel/schema/tensorflow-2.21.protoset
out=Sources/MobileNetSavedModel/Generated
TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python - "$schema" <<'PY'
import sys
from google.protobuf import descriptor_pb2
from tensorflow.core.protobuf import saved_model_pb2, tensor_bundle_pb2
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
for module in (saved_model_pb2, tensor_bundle_pb2):
    add(module.DESCRIPTOR)
s = descriptor_pb2.FileDescriptorSet(file=files)
open(sys.argv[1], "wb").write(s.SerializeToString())
print("\n".join(f.name for f in files if not f.name.startswith("google/protobuf/")))
PY
files=$(TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -c "
from google.protobuf import descriptor_pb2
s = descriptor_pb2.FileDescriptorSet(); s.ParseFromString(open('$schema','rb').read())
print(' '.join(f.name for f in s.file if not f.name.startswith('google/protobuf/')))")
rm -f "$out"/*.pb.swift
# Well-known types (any.proto, wrappers.proto) are in the set for protoc but not generated:
# SwiftProtobuf has them.
protoc --plugin=protoc-gen-swift="$plugin" --descriptor_set_in="$schema" \
    --swift_out="$out" --swift_opt=Visibility=Internal --swift_opt=FileNaming=PathToUnderscores $files
ls "$out"
