//! The bottom of the stack: the snapshot's connection pool sends the request to the
//! master ([`crate::upstream::Pool`]). The answer carries the snapshot back up
//! ([`Answered`]) for the layers that need to know which master answered; a failure
//! becomes a [`ProxyError`] (502, or 400 when the client's own body broke). Each
//! snapshot has its own pool (TLS set-up, connections), so this service holds nothing
//! itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tower::Service;

use super::{Answered, Master, Replay, Routed};
use crate::proxy::body::RequestBody;
use crate::proxy::error::ProxyError;
use crate::upstream::UpstreamBody;
use crate::upstream::pool::Sending;

/// Sends requests to the master on the snapshot's pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forward;

impl Service<Routed<RequestBody>> for Forward {
    type Response = Answered<UpstreamBody>;
    type Error = ProxyError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        // The pool opens connections as needed; the server limits how many requests
        // are in flight.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed<RequestBody>) -> Self::Future {
        let token = routed.token_to_add().cloned();
        let Routed {
            request,
            master,
            hand_back,
            ..
        } = routed;
        let pool = master.upstream().clients.pool().clone();
        ForwardFuture {
            inner: pool.send_boxed(request, token, hand_back),
            master: Some(master),
        }
    }
}

/// The future of [`Forward`].
pub struct ForwardFuture {
    /// The pool's future: boxed, because hyper's send future cannot be named (one
    /// allocation per request, as hyper-util's client made too).
    inner: Sending,
    master: Option<Master>,
}

impl std::fmt::Debug for ForwardFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardFuture").finish_non_exhaustive()
    }
}

impl Future for ForwardFuture {
    type Output = Result<Answered<UpstreamBody>, ProxyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.inner.as_mut().poll(cx));
        let Some(master) = self.master.take() else {
            panic!("ForwardFuture polled after it completed");
        };
        Poll::Ready(match result {
            Ok(sent) => Ok(Answered {
                response: sent.response,
                master,
                sent: sent.head.map(|head| Box::new(Replay::of_head(*head))),
            }),
            Err(e) => Err(ProxyError::upstream(&master.upstream().url, &e)),
        })
    }
}
