//! Contact discovery: phone book upload, matching numbers (plain or peppered
//! hashes, as the Identity Service v2 `lookup` does) to the accounts that own
//! them, and telling uploaders when someone in their phone book arrives later.
//!
//! Which account owns which number is written by the code that verifies
//! numbers (SMS sign-in, msisdn 3PIDs) through [`Contacts::on_phone_added`]
//! and [`Contacts::on_phone_removed`]; this module only reads it.
//!
//! Uploaded phone books are keyed by the peppered hash of each number, so
//! plain and hashed uploads meet in one index, and a number added to an
//! account later finds every uploader with one prefix scan.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    storage::{
        Batch, Engine, GLOBAL, HASHUSERID_, PHONE_USERID, PHONEHASH_PHONE, Raw, USERIDHASH_CONTACT,
        prefix,
    },
    users::Users,
    util::{ALPHANUMERIC, now_ms, random_string_from},
};

/// Most numbers (or hashes) in one upload or lookup.
pub const MAX_CONTACTS_PER_REQUEST: usize = 5_000;
/// Global account data the server writes when a contact arrives.
pub const CONTACTS_EVENT: &str = "ai.iambig.contacts";
/// Global account data a user sets to `{"discoverable": false}` to opt out.
pub const DISCOVERY_SETTINGS: &str = "ai.iambig.discovery";
/// Arrivals kept in the `ai.iambig.contacts` event, newest last.
const MAX_ARRIVALS_KEPT: usize = 100;
const PEPPER_KEY: &str = "contacts_pepper";

/// A phone number in E.164 (`+` and 8 to 15 digits), from what people type:
/// spaces, dashes, dots and parentheses are dropped; `00` stands for `+`.
/// `None` for anything else (a national number without its country code too).
pub fn normalize_phone(raw: &str) -> Option<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}' | '\t'))
        .collect();
    let digits = compact
        .strip_prefix('+')
        .or_else(|| compact.strip_prefix("00"))?;
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

/// One entry of an upload: a number, or the peppered hash of one.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContactEntry {
    pub phone: Option<String>,
    pub hash: Option<String>,
    pub name: Option<String>,
}

/// What the uploader keeps of a contact.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredContact {
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// A contact who has an account.
#[derive(Debug, Clone, Serialize)]
pub struct ContactMatch {
    /// The number as normalised (entries uploaded as numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The hash as uploaded (entries uploaded as hashes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub user_id: OwnedUserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub displayname: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<Value>,
}

/// An entry left out of an upload, and why.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedContact {
    pub index: usize,
    pub reason: &'static str,
}

#[derive(Debug, Default, Serialize)]
pub struct UploadResult {
    pub matches: Vec<ContactMatch>,
    pub rejected: Vec<RejectedContact>,
}

#[derive(Debug, Clone)]
pub struct Contacts {
    db: Engine,
    users: Users,
    pepper: String,
    /// Serialises uploads with telling uploaders of arrivals (which runs
    /// once the number's batch has committed), so that an upload and the
    /// arrival of one of its numbers never miss each other: either the upload
    /// sees the number, or the arrival sees the phone book.
    writes: std::sync::Arc<parking_lot::Mutex<()>>,
}

