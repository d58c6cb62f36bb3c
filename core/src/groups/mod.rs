//! MLS groups (conversations): the pure MLS engine over stored group state.

pub mod engine;
mod state;
