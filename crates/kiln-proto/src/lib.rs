//! kiln-proto
