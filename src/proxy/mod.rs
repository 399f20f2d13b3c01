//! What happens to an admitted request: the request path as a tower stack ([`stack`],
//! built from the [`layer`]s), its header rules ([`headers`]), protocol-switch tunnels
//! ([`upgrade`]), the bodies ([`body`]) and the error responses ([`error`]). Who may use
//! the proxy is [`crate::guard`]'s business, and the master's client is
//! [`crate::upstream`]'s.

pub(crate) mod body;
pub(crate) mod error;

/// A short cause for an upstream failure, with the fix where known (also used by the
/// binary's `doctor` and startup check).
pub use error::describe;
pub mod headers;
pub(crate) mod layer;
pub(crate) mod stack;
pub(crate) mod upgrade;
