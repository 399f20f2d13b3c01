//! What happens to a request: the request path as a tower stack ([`stack`], built from
//! the [`layer`]s), its header rules ([`headers`]), the guard's policy ([`guard`]), the
//! master connection pool and TLS ([`upstream`]), protocol-switch tunnels ([`upgrade`]),
//! the bodies ([`body`]), request-smuggling detection ([`framing`]) and the error
//! responses ([`error`]).

pub mod body;
pub mod error;
pub mod headers;
pub mod layer;
pub mod stack;
pub mod upgrade;
