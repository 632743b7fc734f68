//! Groups, owners and their tokens.

use crate::error::Result;
use crate::model::{GroupRow, Owner, OwnerWrite, Scope};

/// Groups, owners and their tokens.
pub(crate) trait TenantStore {
    fn insert_group(&self, group: &GroupRow) -> Result<()>;

    fn group(&self, scope: Scope<'_>, id: &str) -> Result<Option<GroupRow>>;

    /// The newest groups, at most `limit`.
    fn groups(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<GroupRow>>;

    /// Deletes a group with its jobs (refused while one runs); how many jobs went.
    fn delete_group(&self, scope: Scope<'_>, id: &str) -> Result<usize>;

    fn write_owner(&self, id: &str, write: OwnerWrite, now: i64) -> Result<()>;

    fn owner(&self, id: &str) -> Result<Option<Owner>>;

    fn insert_token(&self, owner: &str, token_id: &str, secret_hash: &str, now: i64) -> Result<()>;

    /// The owner and the secret's hash of a token.
    fn token(&self, token_id: &str) -> Result<Option<crate::model::TokenRow>>;

    fn revoke_tokens(&self, owner: &str) -> Result<usize>;
}
