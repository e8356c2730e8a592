"""Train a churn classifier on synthetic customer data; writes model.pkl and holdout.npz."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

config = json.loads(Path(os.environ["SLUICE_CONFIG"]).read_text())
outputs = Path(os.environ["SLUICE_OUTPUTS"])

# Stands in for the customer table a real pipeline would read.
X, y = make_classification(n_samples=2000, n_features=12, weights=[0.8], random_state=config["seed"])
X_train, X_hold, y_train, y_hold = train_test_split(X, y, test_size=0.25, random_state=config["seed"])
model = RandomForestClassifier(n_estimators=config["n_estimators"], random_state=config["seed"])
model.fit(X_train, y_train)
print(f"trained {config['n_estimators']} trees on {len(X_train)} customers", flush=True)

(outputs / "model.pkl").write_bytes(pickle.dumps(model))
np.savez(outputs / "holdout.npz", X=X_hold, y=y_hold)
(outputs / "metrics.json").write_text(json.dumps({"train_rows": len(X_train)}))
