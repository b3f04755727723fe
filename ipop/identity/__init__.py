"""Node identities, network CAs and node certificates (DESIGN.md §4): the package.

This module owns who a node is and who belongs to a network:

- a node's identity is an Ed25519 key; its overlay address is ``node_id_for(public key)``
  (SHA-256 of the raw 32-byte key, first 20 bytes), so nobody picks their ring position;
- a network has a CA (:class:`NetworkCA`, an Ed25519 key and a self-signed X.509 certificate);
  only ``ipop-config`` holds it. Nodes hold the public part, :class:`CaTrust`, and use it to
  check every certificate a peer presents (:meth:`CaTrust.verify`);
- a node certificate is ordinary X.509 (:mod:`ipop.identity.cert` draws it), checked by
  :class:`CaTrust` in a fixed order, each refusal a :class:`CertificateError` whose ``reason``
  is a drop counter name (:mod:`ipop.identity.trust`);
- the CA revokes certificates with signed CRLs that only a larger number replaces
  (:mod:`ipop.identity.crl`).

The parts, one concept each:

- :mod:`ipop.identity.keys`: Ed25519 keys, node ids, signature checks;
- :mod:`ipop.identity.names`: the name rules (network, hostname, node name);
- :mod:`ipop.identity.cert`: :class:`NodeCertificate`, its refusal reasons, the router
  extension, serial numbers;
- :mod:`ipop.identity.crl`: revocation lists as data, their refusal reasons and bounds;
- :mod:`ipop.identity.trust`: :class:`CaTrust`, verification and the CRL in force;
  :class:`CaKeyTrust`, the same checks for a stranger knowing only the CA's public key;
- :mod:`ipop.identity.ca`: :class:`NetworkCA`, which signs node certificates and CRLs;
- :mod:`ipop.identity.credentials`: :class:`NodeIdentity`, a node's credentials: its key,
  certificate and the CA it trusts.

Every public name is re-exported here, so ``from ipop.identity import X`` works as before.

Pure: no clock, no I/O. Time comes in as ``now`` (UNIX seconds). Key generation and certificate
serial numbers use the cryptography library's own randomness, which the project rules allow.
"""

from __future__ import annotations

from ipop.identity.ca import NetworkCA
from ipop.identity.cert import (
    CERT_REASONS,
    MAX_ROUTER_HOSTS,
    ROUTER_HOSTS_OID,
    URI_SCHEME,
    CertificateError,
    NodeCertificate,
    cert_serial,
    pem_damage,
)
from ipop.identity.credentials import NodeIdentity
from ipop.identity.crl import (
    CRL_DEFAULT_DAYS,
    CRL_REASONS,
    MAX_CRL_BYTES,
    MAX_CRL_NUMBER,
    CrlError,
    VerifiedCrl,
)
from ipop.identity.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, node_id_for, verify_signature
from ipop.identity.names import validate_hostname, validate_network, validate_node_name
from ipop.identity.trust import (
    KEY_TRUST_CACHE_SIZE,
    VERIFY_CACHE_SIZE,
    CaKeyTrust,
    CaTrust,
    KeyCrl,
)

__all__ = [
    "CERT_REASONS",
    "CRL_DEFAULT_DAYS",
    "CRL_REASONS",
    "KEY_TRUST_CACHE_SIZE",
    "MAX_CRL_BYTES",
    "MAX_CRL_NUMBER",
    "MAX_ROUTER_HOSTS",
    "PUBLIC_KEY_BYTES",
    "ROUTER_HOSTS_OID",
    "SIGNATURE_BYTES",
    "URI_SCHEME",
    "VERIFY_CACHE_SIZE",
    "CaKeyTrust",
    "CaTrust",
    "CertificateError",
    "CrlError",
    "KeyCrl",
    "NetworkCA",
    "NodeCertificate",
    "NodeIdentity",
    "VerifiedCrl",
    "cert_serial",
    "node_id_for",
    "pem_damage",
    "validate_hostname",
    "validate_network",
    "validate_node_name",
    "verify_signature",
]
