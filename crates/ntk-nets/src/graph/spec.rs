//! The graph spec (JSON) — see docs/graph-spec.md.
