"""GET /v1/model serves the exported model card as is."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient


def test_model_returns_the_exported_card(client: TestClient, tiny_model_dir: Path) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200
    on_disk = json.loads((tiny_model_dir / "model_card.json").read_text())
    served = response.json()
    assert served["version"] == on_disk["version"]
    assert served["input"] == on_disk["input"]
    assert served["metrics"] == on_disk["metrics"]
    assert served["labels"] == on_disk["labels"]
    assert served == on_disk
