//! Password and token hashing: Argon2id (PHC strings) for passwords, SHA-256 for the random
//! bearer tokens loopml issues (256 bits of entropy need no slow hash), MLflow's password policy.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::Digest;

use crate::error::{Error, Result};

/// Shortest password accepted (MLflow 3.17: 12 characters).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Passwords refused whatever their length: shipped defaults and the obvious ones.
const KNOWN_WEAK: &[&str] = &[
    "password1234",
    "password12345",
    "passwordpassword",
    "123456789012",
    "changemechangeme",
    "adminadminadmin",
    "qwertyuiopas",
];

/// Checks MLflow's policy (at least 12 characters) plus a list of known defaults.
pub fn check_policy(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::InvalidParameter(format!(
            "Password must be at least {MIN_PASSWORD_CHARS} characters."
        )));
    }
    if KNOWN_WEAK.contains(&password.to_ascii_lowercase().as_str()) {
        return Err(Error::InvalidParameter(
            "Password is a known default or too common; choose another.".into(),
        ));
    }
    Ok(())
}

fn hasher() -> argon2::Argon2<'static> {
    // OWASP's Argon2id minimum: 19 MiB, 2 passes, 1 lane (~20 ms here).
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(19 * 1024, 2, 1, None).unwrap_or_default(),
    )
}

/// An Argon2id PHC string for `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the PHC string `hash` (constant time in the comparison).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| hasher().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// A hash computed for unknown users, so a login for a missing user costs what a real one does.
pub fn dummy_verify(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let h = DUMMY
        .get_or_init(|| hash_password("not a real password, never matches").unwrap_or_default());
    let _ = verify_password(password, h);
}

/// What every token loopml issues starts with (tells it from a gateway key on the wire).
pub const TOKEN_PREFIX: &str = "lml_";

/// A new bearer token: `lml_` and 43 characters of base64url (256 random bits).
pub fn new_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// The stored form of a token (hex SHA-256).
pub fn token_hash(token: &str) -> String {
    let d = sha2::Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_salt_and_verify() {
        let h = hash_password("correct horse battery").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert_ne!(
            h,
            hash_password("correct horse battery").unwrap_or_default()
        );
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn the_policy_refuses_short_and_default_passwords() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("password1234").is_err());
        assert!(check_policy("PASSWORD1234").is_err());
        assert!(check_policy("a long enough passphrase").is_ok());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("lml_") && a.len() == 47, "{a}");
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_eq!(token_hash(&a).len(), 64);
    }
}
