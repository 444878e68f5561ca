"""The shapes twins' weights (``shapes-<twin>.pt``) and their sha256 (``sha256.json``), read by importlib.resources."""
