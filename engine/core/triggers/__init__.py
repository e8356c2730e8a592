"""From events to runs: cron slots, GitHub events, drift signals (pure)."""
