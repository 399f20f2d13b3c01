//! The outside world's formats: the DC/OS CLI's config files and the DC/OS token.
//! This module parses and discovers; it holds no policy about watching or serving.

pub mod config;
pub mod token;
