"""Use cases: run, retry, approve, trigger, tick, drift follow-up, webhooks."""
