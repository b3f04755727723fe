"""One authenticated path to one peer: handshake, AEAD session, replay window, later punching."""
