//! Every column family, declared in one place. Names are `<key>_<value>`.

use ruma::{OwnedDeviceId, OwnedUserId};

use super::{Raw, Table};
use crate::{
    auth::{RefreshRecord, RegistrationToken, SessionRecord},
    rooms::{EventMeta, MembershipRecord, RoomMeta, StateDiff},
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

// --- rooms ---

/// Room metadata: short id, version, the current state snapshot, forward extremities.
pub const ROOMID_META: Table<ruma::OwnedRoomId, RoomMeta> = Table::new("roomid_meta");
/// Short room id to room id.
pub const SHORTROOMID_ROOMID: Table<u64, Raw> = Table::new("shortroomid_roomid");
/// Event id to its short id, and back.
pub const EVENTID_SHORTEVENTID: Table<ruma::OwnedEventId, u64> = Table::new("eventid_shorteventid");
pub const SHORTEVENTID_EVENTID: Table<u64, Raw> = Table::new("shorteventid_eventid");
/// The signed PDU of each event as canonical JSON (redacted in place when redacted).
pub const SHORTEVENTID_PDU: Table<u64, Raw> = Table::new("shorteventid_pdu");
/// Per event: room, timeline position, the state snapshot before it, redaction.
pub const SHORTEVENTID_META: Table<u64, EventMeta> = Table::new("shorteventid_meta");
/// The timeline: (short room id, count) -> short event id.
pub const SHORTROOMIDCOUNT_SHORTEVENTID: Table<(u64, u64), u64> =
    Table::new("shortroomidcount_shorteventid");
/// (event type, state key) to its short id, and back.
pub const STATEKEY_SHORTSTATEKEY: Table<(String, String), u64> =
    Table::new("statekey_shortstatekey");
pub const SHORTSTATEKEY_STATEKEY: Table<u64, Raw> = Table::new("shortstatekey_statekey");
/// State snapshots, each a diff against a parent snapshot (or a full one).
pub const SHORTSTATEHASH_STATEDIFF: Table<u64, StateDiff> = Table::new("shortstatehash_statediff");
/// Membership of each user in each room they have been part of.
pub const USERIDROOMID_MEMBERSHIP: Table<(OwnedUserId, ruma::OwnedRoomId), MembershipRecord> =
    Table::new("useridroomid_membership");
/// Transaction ids of sends, per device: (user, device, txn id) -> event id.
pub const USERIDDEVICETXN_EVENTID: Table<(OwnedUserId, OwnedDeviceId, String), Raw> =
    Table::new("useriddevicetxn_eventid");

/// Room aliases: alias -> (room id, creator).
pub const ALIAS_ROOM: Table<String, crate::rooms::AliasRecord> = Table::new("alias_room");
/// Aliases of each room: (room id, alias) -> ().
pub const ROOMIDALIAS_: Table<(ruma::OwnedRoomId, String), ()> = Table::new("roomidalias_");
/// Rooms published in the public room directory.
pub const PUBLICROOMID_: Table<ruma::OwnedRoomId, ()> = Table::new("publicroomid_");

/// Relations: (parent event id, child count) -> [child short id, rel_type, child type].
pub const PARENTCOUNT_RELATION: Table<(String, u64), Raw> = Table::new("parentcount_relation");
/// Threads by latest activity: (short room id, latest count) -> root event id.
pub const SHORTROOMIDLATEST_THREADROOT: Table<(u64, u64), Raw> =
    Table::new("shortroomidlatest_threadroot");
/// The latest activity of each thread: (short room id, root event id) -> latest count.
pub const SHORTROOMIDROOT_LATEST: Table<(u64, String), u64> = Table::new("shortroomidroot_latest");
/// Full-text index of message bodies: (token, short room id, count) -> short event id.
pub const TOKENSHORTROOMIDCOUNT_SHORTEVENTID: Table<(String, u64, u64), u64> =
    Table::new("tokenshortroomidcount_shorteventid");
/// Events by origin_server_ts: (short room id, ts, count) -> short event id.
pub const SHORTROOMIDTSCOUNT_SHORTEVENTID: Table<(u64, u64, u64), u64> =
    Table::new("shortroomidtscount_shorteventid");
/// Content reports: id -> the report.
pub const REPORTID_REPORT: Table<u64, Raw> = Table::new("reportid_report");

// --- ephemeral and to-device ---

/// To-device messages waiting for a device: (user, device, count) -> the event JSON.
pub const USERIDDEVICECOUNT_TODEVICE: Table<(OwnedUserId, OwnedDeviceId, u64), Raw> =
    Table::new("useriddevicecount_todevice");
/// Idempotent to-device sends: (user, device, txn id) -> ().
pub const USERIDDEVICETXN_TODEVICE: Table<(OwnedUserId, OwnedDeviceId, String), ()> =
    Table::new("useriddevicetxn_todevice");

/// The count of each room's latest typing change (typing itself is in memory;
/// writing here wakes syncs).
pub const SHORTROOMID_TYPINGCOUNT: Table<u64, u64> = Table::new("shortroomid_typingcount");
/// Receipts: (short room id, receipt type, user, thread or "") -> {event_id, ts, count}.
pub const SHORTROOMIDTYPEUSERTHREAD_RECEIPT: Table<(u64, String, OwnedUserId, String), Raw> =
    Table::new("shortroomidtypeuserthread_receipt");
/// Change feed of receipts: (short room id, count) -> [type, user, thread].
pub const SHORTROOMIDCOUNT_RECEIPTKEY: Table<(u64, u64), Raw> =
    Table::new("shortroomidcount_receiptkey");

/// Delivered receipts: (short room id, receiving user, sender) -> {event_id,
/// event_count, ts, feed}: the newest event of that sender the user has
/// received. Only the sender sees them (`ai.iambig.delivered`).
pub const SHORTROOMIDUSERSENDER_DELIVERED: Table<(u64, OwnedUserId, OwnedUserId), Raw> =
    Table::new("shortroomidusersender_delivered");
/// Change feed of delivered receipts by the sender they are for:
/// (sender, short room id, count) -> receiving user.
pub const USERIDSHORTROOMIDCOUNT_DELIVERED: Table<(OwnedUserId, u64, u64), Raw> =
    Table::new("useridshortroomidcount_delivered");

/// Presence of each user (what was set and when they were last active or synced).
pub const USERID_PRESENCE: Table<OwnedUserId, Raw> = Table::new("userid_presence");
/// Change feed of presence: count -> user, for sync.
pub const COUNT_PRESENCEUSER: Table<u64, Raw> = Table::new("count_presenceuser");

/// Unread notifications: (user, short room id, count) -> {event_id, highlight, thread}.
/// Written with the event; deleted when the user's read receipt passes them.
pub const USERIDSHORTROOMIDCOUNT_NOTIFY: Table<(OwnedUserId, u64, u64), Raw> =
    Table::new("useridshortroomidcount_notify");
/// Every notification of a user, for `GET /notifications`: (user, count) ->
/// {short_room, event_id, actions, ts}. Kept for `push.notification_retention_ms`.
pub const USERIDCOUNT_PUSHLOG: Table<(OwnedUserId, u64), Raw> = Table::new("useridcount_pushlog");
/// One event's notification log entries, written in the event's batch: count
/// -> {room, event, ts, each notified user's actions}. Spread into
/// `USERIDCOUNT_PUSHLOG` right after, off the send's path, and deleted then.
pub const COUNT_PENDINGLOG: Table<u64, Raw> = Table::new("count_pendinglog");
/// Pushers: (user, app_id, pushkey) -> the pusher as set, plus its device and time.
pub const USERIDAPPIDPUSHKEY_PUSHER: Table<(OwnedUserId, String, String), Raw> =
    Table::new("useridappidpushkey_pusher");
/// Who has a pusher with an (app_id, pushkey): a pushkey belongs to one user
/// unless `append` was set.
pub const APPIDPUSHKEYUSERID_: Table<(String, String, OwnedUserId), ()> =
    Table::new("appidpushkeyuserid_");

/// OpenID tokens by their SHA-256: {user, expires_ms}.
pub const OPENIDHASH_TOKEN: Table<String, Raw> = Table::new("openidhash_token");

// --- media ---

/// Media by id: {sha256, size, content_type, filename, uploader, created_ms, pending_until_ms}.
pub const MEDIAID_MEDIA: Table<String, Raw> = Table::new("mediaid_media");
/// Media ids of each uploader (admin deletion, pending upload limits).
pub const USERIDMEDIAID_: Table<(OwnedUserId, String), ()> = Table::new("useridmediaid_");
/// Media ids of each content hash: a content file goes with its last id.
pub const SHA256MEDIAID_: Table<(String, String), ()> = Table::new("sha256mediaid_");

// --- outbox ---

/// The outbox: (destination, seq) -> {queued_at, payload}.
pub const DESTINATIONSEQ_OUTBOXITEM: Table<(String, u64), Raw> =
    Table::new("destinationseq_outboxitem");

// --- end-to-end encryption (see docs/e2ee.md) ---

/// Device identity keys as the client signed them (signatures by the same user merged in).
pub const USERIDDEVICEID_DEVICEKEYS: Table<(OwnedUserId, OwnedDeviceId), Raw> =
    Table::new("useriddeviceid_devicekeys");
/// One-time keys: (user, device, "algorithm:key id") -> the key JSON. Deleted when claimed.
pub const USERIDDEVICEIDKEYID_ONETIMEKEY: Table<(OwnedUserId, OwnedDeviceId, String), Raw> =
    Table::new("useriddeviceidkeyid_onetimekey");
/// Fallback keys: (user, device, algorithm) -> key id, key and whether it was handed out.
pub const USERIDDEVICEIDALGORITHM_FALLBACKKEY: Table<
    (OwnedUserId, OwnedDeviceId, String),
    crate::e2ee::FallbackKeyRecord,
> = Table::new("useriddeviceidalgorithm_fallbackkey");
/// Cross-signing keys: (user, "master" | "self_signing" | "user_signing") -> the key JSON.
pub const USERIDKIND_CROSSSIGNINGKEY: Table<(OwnedUserId, String), Raw> =
    Table::new("useridkind_crosssigningkey");
/// Signatures one user made on another user's key, visible to the signer only:
/// (target user, target key id, signer) -> {signing key id: signature}.
pub const USERIDKEYIDSIGNER_SIGNATURES: Table<(OwnedUserId, String, OwnedUserId), Raw> =
    Table::new("useridkeyidsigner_signatures");
/// The latest change of each user's devices or cross-signing keys, and the feed
/// of those changes by count (one entry per user).
pub const USERID_KEYCHANGECOUNT: Table<OwnedUserId, u64> = Table::new("userid_keychangecount");
pub const COUNT_KEYCHANGEUSER: Table<u64, Raw> = Table::new("count_keychangeuser");
/// Key backup versions: (user, version) -> algorithm, etag and key count.
pub const USERIDVERSION_BACKUP: Table<(OwnedUserId, u64), crate::e2ee::BackupRecord> =
    Table::new("useridversion_backup");
/// Backed-up room keys: (user, version, room, session id) -> the encrypted key data.
pub const USERIDVERSIONROOMSESSION_BACKUPKEY: Table<
    (OwnedUserId, u64, ruma::OwnedRoomId, String),
    Raw,
> = Table::new("useridversionroomsession_backupkey");
/// The dehydrated device of each user (MSC3814): its id and the client's opaque data.
pub const USERID_DEHYDRATEDDEVICE: Table<OwnedUserId, crate::e2ee::DehydratedRecord> =
    Table::new("userid_dehydrateddevice");

// --- phone numbers (3PIDs) ---

/// Phone numbers bound to accounts: digits without `+` -> owner and times.
pub const MSISDN_THREEPID: Table<String, crate::users::ThreepidRecord> =
    Table::new("msisdn_threepid");
/// The numbers of each account: (user, digits) -> ().
pub const USERIDMSISDN_: Table<(OwnedUserId, String), ()> = Table::new("useridmsisdn_");
// --- contacts (phone numbers, phone books) ---

/// Which account a phone number (normalised E.164, `+` and digits) belongs to.
/// Written by whoever verifies numbers (SMS sign-in, msisdn 3PIDs) through
/// `Contacts::on_phone_added`.
pub const PHONE_USERID: Table<String, Raw> = Table::new("phone_userid");
/// The peppered lookup hash of each account's number, for hashed discovery.
pub const PHONEHASH_PHONE: Table<String, Raw> = Table::new("phonehash_phone");
/// Uploaded phone books: (uploader, hash of the number) -> {phone?, name?}.
/// Private to the uploader; deleted with the account.
pub const USERIDHASH_CONTACT: Table<(OwnedUserId, String), Raw> = Table::new("useridhash_contact");
/// Who has a number in their phone book: (hash of the number, uploader) -> ().
pub const HASHUSERID_: Table<(String, OwnedUserId), ()> = Table::new("hashuserid_");

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
    ROOMID_META.name,
    SHORTROOMID_ROOMID.name,
    EVENTID_SHORTEVENTID.name,
    SHORTEVENTID_EVENTID.name,
    SHORTEVENTID_PDU.name,
    SHORTEVENTID_META.name,
    SHORTROOMIDCOUNT_SHORTEVENTID.name,
    STATEKEY_SHORTSTATEKEY.name,
    SHORTSTATEKEY_STATEKEY.name,
    SHORTSTATEHASH_STATEDIFF.name,
    USERIDROOMID_MEMBERSHIP.name,
    USERIDDEVICETXN_EVENTID.name,
    ALIAS_ROOM.name,
    ROOMIDALIAS_.name,
    PUBLICROOMID_.name,
    PARENTCOUNT_RELATION.name,
    SHORTROOMIDLATEST_THREADROOT.name,
    SHORTROOMIDROOT_LATEST.name,
    TOKENSHORTROOMIDCOUNT_SHORTEVENTID.name,
    SHORTROOMIDTSCOUNT_SHORTEVENTID.name,
    REPORTID_REPORT.name,
    USERIDDEVICECOUNT_TODEVICE.name,
    USERIDDEVICETXN_TODEVICE.name,
    SHORTROOMID_TYPINGCOUNT.name,
    SHORTROOMIDTYPEUSERTHREAD_RECEIPT.name,
    SHORTROOMIDCOUNT_RECEIPTKEY.name,
    SHORTROOMIDUSERSENDER_DELIVERED.name,
    USERIDSHORTROOMIDCOUNT_DELIVERED.name,
    USERID_PRESENCE.name,
    COUNT_PRESENCEUSER.name,
    USERIDSHORTROOMIDCOUNT_NOTIFY.name,
    USERIDCOUNT_PUSHLOG.name,
    COUNT_PENDINGLOG.name,
    USERIDAPPIDPUSHKEY_PUSHER.name,
    APPIDPUSHKEYUSERID_.name,
    DESTINATIONSEQ_OUTBOXITEM.name,
    OPENIDHASH_TOKEN.name,
    MEDIAID_MEDIA.name,
    USERIDMEDIAID_.name,
    SHA256MEDIAID_.name,
    USERIDDEVICEID_DEVICEKEYS.name,
    USERIDDEVICEIDKEYID_ONETIMEKEY.name,
    USERIDDEVICEIDALGORITHM_FALLBACKKEY.name,
    USERIDKIND_CROSSSIGNINGKEY.name,
    USERIDKEYIDSIGNER_SIGNATURES.name,
    USERID_KEYCHANGECOUNT.name,
    COUNT_KEYCHANGEUSER.name,
    USERIDVERSION_BACKUP.name,
    USERIDVERSIONROOMSESSION_BACKUPKEY.name,
    USERID_DEHYDRATEDDEVICE.name,
    MSISDN_THREEPID.name,
    USERIDMSISDN_.name,
    PHONE_USERID.name,
    PHONEHASH_PHONE.name,
    USERIDHASH_CONTACT.name,
    HASHUSERID_.name,
];
