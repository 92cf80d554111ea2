"""Runtime configuration of the service: one class, read from the environment (prefix CLASSIFIER_).

Names and defaults are the service contract in docs/architecture.md: the Kubernetes manifests
and the image set these variables, so renaming one is an interface change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from classifier.serving.cpu import available_cpus
from classifier.serving.memory import cgroup_memory_limit

MiB = 1024 * 1024
# The names export writes into the model folder (and the image copies to /opt/model).
MODEL_FILE = "model.tflite"
CARD_FILE = "model_card.json"
# Settings this service no longer reads; start-up refuses them rather than ignore them.
REPLACED = {
    "CLASSIFIER_MODEL_PATH": "CLASSIFIER_MODEL_DIR",
    "CLASSIFIER_MODEL_CARD_PATH": "CLASSIFIER_MODEL_DIR",
}


class Settings(BaseSettings):
    """Everything the service reads at start-up. Field `x` is env `CLASSIFIER_X`."""

    # `model_` field names clash with pydantic's protected namespace; the contract wants them.
    model_config = SettingsConfigDict(
        env_prefix="CLASSIFIER_", protected_namespaces=(), extra="ignore", frozen=True
    )

    # The folder holding model.tflite and model_card.json. Export writes the two together and
    # the card describes that one model, so they travel as one folder and are named once.
    model_dir: Path = Path("/opt/model")
    # 0.0.0.0 is the contract for the container (the pod IP); run locally with HOST=127.0.0.1.
    host: str = "0.0.0.0"  # noqa: S104
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # None = the CPUs this process may use (cgroup cpu.max quota, else its affinity mask).
    inference_threads: Annotated[int | None, Field(ge=1, le=256)] = None
    # Threads inside each LiteRT call. None = INFERENCE_THREADS: with cores free, XNNPACK
    # splits the convolutions across them and latency drops; on nodes crowded by other work
    # the extra thread has no core to run on and only adds hand-overs, so set 1 there
    # (measurements in docs/serving.md, "Where the time goes").
    interpreter_threads: Annotated[int | None, Field(ge=1, le=256)] = None
    # Micro-batching: concurrent requests are coalesced into one model call of at most this many
    # images; 1 turns it off. Coalescing saves per-call overhead when requests pile up, at the
    # cost of one more thread hop per request and an interpreter arena sized for the largest
    # batch (the A/B runs behind this default: docs/serving.md, "Micro-batching: the decision").
    max_batch_size: Annotated[int, Field(ge=1, le=256)] = 16
    # How long the first request of a batch waits for company. 0 = take only what is already
    # queued (adds no latency at low load; batches still form under load).
    max_batch_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 0.0
    # Whole request body, multipart or JSON. Checked from Content-Length before reading, and
    # counted while streaming for bodies without one.
    max_upload_bytes: Annotated[int, Field(ge=1024)] = 8 * MiB
    max_images_per_request: Annotated[int, Field(ge=1, le=1024)] = 16
    # Decompression-bomb guard and memory bound: the header's width x height is checked before
    # any pixel is decoded. An ELPV cell is 300 x 300 px; a 156 mm cell imaged on its own at
    # 13 px/mm is 2028 px a side, so 2048 x 2048 holds any single-cell EL image while keeping
    # one decode's memory (admission.DECODE_BYTES_PER_PIXEL per pixel) small. A whole module
    # image is not a model input: cut it into cells first.
    max_image_pixels: Annotated[int, Field(ge=1)] = 2048 * 2048
    # Bearer tokens for the predict routes, from a Secret. Two may be valid at once, so a
    # token can be rotated without downtime (docs/environments.md, "The API token").
    api_token: SecretStr | None = None
    api_token_secondary: SecretStr | None = None
    # Without a token the service refuses to start, unless this says an open predict
    # endpoint is intended (local runs: `make serve`, tests, benchmarks).
    allow_unauthenticated: bool = False
    # Backpressure. Predict requests (every POST) served at once; beyond it: 503 overloaded
    # with Retry-After. None = sized from the memory limit (admission.max_in_flight_for).
    max_in_flight: Annotated[int | None, Field(ge=1, le=4096)] = None
    # The container's memory limit in MiB (the Deployment passes limits.memory); None = the
    # cgroup's memory.max, or no limit known.
    memory_limit_mib: Annotated[int | None, Field(ge=64)] = None
    # Refuse new predict requests (503 overloaded) while the event loop runs this late: the
    # wait a request meets before it is even read. 0 = never refuse on lag.
    max_loop_lag_ms: Annotated[float, Field(ge=0, le=60000)] = 250.0
    # Deadline of one predict request, from admission to the response (body upload included):
    # past it the client gets 503 deadline_exceeded and the request's queued work is dropped.
    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Seconds uvicorn waits for in-flight requests after SIGTERM (keep below the pod's
    # terminationGracePeriodSeconds minus the preStop sleep).
    shutdown_timeout_s: Annotated[int, Field(ge=1)] = 20

    # Inputs unlike the training images (classifier/serving/ood.py says why each test holds):
    # "flag" answers with the reasons in the response, "refuse" answers 422 instead.
    ood_action: Literal["flag", "refuse"] = "flag"
    # Longer side / shorter side above which an image is not one cell. Training cells are all
    # square; the margin admits crops a little off square, not half-cells (2:1) or strips.
    ood_max_aspect_ratio: Annotated[float, Field(ge=1.0)] = 1.5
    # Pixel standard deviation (0-1 scale, after preprocessing) under which an image counts as
    # blank: a fraction of the least-varied training cell's, so no real cell comes near it.
    ood_min_pixel_std: Annotated[float, Field(ge=0.0, le=1.0)] = 0.005

    @model_validator(mode="after")
    def _token_or_explicitly_open(self) -> Settings:
        if self.api_token_secondary is not None and self.api_token is None:
            raise ValueError(
                "CLASSIFIER_API_TOKEN_SECONDARY is set without CLASSIFIER_API_TOKEN: the "
                "secondary token only exists next to a primary one (rotation)"
            )
        for token in (self.api_token, self.api_token_secondary):
            if token is not None and not token.get_secret_value().strip():
                raise ValueError("an API token is empty: set a random value or unset it")
        if self.api_token is None and not self.allow_unauthenticated:
            raise ValueError(
                "no CLASSIFIER_API_TOKEN: the service will not serve predictions without "
                "authentication unless CLASSIFIER_ALLOW_UNAUTHENTICATED=true says so"
            )
        return self

    @property
    def api_tokens(self) -> tuple[bytes, ...]:
        """The bearer tokens accepted now (empty = authentication off)."""
        return tuple(
            t.get_secret_value().encode()
            for t in (self.api_token, self.api_token_secondary)
            if t is not None
        )

    @property
    def memory_limit_bytes(self) -> int | None:
        """The explicit setting, else the cgroup's memory limit, else None."""
        if self.memory_limit_mib is not None:
            return self.memory_limit_mib * MiB
        return cgroup_memory_limit()

    @property
    def model_path(self) -> Path:
        return self.model_dir / MODEL_FILE

    @property
    def card_path(self) -> Path:
        return self.model_dir / CARD_FILE

    @property
    def threads(self) -> int:
        """The CPU budget: decode-pool size; the explicit setting or the CPU quota."""
        return self.inference_threads or available_cpus()

    @property
    def model_threads(self) -> int:
        """Threads inside each model call: the explicit setting or `threads`."""
        return self.interpreter_threads or self.threads
