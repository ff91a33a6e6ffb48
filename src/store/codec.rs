//! The one place records become bytes and back.
//!
//! Every value is `[version byte][bincode]`. The version byte lets a later release read records
//! written by this one (and refuse, with a typed error, records it does not understand) instead
//! of misreading them. Bincode 1 is used without `skip_serializing_if`: stored structs must
//! serialize every field.

use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;

/// Current record encoding version.
pub const VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    bincode::serialize_into(&mut out, value).map_err(|e| StoreError::Codec(e.to_string()))?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => {
            bincode::deserialize(rest).map_err(|e| StoreError::Codec(e.to_string()))
        }
        Some((v, _)) => Err(StoreError::Codec(format!("unknown record version {v}"))),
        None => Err(StoreError::Codec("empty record".into())),
    }
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
