"""X.509 trust: path validation against imported anchors, revocation."""
