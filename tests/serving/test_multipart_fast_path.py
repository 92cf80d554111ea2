"""The one-file-part fast path of /v1/predict answers exactly what the general parser does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from classifier.serving.routes import predict as predict_route
from classifier.serving.routes.predict import single_file_part

from .conftest import png_bytes

BOUNDARY = "bnd7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(disposition: bytes, data: bytes, extra: bytes = b"Content-Type: image/png\r\n") -> bytes:
    return (
        f"--{BOUNDARY}\r\n".encode()
        + b"Content-Disposition: "
        + disposition
        + b"\r\n"
        + extra
        + b"\r\n"
        + data
        + b"\r\n"
    )


def end(epilogue: bytes = b"\r\n") -> bytes:
    return f"--{BOUNDARY}--".encode() + epilogue


def general(body: bytes) -> list[tuple[str, bytes]]:
    """What Starlette's parser makes of `body`: (filename or index, bytes) per file part."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    async def parse() -> list[tuple[str, bytes]]:
        form = await MultiPartParser(Headers({"content-type": CONTENT_TYPE}), stream()).parse()
        try:
            files = [v for _k, v in form.multi_items() if isinstance(v, UploadFile)]
            return [(f.filename or str(i), await f.read()) for i, f in enumerate(files)]
        finally:
            await form.close()

    return asyncio.run(parse())


DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4 + b"\r\n--almost-a-boundary\r\n"


@pytest.mark.parametrize(
    "body",
    [
        part(b'form-data; name="files"; filename="cell.png"', DATA) + end(),
        part(b'form-data; name="files"; filename="cell.png"', DATA) + end(b""),
        part(b'form-data; name="image"; filename="zelle \xc3\xa9.png"', DATA) + end(),
        part(b'form-data; name="files"; filename="latin \xe9.png"', DATA) + end(),
        part(b"form-data; name=files; filename=plain.png", DATA, b"") + end(),
        part(b'form-data; name="files"; filename=""', DATA) + end(),
        part(b'form-data; name="files"; filename="a\\"b.png"', DATA) + end(),
        part(b'form-data; name="files"; filename="x.png"', b"") + end(),
    ],
)
def test_fast_path_matches_the_general_parser(body: bytes) -> None:
    fast = single_file_part(body, CONTENT_TYPE)
    assert fast is not None
    assert [fast] == general(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        part(b'form-data; name="files"; filename="a.png"', DATA)
        + part(b'form-data; name="files"; filename="b.png"', DATA)
        + end(),
        part(b'form-data; name="note"', b"a field, not a file") + end(),
        b"preamble\r\n" + part(b'form-data; name="files"; filename="a.png"', DATA) + end(),
        part(b'form-data; name="files"; filename="a.png"', DATA),  # never closed
        part(b'form-data; filename="a.png"', DATA) + end(),  # no name: the parser's error
        part(b'form-data; name="files"; filename="a.png"', DATA, b"not a header\r\n") + end(),
        part(b'form-data; name="files"; filename="a.png"', DATA) + end(b"\r\ntrailing junk"),
    ],
)
def test_anything_else_goes_to_the_general_parser(body: bytes) -> None:
    assert single_file_part(body, CONTENT_TYPE) is None


def test_a_single_image_request_takes_the_fast_path(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the general parser broken, one image is still served; two images are not."""

    class Broken(predict_route._InMemoryParts):
        async def parse(self) -> object:  # type: ignore[override]
            raise AssertionError("the general parser ran")

    monkeypatch.setattr(predict_route, "_InMemoryParts", Broken)
    one = client.post("/v1/predict", files=[("files", ("a.png", png_bytes(), "image/png"))])
    assert one.status_code == 200, one.text
    assert one.json()["predictions"][0]["image"] == "a.png"
    two = [("files", (f"{n}.png", png_bytes(), "image/png")) for n in "ab"]
    assert client.post("/v1/predict", files=two).status_code == 500  # the broken parser ran
