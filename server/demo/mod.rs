//! A real OpenMLS client of the service, over the generated client: what
//! the `demo` subcommand and the end-to-end tests drive.
//!
//! [`Device`] is one device of a user: its own signature key, its own
//! OpenMLS state, and a generated [`Client`](crate::generated::lexicons::blue::catbird::mls::Client)
//! acting as its user. Its operations follow the protocol as an app would:
//! commits are applied locally only once the service has accepted them,
//! the log is read in seq order, a lost device rejoins by external commit.
//! [`story`] runs the demo conversation between two users.

mod device;
mod error;
pub mod mls;
pub mod story;

pub use device::{Device, LocalMember, Received};
pub use error::DeviceError;
pub use mls::SUITE;
