"""Byte layouts and codecs (pure): outer datagram header, messages, STUN."""
