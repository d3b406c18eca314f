//! Who is calling and what they may do: passwords, tokens, the caller extractor, policy.

pub mod attempts;
pub mod caller;
pub mod hashing;
pub mod password;
pub mod policy;
pub mod token;

pub use caller::{Bearer, Caller};
pub use policy::{authorize, roles_with_own_sites, Permission, Role, Scope};
