//! Shared helpers for tact's end-to-end tests (the tests live in `tests/tests/`).
