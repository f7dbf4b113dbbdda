//! kiln-testing
