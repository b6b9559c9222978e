//! Ed25519 signatures on JSON objects as the spec defines them: over the
//! canonical JSON of the object without `signatures` and `unsigned`.

use base64::Engine as _;
use ruma::{SigningKeyAlgorithm, UserId};
use serde_json::{Map, Value};

/// The canonical JSON that the signatures of `object` cover.
pub fn signed_content(object: &Map<String, Value>) -> Result<String, String> {
    let canonical = ruma::canonical_json::try_from_json_map(object.clone())
        .map_err(|e| format!("not canonical JSON: {e}"))?;
    ruma::signatures::to_canonical_json_string_for_signing(&canonical)
        .map_err(|e| format!("cannot canonicalise: {e}"))
}

/// Unpadded (or padded) standard base64, as keys and signatures come.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    engine.decode(text.trim_end_matches('=')).ok().or_else(|| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
    })
}

/// The signature `signer` made with `key_id` (`ed25519:...`) on `object`.
pub fn signature<'a>(
    object: &'a Map<String, Value>,
    signer: &UserId,
    key_id: &str,
) -> Option<&'a str> {
    object
        .get("signatures")?
        .get(signer.as_str())?
        .get(key_id)?
        .as_str()
}

/// Checks that `signer`'s signature with `key_id` on `object` is valid for the
/// ed25519 public key `public_key` (base64).
pub fn verify(
    object: &Map<String, Value>,
    signer: &UserId,
    key_id: &str,
    public_key: &str,
) -> Result<(), String> {
    let signature = signature(object, signer, key_id)
        .ok_or_else(|| format!("no signature by {signer} with {key_id}"))?;
    let signature =
        decode_base64(signature).ok_or_else(|| format!("the signature {key_id} is not base64"))?;
    let public_key = decode_base64(public_key)
        .ok_or_else(|| format!("the public key {key_id} is not base64"))?;
    let content = signed_content(object)?;
    ruma::signatures::verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        content.as_bytes(),
    )
    .map_err(|e| format!("invalid signature {key_id}: {e}"))
}

/// Adds `extra`'s signatures (all signers) to `target`'s.
pub fn merge_signatures(target: &mut Map<String, Value>, extra: &Map<String, Value>) {
    let Some(Value::Object(extra)) = extra.get("signatures") else {
        return;
    };
    let signatures = target
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()));
    if !signatures.is_object() {
        *signatures = Value::Object(Map::new());
    }
    let Value::Object(signatures) = signatures else {
        return;
    };
    for (signer, sigs) in extra {
        let Value::Object(sigs) = sigs else { continue };
        let entry = signatures
            .entry(signer.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(entry) = entry {
            for (key_id, sig) in sigs {
                entry.insert(key_id.clone(), sig.clone());
            }
        }
    }
}
