//! Population generators shared by the benches.
