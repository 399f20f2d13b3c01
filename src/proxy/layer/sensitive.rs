//! Credentials marked sensitive the moment a request enters: every value of
//! `Authorization`, `Cookie` and `Proxy-Authorization`, so that any `Debug` print of
//! them (by the proxy, hyper or a dependency) shows `Sensitive`.
//!
//! Hand-written in place of tower-http's `SetSensitiveRequestHeaders`, which does the
//! same with one hashed lookup per field, present or not: here a [`Census`] of the
//! names finds which of the three are there (usually none), and only those are looked
//! up. The inner service's future is returned as is.

use std::task::{Context, Poll};

use http::Request;
use http::header::{self, Entry, HeaderMap, HeaderName};
use tower::{Layer, Service};

use crate::census::{Census, Field};

/// The request fields whose values are marked sensitive, with their census fields.
const SENSITIVE: [(Field, HeaderName); 3] = [
    (Field::Authorization, header::AUTHORIZATION),
    (Field::Cookie, header::COOKIE),
    (Field::ProxyAuthorization, header::PROXY_AUTHORIZATION),
];

/// The three [`SENSITIVE`] fields as a census, to test for any of them at once.
const ANY_SENSITIVE: Census =
    Census::from_fields(&[SENSITIVE[0].0, SENSITIVE[1].0, SENSITIVE[2].0]);

/// Mark every value of `Authorization`, `Cookie` and `Proxy-Authorization` in
/// `headers` sensitive.
pub fn mark_sensitive(headers: &mut HeaderMap) {
    let census = Census::of(headers);
    if !census.any_of(ANY_SENSITIVE) {
        return;
    }
    for (field, name) in &SENSITIVE {
        if !census.has(*field) {
            continue;
        }
        if let Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

/// Marks the credentials of every request sensitive before the layers below see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SensitiveLayer;

impl<S> Layer<S> for SensitiveLayer {
    type Service = SensitiveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SensitiveService { inner }
    }
}

/// The service of [`SensitiveLayer`].
#[derive(Debug, Clone)]
pub struct SensitiveService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for SensitiveService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        mark_sensitive(req.headers_mut());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn value<'a>(h: &'a HeaderMap, name: &str, i: usize) -> &'a HeaderValue {
        h.get_all(name).iter().nth(i).unwrap()
    }

    #[test]
    fn every_value_of_each_credential_field_is_marked_and_nothing_else() {
        for name in ["Authorization", "COOKIE", "proxy-AUTHORIZATION"] {
            let mut h = HeaderMap::new();
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            h.append(&name, HeaderValue::from_static("a"));
            h.append("x-other", HeaderValue::from_static("o"));
            h.append(&name, HeaderValue::from_static("b"));
            mark_sensitive(&mut h);
            assert!(value(&h, name.as_str(), 0).is_sensitive(), "{name}");
            assert!(value(&h, name.as_str(), 1).is_sensitive(), "{name} again");
            assert!(!value(&h, "x-other", 0).is_sensitive(), "{name}");
            assert_eq!(format!("{:?}", value(&h, name.as_str(), 1)), "Sensitive");
        }
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("s"));
        h.append("x-authorization", HeaderValue::from_static("x"));
        mark_sensitive(&mut h);
        assert!(h.values().all(|v| !v.is_sensitive()));
    }

    #[tokio::test]
    async fn the_layer_marks_before_the_inner_service_sees_the_request() {
        use tower::ServiceExt;
        let svc = SensitiveLayer.layer(tower::service_fn(|req: Request<()>| async move {
            let auth = &req.headers()[header::AUTHORIZATION];
            Ok::<_, std::convert::Infallible>(auth.is_sensitive())
        }));
        let req = Request::get("/")
            .header("authorization", "token=x")
            .body(())
            .unwrap();
        assert!(svc.oneshot(req).await.unwrap());
    }
}
