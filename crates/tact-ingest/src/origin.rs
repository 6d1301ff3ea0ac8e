//! Which messages on the topic tact wrote itself.
//!
//! Everyone who reports interactions produces to the same topic, so a message cannot
//! prove where it came from by what it says: anyone can write `source: "tact"`, an id
//! starting with `tact-`, or an `outreachAuthorized` event. tact's own producer signs
//! the value of each message it writes with HMAC-SHA256 under a key the instances of a
//! deployment share, in the `tact-origin` header (hex). A message whose signature checks
//! is tact's own; any other is from outside, and the reserved ids, source and kind are
//! dead-lettered (see [`tact_core::Admission::admit`]).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const ORIGIN_HEADER: &str = "tact-origin";

/// The shared secret (at least 16 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct OriginKey(Vec<u8>);

impl fmt::Debug for OriginKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OriginKey(..)")
    }
}

/// Why a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("origin key: {0}")]
pub struct OriginKeyError(String);

impl OriginKey {
    pub const MIN_BYTES: usize = 16;

    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, OriginKeyError> {
        let secret = secret.into();
        if secret.len() < Self::MIN_BYTES {
            return Err(OriginKeyError(format!(
                "at least {} bytes are needed (got {})",
                Self::MIN_BYTES,
                secret.len()
            )));
        }
        Ok(OriginKey(secret))
    }

    /// A new random key, as the text a key file holds (64 hex digits).
    pub fn generate_text() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    /// The key in a key file's text: surrounding whitespace is ignored.
    pub fn from_text(text: &str) -> Result<Self, OriginKeyError> {
        Self::new(text.trim().as_bytes().to_vec())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac accepts any key length")
    }

    /// The header value for a message value.
    pub fn sign(&self, value: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(value);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` (a header value) signs `value` (compared in constant time).
    pub fn verify(&self, value: &[u8], signature: &[u8]) -> bool {
        let Ok(tag) = hex::decode(signature) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(value);
        mac.verify_slice(&tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_check_only_with_the_key_and_the_value() {
        let key = OriginKey::from_text(&OriginKey::generate_text()).unwrap();
        let other = OriginKey::from_text(&OriginKey::generate_text()).unwrap();
        let sig = key.sign(b"value");
        assert!(key.verify(b"value", sig.as_bytes()));
        assert!(!key.verify(b"valuf", sig.as_bytes()));
        assert!(!other.verify(b"value", sig.as_bytes()));
        assert!(!key.verify(b"value", b"not hex"));
        assert!(!key.verify(b"value", b""));
        assert!(!key.verify(b"value", &sig.as_bytes()[..10]));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(OriginKey::from_text("  short \n").is_err());
        assert!(OriginKey::new(vec![7; 16]).is_ok());
        assert_eq!(
            format!("{:?}", OriginKey::new(vec![7; 16]).unwrap()),
            "OriginKey(..)"
        );
    }
}