impl Contacts {
    /// Loads the lookup pepper, creating it on first start.
    pub fn new(db: Engine, users: Users) -> Result<Self> {
        let pepper = match db.get(GLOBAL, &PEPPER_KEY.to_owned())? {
            Some(Raw(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            None => {
                let pepper = random_string_from(ALPHANUMERIC, 32);
                let mut batch = db.batch();
                batch.put(
                    GLOBAL,
                    &PEPPER_KEY.to_owned(),
                    &Raw(pepper.as_bytes().to_vec()),
                );
                batch.commit()?;
                pepper
            }
        };
        Ok(Self {
            db,
            users,
            pepper,
            writes: Default::default(),
        })
    }

    /// The pepper of `sha256` lookups (`hash_details`).
    pub fn pepper(&self) -> &str {
        &self.pepper
    }

    /// The Identity Service v2 `sha256` hash of a normalised number:
    /// unpadded URL-safe base64 of SHA-256("<digits> msisdn <pepper>").
    pub fn hash_of(&self, phone: &str) -> String {
        let digits = phone.trim_start_matches('+');
        let input = format!("{digits} msisdn {}", self.pepper);
        let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    /// The account a number belongs to (any spelling [`normalize_phone`] takes).
    pub fn user_for_phone(&self, phone: &str) -> Result<Option<OwnedUserId>> {
        let Some(phone) = normalize_phone(phone) else {
            return Ok(None);
        };
        self.owner(&phone)
    }

    fn owner(&self, phone: &str) -> Result<Option<OwnedUserId>> {
        Ok(match self.db.get(PHONE_USERID, &phone.to_owned())? {
            Some(Raw(bytes)) => {
                OwnedUserId::try_from(String::from_utf8_lossy(&bytes).into_owned()).ok()
            }
            None => None,
        })
    }

    /// Whether the user lets others find them by number (global account data
    /// `ai.iambig.discovery` `{"discoverable": false}` turns it off).
    pub fn is_discoverable(&self, user: &UserId) -> Result<bool> {
        let Some(raw) = self.users.account_data(user, None, DISCOVERY_SETTINGS)? else {
            return Ok(true);
        };
        let settings: Value = serde_json::from_str(raw.get()).unwrap_or_default();
        Ok(settings["discoverable"].as_bool() != Some(false))
    }

    /// The account behind a number if it may be shown to others.
    fn discoverable_owner(&self, phone: &str) -> Result<Option<OwnedUserId>> {
        match self.owner(phone)? {
            Some(user) if self.users.is_active(&user)? && self.is_discoverable(&user)? => {
                Ok(Some(user))
            }
            _ => Ok(None),
        }
    }

    fn phone_of_hash(&self, hash: &str) -> Result<Option<String>> {
        Ok(self
            .db
            .get(PHONEHASH_PHONE, &hash.to_owned())?
            .map(|Raw(bytes)| String::from_utf8_lossy(&bytes).into_owned()))
    }

    fn profile_match(
        &self,
        user: OwnedUserId,
        phone: Option<String>,
        hash: Option<String>,
    ) -> Result<ContactMatch> {
        Ok(ContactMatch {
            displayname: self.users.profile_field(&user, "displayname")?,
            avatar_url: self.users.profile_field(&user, "avatar_url")?,
            phone,
            hash,
            user_id: user,
        })
    }

    /// Stores (or, with `replace`, replaces) the user's phone book and returns
    /// the entries that belong to discoverable accounts. Entries that are not
    /// a valid number or hash are skipped and reported in `rejected`.
    pub fn upload(
        &self,
        user: &UserId,
        entries: Vec<ContactEntry>,
        replace: bool,
    ) -> Result<UploadResult> {
        if entries.len() > MAX_CONTACTS_PER_REQUEST {
            return Err(Error::too_large(format!(
                "At most {MAX_CONTACTS_PER_REQUEST} contacts per request; got {}",
                entries.len()
            )));
        }
        let _writes = self.writes.lock();
        let mut batch = self.db.batch();
        if replace {
            self.stage_delete_book(&mut batch, user)?;
        }
        let mut result = UploadResult::default();
        for (index, entry) in entries.into_iter().enumerate() {
            let (phone, hash) = match (&entry.phone, &entry.hash) {
                (Some(raw), None) => match normalize_phone(raw) {
                    Some(phone) => {
                        let hash = self.hash_of(&phone);
                        (Some(phone), hash)
                    }
                    None => {
                        result.rejected.push(RejectedContact {
                            index,
                            reason: "not an international (E.164) phone number",
                        });
                        continue;
                    }
                },
                (None, Some(hash)) if is_lookup_hash(hash) => (None, hash.clone()),
                (None, Some(_)) => {
                    result.rejected.push(RejectedContact {
                        index,
                        reason: "not a sha256 lookup hash (unpadded URL-safe base64)",
                    });
                    continue;
                }
                _ => {
                    result.rejected.push(RejectedContact {
                        index,
                        reason: "needs exactly one of phone and hash",
                    });
                    continue;
                }
            };
            let stored = StoredContact {
                phone: phone.clone(),
                name: entry.name.filter(|n| !n.is_empty()),
            };
            batch.put(
                USERIDHASH_CONTACT,
                &(user.to_owned(), hash.clone()),
                &Raw(serde_json::to_vec(&stored)?),
            );
            batch.put(HASHUSERID_, &(hash.clone(), user.to_owned()), &());
            let known = match &phone {
                Some(phone) => Some(phone.clone()),
                None => self.phone_of_hash(&hash)?,
            };
            if let Some(known) = known
                && let Some(owner) = self.discoverable_owner(&known)?
            {
                let hash = entry.hash.is_some().then_some(hash);
                result.matches.push(self.profile_match(owner, phone, hash)?);
            }
        }
        batch.commit()?;
        Ok(result)
    }

    /// Identity Service v2 `lookup`: `sha256` addresses are hashes; `none`
    /// addresses are "<address> <medium>" (only `msisdn` can match).
    pub fn lookup(
        &self,
        algorithm: &str,
        addresses: &[String],
    ) -> Result<Vec<(String, OwnedUserId)>> {
        if addresses.len() > MAX_CONTACTS_PER_REQUEST {
            return Err(Error::too_large(format!(
                "At most {MAX_CONTACTS_PER_REQUEST} addresses per lookup; got {}",
                addresses.len()
            )));
        }
        let mut mappings = Vec::new();
        for address in addresses {
            let phone = match algorithm {
                "sha256" => self.phone_of_hash(address)?,
                "none" => match address.rsplit_once(' ') {
                    Some((number, "msisdn")) => normalize_phone(&format!("+{number}")),
                    _ => None,
                },
                other => {
                    return Err(Error::invalid_param(format!(
                        "Unknown algorithm \"{other}\"; use sha256 or none"
                    )));
                }
            };
            if let Some(phone) = phone
                && let Some(owner) = self.discoverable_owner(&phone)?
            {
                mappings.push((address.clone(), owner));
            }
        }
        Ok(mappings)
    }

    /// Records that `phone` now belongs to `user`, in `batch`. Once the batch
    /// has committed, uploaders who have the number in their phone book get
    /// an `ai.iambig.contacts` event (in a batch of its own: a failure there
    /// is logged and does not undo the number). The caller has checked that
    /// no other account holds the number.
    pub fn on_phone_added(&self, batch: &mut Batch, phone: &str, user: &UserId) -> Result<()> {
        let phone = normalize_phone(phone)
            .ok_or_else(|| Error::invalid_param(format!("{phone} is not an E.164 number")))?;
        let hash = self.hash_of(&phone);
        batch.put(
            PHONE_USERID,
            &phone,
            &Raw(user.as_str().as_bytes().to_vec()),
        );
        batch.put(PHONEHASH_PHONE, &hash, &Raw(phone.as_bytes().to_vec()));
        let me = self.clone();
        let user = user.to_owned();
        batch.after_commit(move || {
            if let Err(e) = me.tell_uploaders(&hash, &user) {
                tracing::warn!(error = %e, %user, "cannot tell uploaders of a new contact");
            }
        });
        Ok(())
    }

    /// Writes the `ai.iambig.contacts` event of everyone who has the number
    /// with this hash in their phone book, now `user`'s.
    fn tell_uploaders(&self, hash: &str, user: &UserId) -> Result<()> {
        let _writes = self.writes.lock();
        if !self.users.is_active(user)? || !self.is_discoverable(user)? {
            return Ok(());
        }
        let arrived = self.profile_match(user.to_owned(), None, None)?;
        let mut batch = self.db.batch();
        for ((_, uploader), ()) in self
            .db
            .scan_prefix(HASHUSERID_, &prefix(&(hash.to_owned(),)))?
        {
            if uploader == user || !self.users.is_active(&uploader)? {
                continue;
            }
            let Some(Raw(stored)) = self
                .db
                .get(USERIDHASH_CONTACT, &(uploader.clone(), hash.to_owned()))?
            else {
                continue;
            };
            let stored: StoredContact = serde_json::from_slice(&stored)?;
            let mut entry = serde_json::to_value(&arrived)?;
            match &stored.phone {
                Some(phone) => entry["phone"] = json!(phone),
                None => entry["hash"] = json!(hash),
            }
            if let Some(name) = stored.name {
                entry["name"] = json!(name);
            }
            entry["ts"] = json!(now_ms());
            let content: Value = match self.users.account_data(&uploader, None, CONTACTS_EVENT)? {
                Some(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
                None => Value::Null,
            };
            let mut matches = content["matches"].as_array().cloned().unwrap_or_default();
            matches.retain(|m| m["user_id"] != json!(user));
            matches.push(entry);
            let excess = matches.len().saturating_sub(MAX_ARRIVALS_KEPT);
            matches.drain(..excess);
            self.users.put_account_data(
                &mut batch,
                &uploader,
                None,
                CONTACTS_EVENT,
                serde_json::value::to_raw_value(&json!({ "matches": matches }))?,
            )?;
        }
        batch.commit()
    }

    /// Records that `phone` no longer belongs to any account, in `batch`.
    pub fn on_phone_removed(&self, batch: &mut Batch, phone: &str) -> Result<()> {
        let Some(phone) = normalize_phone(phone) else {
            return Ok(());
        };
        batch.delete(PHONEHASH_PHONE, &self.hash_of(&phone));
        batch.delete(PHONE_USERID, &phone);
        Ok(())
    }

    fn stage_delete_book(&self, batch: &mut Batch, user: &UserId) -> Result<()> {
        stage_delete_user(&self.db, batch, user)
    }
}

/// Deletes a user's uploaded phone book (account deactivation).
pub fn stage_delete_user(db: &Engine, batch: &mut Batch, user: &UserId) -> Result<()> {
    let book = prefix(&(user.to_owned(),));
    for ((_, hash), _) in db.scan_prefix(USERIDHASH_CONTACT, &book)? {
        batch.delete(HASHUSERID_, &(hash, user.to_owned()));
    }
    batch.delete_prefix(USERIDHASH_CONTACT, &book)
}

/// A SHA-256 digest as unpadded URL-safe base64 (43 characters).
fn is_lookup_hash(hash: &str) -> bool {
    hash.len() == 43
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::normalize_phone;

    #[test]
    fn numbers_are_normalised_to_e164() {
        assert_eq!(
            normalize_phone("+1 (555) 123-4567").as_deref(),
            Some("+15551234567")
        );
        assert_eq!(
            normalize_phone("0044 20.7946.0958").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(normalize_phone("555 123 4567"), None);
        assert_eq!(normalize_phone("+1234567"), None);
        assert_eq!(normalize_phone("+1234567890123456"), None);
        assert_eq!(normalize_phone("+44 (0) 20"), None);
        assert_eq!(normalize_phone("+1555abc4567"), None);
        assert_eq!(normalize_phone(""), None);
    }
}
