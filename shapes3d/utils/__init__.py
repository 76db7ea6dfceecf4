"""Small helpers every layer may use: progress bars, atomic writes, hashing, data root."""
