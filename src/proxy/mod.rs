//! What happens to a request: the pipeline ([`service`]), its header rules
//! ([`headers`]), the master connection pool and TLS ([`upstream`]), protocol-switch
//! tunnels ([`upgrade`]), the streamed response body ([`body`]) and the error responses
//! ([`error`]).

pub mod body;
pub mod error;
pub mod headers;
pub mod service;
pub mod upgrade;
