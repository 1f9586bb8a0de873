//! Webhook signatures, the last step before an alert leaves the daemon: the
//! Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256>` over `id.timestamp.body`).
//! Secrets are either `whsec_<base64>` (the key is the decoded bytes) or any
//! other string (the key is its UTF-8 bytes).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A webhook secret turned into HMAC key bytes; empty means unsigned.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

/// Why a configured secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A `whsec_` secret whose remainder is not base64.
    #[error("secret starts with whsec_ but the rest is not valid base64: {0}")]
    BadBase64(#[from] base64::DecodeError),
    /// A `whsec_` secret with nothing after the prefix.
    #[error("secret is \"whsec_\" with no key after it")]
    EmptyKey,
}

impl SigningKey {
    pub fn parse(secret: &str) -> Result<SigningKey, SecretError> {
        match secret.strip_prefix("whsec_") {
            Some(b64) => {
                let key = STANDARD.decode(b64.trim())?;
                if key.is_empty() {
                    return Err(SecretError::EmptyKey);
                }
                Ok(SigningKey(key))
            }
            None => Ok(SigningKey(secret.as_bytes().to_vec())),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `webhook-signature` header value for one request, or `None` when unsigned.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC-SHA256 takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        Some(format!(
            "v1,{}",
            STANDARD.encode(mac.finalize().into_bytes())
        ))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "SigningKey(none)"
        } else {
            "SigningKey(<redacted>)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whsec_secrets_are_base64_decoded() {
        // "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" is base64 for 24 bytes of key.
        let a = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sa = a.sign("msg_1", 1_700_000_000, "{}").unwrap();
        let sb = b.sign("msg_1", 1_700_000_000, "{}").unwrap();
        assert_ne!(sa, sb, "a whsec_ key is the decoded bytes, not the text");
        assert!(sa.starts_with("v1,"));
    }

    #[test]
    fn signature_covers_id_timestamp_and_body() {
        let k = SigningKey::parse("raw secret").unwrap();
        let base = k.sign("id", 10, "body").unwrap();
        assert_ne!(base, k.sign("id2", 10, "body").unwrap());
        assert_ne!(base, k.sign("id", 11, "body").unwrap());
        assert_ne!(base, k.sign("id", 10, "body!").unwrap());
        assert_eq!(base, k.sign("id", 10, "body").unwrap());
    }

    #[test]
    fn an_empty_secret_means_unsigned_and_bad_base64_is_an_error() {
        assert!(SigningKey::parse("").unwrap().sign("i", 1, "b").is_none());
        assert!(SigningKey::parse("whsec_!!!").is_err());
        assert!(SigningKey::parse("whsec_").is_err());
    }
}
