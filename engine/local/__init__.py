"""Local-disk building blocks shared by run/ and adapters/: safe tar archives, capped logs, the workspace snapshot."""
