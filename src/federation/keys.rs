//! The server's ed25519 signing key: generated on first start, kept in the data
//! folder, used to sign every event (PDU) and served at `/_matrix/key/v2/server`.

use std::{path::Path, time::Duration};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedServerSigningKeyId, ServerName,
    api::federation::discovery::{ServerSigningKeys, VerifyKey},
    canonical_json::{CanonicalJsonObject, CanonicalJsonValue, to_canonical_value},
    serde::{Base64, Raw},
    signatures::{Ed25519KeyPair, sign_json},
};

use crate::{
    error::{Error, Result},
    util::{ALPHANUMERIC, random_string_from, write_private_file},
};

/// How long other servers may cache our key response.
const KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct SigningKey {
    server_name: OwnedServerName,
    pair: Ed25519KeyPair,
    key_id: OwnedServerSigningKeyId,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads `<dir>/signing.key` (`<version> <base64 PKCS#8>`), creating it if missing.
    pub fn load_or_create(dir: &Path, server_name: &ServerName) -> Result<Self> {
        let path = dir.join("signing.key");
        let (version, der) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (version, encoded) = text
                    .trim()
                    .split_once(' ')
                    .ok_or_else(|| Error::internal(format!("{} is malformed", path.display())))?;
                let der = Base64::<ruma::serde::base64::Standard>::parse(encoded).map_err(|e| {
                    Error::internal(format!("{} is malformed: {e}", path.display()))
                })?;
                (version.to_owned(), der.as_bytes().to_vec())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let version = format!("a_{}", random_string_from(ALPHANUMERIC, 4));
                let der = Ed25519KeyPair::generate().to_vec();
                let text = format!(
                    "{version} {}\n",
                    Base64::<ruma::serde::base64::Standard>::new(der.clone()).encode()
                );
                write_private_file(&path, text.as_bytes())?;
                (version, der)
            }
            Err(e) => {
                return Err(Error::internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let pair = Ed25519KeyPair::from_der(&der, version.clone())
            .map_err(|e| Error::internal(format!("{} holds no usable key: {e}", path.display())))?;
        let key_id = OwnedServerSigningKeyId::try_from(format!("ed25519:{version}"))
            .map_err(|e| Error::internal(format!("bad signing key version {version}: {e}")))?;
        Ok(Self {
            server_name: server_name.to_owned(),
            pair,
            key_id,
        })
    }

    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    pub fn key_id(&self) -> &OwnedServerSigningKeyId {
        &self.key_id
    }

    pub fn public_key(&self) -> Base64 {
        Base64::new(self.pair.public_key().to_vec())
    }

    /// Our key description, signed by ourselves, for `/_matrix/key/v2/server`.
    pub fn server_keys(&self) -> Result<Raw<ServerSigningKeys>> {
        let until = MilliSecondsSinceUnixEpoch::from_system_time(
            std::time::SystemTime::now() + KEY_VALIDITY,
        )
        .ok_or_else(|| Error::internal("clock out of range"))?;
        let mut keys = ServerSigningKeys::new(self.server_name.clone(), until);
        keys.verify_keys
            .insert(self.key_id.clone(), VerifyKey::new(self.public_key()));
        let CanonicalJsonValue::Object(mut object) =
            to_canonical_value(&keys).map_err(|e| Error::internal(format!("server keys: {e}")))?
        else {
            return Err(Error::internal(
                "server keys did not serialise to an object",
            ));
        };
        self.sign_json(&mut object)?;
        Ok(Raw::from_json(serde_json::value::to_raw_value(&object)?))
    }

    pub fn sign_json(&self, object: &mut CanonicalJsonObject) -> Result<()> {
        sign_json(self.server_name.as_str(), &self.pair, object)
            .map_err(|e| Error::internal(format!("cannot sign JSON: {e}")))
    }
}
