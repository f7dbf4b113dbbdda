//! kiln-master
