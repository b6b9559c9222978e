//! Typed keys and values.
//!
//! A key is a tuple of parts joined by a 0xFF separator. Strings are UTF-8 (which
//! never contains 0xFF, so the separator is unambiguous) and integers are fixed-width
//! big-endian: byte order equals numeric order, and all keys that share their first
//! parts form one contiguous range, so a prefix scan is a range query.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

pub const SEP: u8 = 0xFF;

/// One component of a key.
pub trait KeyPart: Sized {
    fn write(&self, out: &mut Vec<u8>);
    /// Reads this part from the front of `input`. `last` says whether it is the
    /// final part (a final string runs to the end instead of to a separator).
    fn read(input: &mut &[u8], last: bool) -> Result<Self>;
}

/// A whole key: one part or a tuple of parts.
pub trait Key: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self>;
}

fn corrupt(what: &str) -> Error {
    Error::internal(format!("corrupt key in storage: {what}"))
}

impl KeyPart for String {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn read(input: &mut &[u8], last: bool) -> Result<Self> {
        let end = if last {
            input.len()
        } else {
            input.iter().position(|&b| b == SEP).unwrap_or(input.len())
        };
        let s =
            std::str::from_utf8(&input[..end]).map_err(|_| corrupt("string part is not UTF-8"))?;
        *input = &input[end..];
        Ok(s.to_owned())
    }
}

impl KeyPart for u64 {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }

    fn read(input: &mut &[u8], _last: bool) -> Result<Self> {
        if input.len() < 8 {
            return Err(corrupt("integer part shorter than 8 bytes"));
        }
        let (head, rest) = input.split_at(8);
        *input = rest;
        Ok(u64::from_be_bytes(head.try_into().expect("8 bytes")))
    }
}

/// Ruma identifiers are stored as their string form.
macro_rules! id_key_part {
    ($($ty:ty),* $(,)?) => {$(
        impl KeyPart for $ty {
            fn write(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(self.as_str().as_bytes());
            }

            fn read(input: &mut &[u8], last: bool) -> Result<Self> {
                let s = String::read(input, last)?;
                <$ty>::try_from(s).map_err(|_| corrupt(concat!("invalid ", stringify!($ty))))
            }
        }
    )*};
}

id_key_part!(ruma::OwnedUserId, ruma::OwnedRoomId, ruma::OwnedEventId);

impl KeyPart for ruma::OwnedDeviceId {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_str().as_bytes());
    }

    fn read(input: &mut &[u8], last: bool) -> Result<Self> {
        Ok(String::read(input, last)?.into())
    }
}

fn expect_sep(input: &mut &[u8]) -> Result<()> {
    match input.split_first() {
        Some((&SEP, rest)) => {
            *input = rest;
            Ok(())
        }
        _ => Err(corrupt("missing separator")),
    }
}

macro_rules! key_impls {
    ($( ($($name:ident),+) ),* $(,)?) => {$(
        #[allow(non_snake_case)]
        impl<$($name: KeyPart),+> Key for ($($name,)+) {
            fn encode(&self) -> Vec<u8> {
                let ($($name,)+) = self;
                let mut out = Vec::with_capacity(32);
                let mut first = true;
                $(
                    if !std::mem::take(&mut first) { out.push(SEP); }
                    $name.write(&mut out);
                )+
                let _ = first;
                out
            }

            fn decode(bytes: &[u8]) -> Result<Self> {
                let mut input = bytes;
                let count = [$(stringify!($name)),+].len();
                let mut index = 0usize;
                $(
                    if index > 0 { expect_sep(&mut input)?; }
                    index += 1;
                    let $name = $name::read(&mut input, index == count)?;
                )+
                if !input.is_empty() {
                    return Err(corrupt("trailing bytes"));
                }
                Ok(($($name,)+))
            }
        }
    )*};
}

key_impls!((A), (A, B), (A, B, C), (A, B, C, D));

