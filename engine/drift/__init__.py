"""Data drift: reading tables (`tables`), the statistics (`stats`), comparing (`compute`), outputs (`report`)."""
