//! Owners: budgets and API tokens.

use crate::model::Owner;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::OwnerWrite;
use crate::queue::Queue;

fn check_owner_id(id: &str) -> Result<()> {
    crate::queue::check_text("owner", id, 200)
}

fn check_budget(budget_cents: Option<i64>) -> Result<()> {
    match budget_cents {
        Some(b) if b < 0 => Err(Error::invalid("budget_cents", format!("{b} is negative"))),
        _ => Ok(()),
    }
}

impl Queue {
    /// Creates an owner, with an optional budget in cents. Admin handles only.
    ///
    /// # Errors
    ///
    /// [`Error::Duplicate`] when it exists; [`Error::InvalidInput`] for an empty id or a
    /// negative budget; [`Error::Forbidden`] on a scoped handle.
    pub fn create_owner(&self, id: &str, budget_cents: Option<i64>) -> Result<Owner> {
        self.require_admin("create owners")?;
        check_owner_id(id)?;
        check_budget(budget_cents)?;
        let now = self.now_ms();
        self.engine()
            .write_owner(id, OwnerWrite::Create(budget_cents), now)?;
        self.get_owner(id)
    }

    /// Sets (or with `None`, removes) an owner's budget, creating the owner if needed.
    /// Admin handles only.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a negative budget; [`Error::Forbidden`] on a scoped handle.
    pub fn set_budget(&self, id: &str, budget_cents: Option<i64>) -> Result<Owner> {
        self.require_admin("set budgets")?;
        check_owner_id(id)?;
        check_budget(budget_cents)?;
        let now = self.now_ms();
        self.engine()
            .write_owner(id, OwnerWrite::SetBudget(budget_cents), now)?;
        self.get_owner(id)
    }

    /// An owner with its budget and spend. A scoped handle may read only its own owner.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such owner (or it is not this handle's).
    pub fn get_owner(&self, id: &str) -> Result<Owner> {
        let not_found = || Error::NotFound {
            what: "owner",
            id: id.to_string(),
        };
        if self.owner().is_some_and(|me| me != id) {
            return Err(not_found());
        }
        self.engine().owner(id)?.ok_or_else(not_found)
    }

    /// Creates an API token for `owner` (creating the owner if needed) and returns it. Only
    /// a hash of its secret part is stored: the token cannot be shown again. Admin handles
    /// only.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty owner id; [`Error::Forbidden`] on a scoped handle.
    pub fn create_token(&self, owner: &str) -> Result<String> {
        self.require_admin("create tokens")?;
        check_owner_id(owner)?;
        let token_id = hex(&random_bytes::<6>());
        let secret = hex(&random_bytes::<32>());
        let now = self.now_ms();
        let hash = hex(&Sha256::digest(secret.as_bytes()));
        self.engine().insert_token(owner, &token_id, &hash, now)?;
        tracing::info!(owner, token_id, "jobq: token created");
        Ok(format!("jobq_{token_id}_{secret}"))
    }

    /// The owner a token belongs to, or `None` for a token that is malformed, unknown,
    /// revoked, or whose secret does not match. The secret's hash is compared in constant
    /// time.
    ///
    /// # Errors
    ///
    /// Only database errors.
    pub fn authenticate(&self, token: &str) -> Result<Option<String>> {
        let Some((token_id, secret)) = token
            .strip_prefix("jobq_")
            .and_then(|rest| rest.split_once('_'))
        else {
            return Ok(None);
        };
        let Some(crate::model::TokenRow {
            owner,
            secret_hash: stored_hash,
        }) = self.engine().token(token_id)?
        else {
            return Ok(None);
        };
        let given_hash = hex(&Sha256::digest(secret.as_bytes()));
        Ok(constant_time_eq(given_hash.as_bytes(), stored_hash.as_bytes()).then_some(owner))
    }

    /// Revokes every token of `owner`; returns how many. Admin handles only.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] on a scoped handle.
    pub fn revoke_tokens(&self, owner: &str) -> Result<usize> {
        self.require_admin("revoke tokens")?;
        self.engine().revoke_tokens(owner)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn random_bytes<const N: usize>() -> [u8; N] {
    // UUID v4 comes from the OS's random source. Byte 6 carries the version and byte 8 the
    // variant bits; the other 14 bytes are random.
    let mut out = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let u = uuid::Uuid::new_v4();
        let b = u.as_bytes();
        for &byte in b[..6].iter().chain(&b[7..8]).chain(&b[9..]) {
            if filled == N {
                break;
            }
            out[filled] = byte;
            filled += 1;
        }
    }
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn random_bytes_differ() {
        assert_ne!(random_bytes::<32>(), random_bytes::<32>());
    }
}
