//! The bottom of the stack: the snapshot's pooled keep-alive client sends the request to
//! the master. The answer carries the snapshot back up ([`Answered`]) for the layers
//! that need to know which master answered; a failure becomes a [`ProxyError`] (502, or
//! 400 when the client's own body broke). Each snapshot has its own client (TLS set-up,
//! pool), so this service holds nothing itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::body::Incoming;
use hyper_util::client::legacy::ResponseFuture;
use pin_project_lite::pin_project;
use tower::Service;

use super::{Answered, Master, Routed};
use crate::proxy::body::RequestBody;
use crate::proxy::error::ProxyError;

/// Sends requests to the master with the snapshot's client.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forward;

impl Service<Routed<RequestBody>> for Forward {
    type Response = Answered<Incoming>;
    type Error = ProxyError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        // The pool opens connections as needed; the server limits how many requests
        // are in flight.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed<RequestBody>) -> Self::Future {
        let Routed { request, master } = routed;
        ForwardFuture {
            inner: master.upstream().client().request(request),
            master: Some(master),
        }
    }
}

pin_project! {
    /// The future of [`Forward`].
    #[derive(Debug)]
    pub struct ForwardFuture {
        #[pin]
        inner: ResponseFuture,
        master: Option<Master>,
    }
}

impl Future for ForwardFuture {
    type Output = Result<Answered<Incoming>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(master) = this.master.take() else {
            panic!("ForwardFuture polled after it completed");
        };
        Poll::Ready(match result {
            Ok(response) => Ok(Answered { response, master }),
            Err(e) => Err(ProxyError::upstream(&master.upstream().url, &e)),
        })
    }
}
