"""Plain data shared by every layer: validated identifiers and the host inventory."""
