//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes).
//! Hashing is deliberately slow, so it runs on the blocking thread pool, and
//! deliberately memory-hungry, so at most `CONCURRENT_HASHES` run at once: a
//! burst of logins must not multiply 19 MiB by the number of requests.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::{
    error::{Error, Result},
    util::random_bytes,
};

const CONCURRENT_HASHES: usize = 2;

/// Runs argon2 with bounded concurrency.
#[derive(Debug)]
pub struct Passwords {
    permits: tokio::sync::Semaphore,
}

impl Default for Passwords {
    fn default() -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(CONCURRENT_HASHES),
        }
    }
}

impl Passwords {
    pub async fn hash(&self, password: String) -> Result<String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::internal("password hashing stopped"))?;
        tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
    }

    pub async fn verify(&self, password: String, hash: String) -> Result<bool> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::internal("password hashing stopped"))?;
        verify(password, hash).await
    }
}

pub async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
}

pub fn hash_blocking(password: &str) -> Result<String> {
    let salt = random_bytes::<16>();
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("argon2 hashing failed: {e}")))
}

pub async fn verify(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok())
    })
    .await?
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_differ_by_salt() {
        let a = super::hash("correct horse".into()).await.unwrap();
        let b = super::hash("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(
            super::verify("correct horse".into(), a.clone())
                .await
                .unwrap()
        );
        assert!(!super::verify("wrong".into(), a).await.unwrap());
        assert!(
            !super::verify("x".into(), "not a hash".into())
                .await
                .unwrap()
        );
    }
}
