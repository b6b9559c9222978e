//! Ephemeral data and device messaging: typing notifications, read receipts and
//! to-device messages (presence comes next).

pub mod delivered;
pub mod presence;
pub mod receipts;
pub mod to_device;
pub mod typing;
