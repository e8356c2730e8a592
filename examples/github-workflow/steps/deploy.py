"""Publish the approved model: here, say what would be uploaded (a real step pushes it to a
model registry with MODEL_REGISTRY_TOKEN)."""

import hashlib
import json
import os
from pathlib import Path

inputs = Path(os.environ["SLUICE_INPUTS"])
model = (inputs / "train" / "model.pkl").read_bytes()
metrics = json.loads((inputs / "evaluate" / "metrics.json").read_text())
digest = hashlib.sha256(model).hexdigest()[:12]
where = "the registry" if os.environ.get("MODEL_REGISTRY_TOKEN") else "nowhere (no token: dry run)"
print(f"deploying churn model sha256:{digest} (accuracy {metrics['accuracy']}) to {where}")
