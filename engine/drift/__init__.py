"""Data drift: reading data (`tables`, `arrow`), statistics (`stats`), comparing (`compute`), outputs (`report`)."""
