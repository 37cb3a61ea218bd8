"""Test harness for trustip's end-to-end suite: real Envoy, real HAProxy, a recording upstream,
and raw clients that can play any peer on loopback (stdlib only)."""
