"""Score the trained model on the holdout set; its metrics decide whether deploy runs."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

trained = Path(os.environ["SLUICE_INPUTS"]) / "train"
model = pickle.loads((trained / "model.pkl").read_bytes())
holdout = np.load(trained / "holdout.npz")
scores = model.predict_proba(holdout["X"])[:, 1]
metrics = {
    "accuracy": round(float(accuracy_score(holdout["y"], scores >= 0.5)), 4),
    "roc_auc": round(float(roc_auc_score(holdout["y"], scores)), 4),
}
print(json.dumps(metrics), flush=True)
(Path(os.environ["SLUICE_OUTPUTS"]) / "metrics.json").write_text(json.dumps(metrics))
