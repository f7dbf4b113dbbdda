//! kiln-worker
