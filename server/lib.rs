//! The catbird-mls delivery service.
