//! Tests of the device index.
