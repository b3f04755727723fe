"""The DHT: kademlia over the overlay, signed versioned records, quorum create, allocation."""
