//! The one place records become bytes and back.
//!
//! Every value is `[version byte][bincode]`, the version being the record type's own
//! ([`Record::VERSION`]). When a type's layout changes its version goes up and
//! [`Record::upgrade`] reads the older layouts (kept in [`super::legacy`]), so data written by an
//! earlier release is read, not misread; a version nobody knows is a typed error. Bincode 1 is
//! used without `skip_serializing_if`: stored structs must serialize every field.

use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;

/// A type stored in a column family.
pub trait Record: Serialize + DeserializeOwned {
    /// The layout written now.
    const VERSION: u8;
    /// Reads a value written with an older layout.
    fn upgrade(version: u8, _bytes: &[u8]) -> Result<Self, StoreError> {
        Err(StoreError::Codec(format!(
            "unknown record version {version}"
        )))
    }
}

pub fn encode<T: Record>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(128);
    out.push(T::VERSION);
    bincode::serialize_into(&mut out, value).map_err(|e| StoreError::Codec(e.to_string()))?;
    Ok(out)
}

pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&v, rest)) if v == T::VERSION => raw(rest),
        Some((&v, rest)) => T::upgrade(v, rest),
        None => Err(StoreError::Codec("empty record".into())),
    }
}

/// A record read in place: its strings borrow from `bytes` instead of being copied (report scans
/// read hundreds of thousands of events and keep none). `V` must have `T`'s current layout with
/// `&str` for `String`; a record of another version is a typed error.
pub fn decode_view<'a, T: Record, V: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<V, StoreError> {
    match bytes.split_first() {
        Some((&v, rest)) if v == T::VERSION => {
            bincode::deserialize(rest).map_err(|e| StoreError::Codec(e.to_string()))
        }
        Some((&v, _)) => Err(StoreError::Codec(format!("unknown record version {v}"))),
        None => Err(StoreError::Codec("empty record".into())),
    }
}

/// The compact layout (bincode's variable-length integers) of records written many times for one
/// change: a reporting event's rollup merge operands (`super::rollups`), mostly small counts.
/// Same version byte and [`Record::upgrade`] rule as [`encode`].
pub fn encode_compact<T: Record>(value: &T) -> Result<Vec<u8>, StoreError> {
    use bincode::Options;
    let mut out = Vec::with_capacity(64);
    out.push(T::VERSION);
    bincode::DefaultOptions::new()
        .serialize_into(&mut out, value)
        .map_err(|e| StoreError::Codec(e.to_string()))?;
    Ok(out)
}

/// Reads what [`encode_compact`] wrote.
pub fn decode_compact<T: Record>(bytes: &[u8]) -> Result<T, StoreError> {
    use bincode::Options;
    match bytes.split_first() {
        Some((&v, rest)) if v == T::VERSION => bincode::DefaultOptions::new()
            .deserialize(rest)
            .map_err(|e| StoreError::Codec(e.to_string())),
        Some((&v, rest)) => T::upgrade(v, rest),
        None => Err(StoreError::Codec("empty record".into())),
    }
}

/// Plain bincode, for [`Record::upgrade`] implementations.
pub fn raw<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    bincode::deserialize(bytes).map_err(|e| StoreError::Codec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Conversation;

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let c = Conversation::new("1", "2", "support", 7);
        let bytes = encode(&c).expect("encode");
        assert_eq!(decode::<Conversation>(&bytes).expect("decode"), c);
        let mut bad = bytes.clone();
        bad[0] = 99;
        assert!(decode::<Conversation>(&bad).is_err());
        assert!(decode::<Conversation>(&[]).is_err());
    }
}
