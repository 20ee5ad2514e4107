//! The host side of each WIT capability interface, one file each; all of
//! them work on the one per-call [`HostState`](super::state::HostState).

pub mod credentials;
pub mod egress;
pub mod https;
pub mod kv;
pub mod log;
pub mod messaging;
pub mod net;
pub mod oauth;
pub mod tape;
pub mod trust;
