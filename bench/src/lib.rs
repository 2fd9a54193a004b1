//! Benchmarks that print figures and never assert them. Each compares our plugin against a
//! reference measured in the same run, so the figure that matters is the ratio.
//!
//! `ipam-bench`: ADD/DEL latency of azure-vnet-ipam against Debian's host-local with the same
//! pool size, sequential and concurrent, inside a network namespace the bench creates.

pub mod stats;
