//! Every column family, declared in one place. Names are `<key>_<value>`.

use ruma::{OwnedDeviceId, OwnedUserId};

use super::{Raw, Table};
use crate::{
    auth::{RefreshRecord, RegistrationToken, SessionRecord},
    users::{AccountDataEntry, AccountRecord, DeviceRecord},
};

/// Server-wide values: schema version, counter ceiling.
pub const GLOBAL: Table<String, Raw> = Table::new("global");

/// Accounts: password hash, creation time, deactivation (localparts are never reused).
pub const USERID_ACCOUNT: Table<OwnedUserId, AccountRecord> = Table::new("userid_account");
/// Profile fields (displayname, avatar_url, custom keys), each a JSON value.
pub const USERIDFIELD_PROFILEVALUE: Table<(OwnedUserId, String), Raw> =
    Table::new("useridfield_profilevalue");
/// Devices of each user.
pub const USERIDDEVICEID_DEVICE: Table<(OwnedUserId, OwnedDeviceId), DeviceRecord> =
    Table::new("useriddeviceid_device");
/// Login sessions named by access tokens.
pub const SESSIONID_SESSION: Table<u64, SessionRecord> = Table::new("sessionid_session");
/// Refresh tokens by their SHA-256 hash.
pub const REFRESHHASH_REFRESH: Table<String, RefreshRecord> = Table::new("refreshhash_refresh");
/// Registration tokens.
pub const REGTOKEN_INFO: Table<String, RegistrationToken> = Table::new("regtoken_info");

/// Account data by (user, room or "" for global, type).
pub const USERIDROOMIDTYPE_ACCOUNTDATA: Table<(OwnedUserId, String, String), AccountDataEntry> =
    Table::new("useridroomidtype_accountdata");
/// Change feed of account data: (user, count) -> (room or "", type), for sync.
pub const USERIDCOUNT_ACCOUNTDATAKEY: Table<(OwnedUserId, u64), Raw> =
    Table::new("useridcount_accountdatakey");
/// Filters by (user, filter id), the client's JSON kept byte-for-byte.
pub const USERIDFILTERID_FILTER: Table<(OwnedUserId, u64), Raw> =
    Table::new("useridfilterid_filter");

pub const ALL_COLUMNS: &[&str] = &[
    GLOBAL.name,
    USERID_ACCOUNT.name,
    USERIDFIELD_PROFILEVALUE.name,
    USERIDDEVICEID_DEVICE.name,
    SESSIONID_SESSION.name,
    REFRESHHASH_REFRESH.name,
    REGTOKEN_INFO.name,
    USERIDROOMIDTYPE_ACCOUNTDATA.name,
    USERIDCOUNT_ACCOUNTDATAKEY.name,
    USERIDFILTERID_FILTER.name,
];