macro_rules! single_part_key {
    ($($ty:ty),* $(,)?) => {$(
        impl Key for $ty {
            fn encode(&self) -> Vec<u8> {
                let mut out = Vec::with_capacity(32);
                self.write(&mut out);
                out
            }

            fn decode(bytes: &[u8]) -> Result<Self> {
                let mut input = bytes;
                let value = <$ty>::read(&mut input, true)?;
                if !input.is_empty() {
                    return Err(corrupt("trailing bytes"));
                }
                Ok(value)
            }
        }
    )*};
}

single_part_key!(
    String,
    u64,
    ruma::OwnedUserId,
    ruma::OwnedRoomId,
    ruma::OwnedEventId
);

/// The prefix that selects every key whose leading parts equal `parts`.
pub fn prefix<K: Key>(parts: &K) -> Vec<u8> {
    let mut out = parts.encode();
    out.push(SEP);
    out
}

/// Values stored as JSON: records that may gain fields over time.
pub trait JsonValue: Serialize + DeserializeOwned {}

/// How a value is laid out in a column.
pub trait Value: Sized {
    fn to_bytes(&self) -> Vec<u8>;
    fn from_bytes(bytes: &[u8]) -> Result<Self>;
}

impl<T: JsonValue> Value for T {
    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("storage records always serialise")
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::internal(format!("corrupt record in storage: {e}")))
    }
}

impl Value for u64 {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 8] = bytes
            .try_into()
            .map_err(|_| corrupt("u64 value is not 8 bytes"))?;
        Ok(u64::from_be_bytes(arr))
    }
}

/// Raw bytes, stored as given (e.g. client JSON kept byte-for-byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw(pub Vec<u8>);

impl Value for Raw {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.clone()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Raw(bytes.to_vec()))
    }
}

impl Value for () {
    fn to_bytes(&self) -> Vec<u8> {
        Vec::new()
    }

    fn from_bytes(_: &[u8]) -> Result<Self> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_sort_numerically() {
        let mut keys: Vec<Vec<u8>> = [0u64, 1, 255, 256, 65_535, 1 << 40, u64::MAX]
            .iter()
            .rev()
            .map(|n| n.encode())
            .collect();
        keys.sort();
        let decoded: Vec<u64> = keys.iter().map(|k| u64::decode(k).unwrap()).collect();
        assert_eq!(decoded, vec![0, 1, 255, 256, 65_535, 1 << 40, u64::MAX]);
    }

    #[test]
    fn tuple_prefix_is_a_contiguous_range() {
        // "a" must not interleave with "ab", and within "a" the counts are ordered.
        let mut keys: Vec<Vec<u8>> = vec![
            ("ab".to_owned(), 1u64).encode(),
            ("a".to_owned(), 300u64).encode(),
            ("a".to_owned(), 2u64).encode(),
            ("b".to_owned(), 0u64).encode(),
            ("a".to_owned(), 0xFFu64).encode(),
        ];
        keys.sort();
        let p = prefix(&("a".to_owned(),));
        let in_range: Vec<u64> = keys
            .iter()
            .filter(|k| k.starts_with(&p))
            .map(|k| <(String, u64)>::decode(k).unwrap().1)
            .collect();
        assert_eq!(in_range, vec![2, 0xFF, 300]);
        let first_a = keys.iter().position(|k| k.starts_with(&p)).unwrap();
        assert!(keys[first_a..first_a + 3].iter().all(|k| k.starts_with(&p)));
    }

    #[test]
    fn round_trips_with_separator_bytes_inside_integers() {
        let key = (
            "@u:x".to_owned(),
            u64::MAX,
            "state key with spaces".to_owned(),
        );
        assert_eq!(<(String, u64, String)>::decode(&key.encode()).unwrap(), key);
        let key = (7u64, String::new());
        assert_eq!(<(u64, String)>::decode(&key.encode()).unwrap(), key);
    }

    #[test]
    fn corrupt_keys_are_errors_not_panics() {
        assert!(<(u64, String)>::decode(&[1, 2, 3]).is_err());
        assert!(<(String, String)>::decode(b"no-separator").is_err());
        assert!(<(u64,)>::decode(&[0; 9]).is_err());
        assert!(String::decode(&[0xC3]).is_err());
    }
}
