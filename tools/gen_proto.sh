#!/usr/bin/env bash
# Regenerate the virtio-forwarder protobuf module (and its typing stub) from
# smartnic_vif/host/forwarder/virtio_forwarder.proto with grpcio-tools' protoc.
# The generated files are committed, so only run this after changing the
# .proto; the gencode then needs a protobuf runtime of the same major version,
# at least as new as the protoc that made it (see the header of the _pb2.py).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DIR=smartnic_vif/host/forwarder

"$PYTHON" -m grpc_tools.protoc \
    -I "$DIR" \
    --python_out="$DIR" \
    --pyi_out="$DIR" \
    "$DIR/virtio_forwarder.proto"

# The stub gives mypy real types for the messages; it is generated text in
# protoc's style, so ruff is told to leave it alone (ruff already excludes
# *_pb2.py in pyproject.toml, but not the .pyi).
STUB="$DIR/virtio_forwarder_pb2.pyi"
{ echo "# ruff: noqa"; cat "$STUB"; } >"$STUB.tmp" && mv "$STUB.tmp" "$STUB"

# Fail here, not at first use, if the runtime refuses the new gencode.
"$PYTHON" -c "import smartnic_vif.host.forwarder.virtio_forwarder_pb2 as pb; print('generated', pb.DESCRIPTOR.name)"
