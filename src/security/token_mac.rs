//! Keyed hashes of the links and codes mailed to users (`email_tokens`): HMAC-SHA256 under a
//! server secret, so a copy of the database alone cannot test the million possible 6-digit
//! codes against a stored hash. The secret is derived from the access-token signing key,
//! which every instance already shares; replacing that key voids mailed links and codes.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

pub struct TokenMac {
    mac: Hmac<Sha256>,
}

impl TokenMac {
    pub fn new(key: &Zeroizing<[u8; 32]>) -> Self {
        // HMAC accepts keys of any length: this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self { mac }
    }

    /// Hex HMAC of `text` in `domain` (what the value is: a link's token, a code), so a value
    /// of one kind never matches the hash of another.
    pub fn hex(&self, domain: &str, text: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(text.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// A 32-byte key for `label`, derived from `secret` (HMAC-SHA256 as a PRF).
pub fn derive_key(secret: &[u8], label: &str) -> Zeroizing<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(label.as_bytes());
    Zeroizing::new(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_domain_separated() {
        let one = TokenMac::new(&derive_key(b"server one", "email-tokens"));
        let two = TokenMac::new(&derive_key(b"server two", "email-tokens"));
        assert_eq!(one.hex("code", "123456"), one.hex("code", "123456"));
        assert_ne!(one.hex("code", "123456"), two.hex("code", "123456"));
        assert_ne!(one.hex("code", "123456"), one.hex("link", "123456"));
        assert_eq!(one.hex("code", "1").len(), 64);
    }
}
