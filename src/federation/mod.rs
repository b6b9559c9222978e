//! Federation: today the server's signing key; transactions, joins and backfill
//! come with the federation work.

pub mod keys;
