"""The Open Inference Protocol (KServe v2 REST): its bodies, and the codec between them and the
service's request path (`inference.py`). No routing here: that is routes/v2_health.py and
routes/v2_models.py.

The model takes one input, sent as either of two tensors (docs/serving.md, "Open Inference
Protocol"):
- `image`, BYTES, shape [N]: encoded image files, decoded and preprocessed like `/v1/predict`;
- `input`, FP32, shape [N, H, W, C]: rows the client preprocessed itself (the card's
  `input.preprocessing`).
and answers two outputs: `probability`, FP32 [N, 1], P(defective); `out_of_distribution`, BYTES
[N], the comma-separated reasons an input is unlike the training images ("" when none).

Tensor data travels as JSON or with the protocol's binary tensor data extension (what Triton's
clients send by default): a JSON header of `Inference-Header-Content-Length` bytes followed by
each tensor's raw bytes, its length in `parameters.binary_data_size`. BYTES elements in binary
form are each a 4-byte little-endian length and the bytes; in JSON they are strings, so image
files go base64-encoded (KServe's convention for binary payloads in JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, ValidationError

from classifier.serving.errors import BadInferenceRequest, TooManyImages, validation_problems
from classifier.serving.ood import Flag

IMAGE_INPUT = "image"  # BYTES [N]: encoded image files
TENSOR_INPUT = "input"  # FP32 [N, H, W, C]: preprocessed rows
PROBABILITY_OUTPUT = "probability"  # FP32 [N, 1]
OOD_OUTPUT = "out_of_distribution"  # BYTES [N]
OUTPUTS = (PROBABILITY_OUTPUT, OOD_OUTPUT)
HEADER_LENGTH = "inference-header-content-length"
PLATFORM = "tflite"
EXTENSIONS = ["binary_tensor_data"]


# ---------------------------------------------------------------------------------------------
# Bodies (field names are the protocol's)


class ProtocolError(BaseModel):
    """Every 4xx/5xx body under /v2."""

    error: str = Field(description="what is wrong and how to fix it")


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size (the batch)")


class ModelMetadata(BaseModel):
    name: str = Field(description="the model card's name")
    versions: list[str] = Field(description="the model card's version")
    platform: str
    inputs: list[MetadataTensor] = Field(description="send exactly one of these per request")
    outputs: list[MetadataTensor]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(
        default=None, description="row-major, flat or nested; absent with binary data"
    )


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


def model_metadata(name: str, version: str, input_shape: tuple[int, int, int]) -> ModelMetadata:
    return ModelMetadata(
        name=name,
        versions=[version],
        platform=PLATFORM,
        inputs=[
            MetadataTensor(name=IMAGE_INPUT, datatype="BYTES", shape=[-1]),
            MetadataTensor(name=TENSOR_INPUT, datatype="FP32", shape=[-1, *input_shape]),
        ],
        outputs=[
            MetadataTensor(name=PROBABILITY_OUTPUT, datatype="FP32", shape=[-1, 1]),
            MetadataTensor(name=OOD_OUTPUT, datatype="BYTES", shape=[-1]),
        ],
    )


# ---------------------------------------------------------------------------------------------
# Requests


def _bad(message: str) -> BadInferenceRequest:
    return BadInferenceRequest(message)


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes | None]:
    """The request and its one input's binary data (None when the data is in the JSON)."""
    if not body:
        raise _bad('empty body: send {"inputs": [{"name": ..., "shape": ..., ...}]}')
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _bad(
                f"Inference-Header-Content-Length {header_length!r} is not a length within "
                f"the {len(body)}-byte body"
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        request = InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _bad(f"not an inference request ({validation_problems(exc)})") from exc
    if len(request.inputs) != 1:
        raise _bad(
            f"{len(request.inputs)} inputs: send exactly one, {IMAGE_INPUT!r} (BYTES, encoded "
            f"images) or {TENSOR_INPUT!r} (FP32, preprocessed rows)"
        )
    size = (request.inputs[0].parameters or {}).get("binary_data_size")
    if size is None:
        if binary:
            raise _bad(f"{len(binary)} bytes follow the JSON header but no binary_data_size")
        return request, None
    if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
        raise _bad(
            f"binary_data_size {size!r} does not match the {len(binary)} bytes after the "
            "JSON header"
        )
    return request, binary


def _batch(shape: Sequence[int], limit: int) -> int:
    n = shape[0] if shape else 0
    if n < 1:
        raise _bad(f"shape {list(shape)}: the first dimension (the batch) must be at least 1")
    if n > limit:
        raise TooManyImages(
            f"{n} inputs in one request, over the limit of {limit} "
            "(CLASSIFIER_MAX_IMAGES_PER_REQUEST); split them over several requests"
        )
    return n


def _unpack_bytes(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _bad("binary BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise _bad("binary BYTES data is shorter than an element's length says")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _flat(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in data:
        out.extend(_flat(item) if isinstance(item, list) else [item])
    return out


def image_files(request_input: RequestInput, binary: bytes | None, limit: int) -> list[bytes]:
    """The encoded images of a BYTES `image` input."""
    shape = request_input.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise _bad(f"input {IMAGE_INPUT!r} has shape {shape}: expected [N] (one file each)")
    n = _batch(shape, limit)
    if binary is not None:
        files = _unpack_bytes(binary)
    else:
        if request_input.data is None:
            raise _bad(f"input {IMAGE_INPUT!r} has no data and no binary_data_size")
        files = []
        for index, item in enumerate(_flat(request_input.data)):
            if not isinstance(item, str):
                raise _bad(f"input {IMAGE_INPUT!r} element {index} is not a base64 string")
            try:
                files.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise _bad(
                    f"input {IMAGE_INPUT!r} element {index} is not valid base64 ({exc}); in "
                    "JSON, image files go base64-encoded (or send them as binary data)"
                ) from exc
    if len(files) != n:
        raise _bad(f"input {IMAGE_INPUT!r} has shape {shape} but {len(files)} elements")
    return files


def tensor_rows(
    request_input: RequestInput,
    binary: bytes | None,
    row_shape: tuple[int, int, int],
    limit: int,
) -> npt.NDArray[np.float32]:
    """The (N, H, W, C) rows of an FP32 `input` tensor."""
    shape = request_input.shape
    if len(shape) != 4 or tuple(shape[1:]) != row_shape:
        dims = ", ".join(map(str, row_shape))
        raise _bad(
            f"input {TENSOR_INPUT!r} has shape {shape}: expected [N, {dims}] (the model card's "
            "input height, width, channels)"
        )
    n = _batch(shape, limit)
    expected = int(np.prod(shape))
    if binary is not None:
        if len(binary) != expected * 4:
            raise _bad(
                f"input {TENSOR_INPUT!r}: {len(binary)} bytes of binary data, expected "
                f"{expected * 4} ({expected} FP32 values of shape {shape})"
            )
        values = np.frombuffer(binary, dtype="<f4")
    else:
        if request_input.data is None:
            raise _bad(f"input {TENSOR_INPUT!r} has no data and no binary_data_size")
        flat = _flat(request_input.data)
        if len(flat) != expected:
            raise _bad(
                f"input {TENSOR_INPUT!r} has {len(flat)} values, its shape {shape} needs {expected}"
            )
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
            raise _bad(f"input {TENSOR_INPUT!r}: FP32 data must be numbers")
        values = np.asarray(flat, dtype=np.float64)
    with np.errstate(over="ignore"):
        rows = values.astype(np.float32).reshape(n, *row_shape)
    if not np.isfinite(rows).all():
        raise _bad(f"input {TENSOR_INPUT!r} holds NaN or infinite values (or beyond FP32)")
    return rows


def check_input(request_input: RequestInput) -> None:
    """The input is one of the model's two, with its datatype."""
    expected = {IMAGE_INPUT: "BYTES", TENSOR_INPUT: "FP32"}
    datatype = expected.get(request_input.name)
    if datatype is None:
        raise _bad(
            f"unknown input {request_input.name!r}: send {IMAGE_INPUT!r} (BYTES, encoded "
            f"images) or {TENSOR_INPUT!r} (FP32, preprocessed rows)"
        )
    if request_input.datatype != datatype:
        raise _bad(
            f"input {request_input.name!r} has datatype {request_input.datatype!r}: expected "
            f"{datatype}"
        )


# ---------------------------------------------------------------------------------------------
# Responses


def check_outputs(request: InferenceRequest) -> None:
    """Every requested output exists (checked before the model runs)."""
    for output in request.outputs or ():
        if output.name not in OUTPUTS:
            raise _bad(f"unknown output {output.name!r}: the model answers {', '.join(OUTPUTS)}")


def _pack_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def encode_response(
    request: InferenceRequest,
    *,
    model_name: str,
    model_version: str,
    probabilities: npt.NDArray[np.float32],
    flags: Sequence[Sequence[Flag]],
) -> tuple[bytes, int | None]:
    """The response body and, with binary outputs, the length of its JSON header."""
    wanted: list[RequestOutput] = request.outputs or [RequestOutput(name=n) for n in OUTPUTS]
    default_binary = bool((request.parameters or {}).get("binary_data_output", False))
    n = len(probabilities)
    reasons = [",".join(f.reason for f in input_flags) for input_flags in flags]
    outputs: list[ResponseOutput] = []
    raw: list[bytes] = []
    for output in wanted:
        binary = bool((output.parameters or {}).get("binary_data", default_binary))
        if output.name == PROBABILITY_OUTPUT:
            values = np.asarray(probabilities, dtype="<f4").reshape(n, 1)
            tensor = ResponseOutput(name=output.name, shape=[n, 1], datatype="FP32")
            data: list[Any] = values.reshape(-1).tolist()
            payload = values.tobytes()
        elif output.name == OOD_OUTPUT:
            tensor = ResponseOutput(name=output.name, shape=[n], datatype="BYTES")
            data = reasons
            payload = _pack_bytes([r.encode() for r in reasons])
        else:  # check_outputs ran first
            raise _bad(f"unknown output {output.name!r}: the model answers {', '.join(OUTPUTS)}")
        if binary:
            tensor.parameters = {"binary_data_size": len(payload)}
            raw.append(payload)
        else:
            tensor.data = data
        outputs.append(tensor)
    response = InferenceResponse(
        model_name=model_name, model_version=model_version, id=request.id, outputs=outputs
    )
    header = json.dumps(response.model_dump(exclude_none=True), separators=(",", ":")).encode()
    if not raw:
        return header, None
    return header + b"".join(raw), len(header)
