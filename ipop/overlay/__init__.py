"""The structured overlay: ring, connection table, near/far/shortcut policies, routing, relay."""
