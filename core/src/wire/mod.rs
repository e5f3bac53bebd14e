//! wire protocol (in progress)
