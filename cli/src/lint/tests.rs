//! Fixture tests: every rule's tests/data/lint/<id>/bad.* triggers it; fixed.* does not.
