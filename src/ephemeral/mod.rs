//! Ephemeral data and device messaging: to-device messages (more to come:
//! typing, receipts, presence).

pub mod to_device;
