//! Header rules for one hop: hop-by-hop removal, protocol-switch detection and the
//! `Authorization` policy. (The `Location` rewrite needs the master's origin and lives
//! in [`crate::upstream::origin`].)
//!
//! Everything here works on header maps already parsed by hyper and never logs a header
//! value. What allocates: hop-by-hop removal collects the field names a `Connection`
//! header lists beyond the fixed hop-by-hop ones (nothing for the usual `keep-alive`,
//! `close` or `upgrade`); a `Bearer` rewrite builds the new value; putting the proxy's
//! own `Authorization` on a request clones a prepared `HeaderValue` (a reference count,
//! not a copy of the token); and inserting into a map may grow it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::census::{Census, Field, HOP_BY_HOP_FIELDS};
use crate::dcos::token::TOKEN_PREFIX;
use crate::types::ClientAuth;

/// How many fields [`HOP_BY_HOP`] names.
const HOP_BY_HOP_COUNT: usize = HOP_BY_HOP_FIELDS.len();

/// Hop-by-hop fields that are never forwarded (RFC 9110 §7.6.1, plus the historical
/// `Keep-Alive` and `Proxy-Connection` it names, and RFC 9110 §11.7's proxy credentials,
/// which are meant for this proxy only). A `static`: one array, not one built at every
/// use.
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove the hop-by-hop fields from `headers`.
///
/// RFC 9110 §7.6.1: "a proxy or gateway MUST parse a received Connection header field
/// before a message is forwarded and, for each connection-option in this field, remove
/// any header or trailer field(s) from the message with the same name as the
/// connection-option, and then remove the Connection header field itself". The fixed
/// list of hop-by-hop fields goes too, whether or not `Connection` names it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let census = Census::of(headers);
    strip_hop_by_hop_counted(headers, census);
}

/// [`strip_hop_by_hop`] with a [`Census`] of `headers` already taken (no field inserted
/// since): only the hop-by-hop fields it found are looked up, usually none.
pub fn strip_hop_by_hop_counted(headers: &mut HeaderMap, census: Census) {
    if !census.any_of(Census::HOP_BY_HOP) {
        return;
    }
    if census.has(Field::Connection) {
        // The options `Connection` lists, beyond the fixed list (`keep-alive`, `close`
        // and `upgrade` are the usual ones, and need no name of their own).
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|option| !is_fixed_option(option))
            .filter_map(|option| HeaderName::from_bytes(option.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, field) in HOP_BY_HOP.iter().zip(HOP_BY_HOP_FIELDS) {
        if census.has(field) {
            headers.remove(name);
        }
    }
}

/// Whether a `Connection` option names no field to remove beyond the fixed list: empty,
/// `close`, or a hop-by-hop field's own name (`keep-alive`, `upgrade`, ...).
fn is_fixed_option(option: &str) -> bool {
    option.is_empty()
        || option.eq_ignore_ascii_case("close")
        || HOP_BY_HOP
            .iter()
            .any(|hop| hop.as_str().eq_ignore_ascii_case(option))
}

/// The `Upgrade` value of a request that asks to switch protocols (RFC 9110 §7.8): an
/// `Upgrade` field and the `upgrade` option in `Connection`. `None` for anything else.
pub fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    upgrade_request_counted(headers, Census::of(headers))
}

/// [`upgrade_request`] with a [`Census`] of `headers` already taken: nothing is looked
/// up unless it found both fields.
pub fn upgrade_request_counted(headers: &HeaderMap, census: Census) -> Option<HeaderValue> {
    if !(census.has(Field::Upgrade) && census.has(Field::Connection)) {
        return None;
    }
    let upgrade = headers.get(header::UPGRADE)?;
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|opt| opt.trim().eq_ignore_ascii_case("upgrade"));
    asked.then(|| upgrade.clone())
}

/// Put back the two fields a protocol switch needs after [`strip_hop_by_hop`]: the one
/// exception to hop-by-hop removal is while tunnelling an upgrade.
pub fn restore_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::UPGRADE, upgrade);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Apply the `Authorization` policy to a request's headers.
///
/// `own` is the proxy's ready-made `token=<jwt>` value, if logged in. With
/// [`ClientAuth::Keep`]:
/// - no header: inject `own`;
/// - `Bearer X` (scheme case-insensitive, RFC 9110 §11.1): rewrite to `token=X`, the one
///   form every DC/OS version's Admin Router accepts;
/// - `token=X`: unchanged;
/// - any other scheme: replaced by `own` (or removed when not logged in).
///
/// With [`ClientAuth::Replace`], `own` always wins; when not logged in the `Keep` rules
/// apply, so a client's own token still works.
///
/// Returns whose credentials the request now carries.
pub fn apply_authorization(
    headers: &mut HeaderMap,
    policy: ClientAuth,
    own: Option<&HeaderValue>,
) -> Credentials {
    let census = Census::of(headers);
    apply_authorization_counted(headers, census, policy, own)
}

/// [`apply_authorization`] with a [`Census`] of `headers` already taken (no
/// `Authorization` inserted since): a request without one is not searched for it.
pub fn apply_authorization_counted(
    headers: &mut HeaderMap,
    census: Census,
    policy: ClientAuth,
    own: Option<&HeaderValue>,
) -> Credentials {
    let credentials = authorize_on_send_counted(headers, census, policy, own);
    if let (Credentials::Proxy, Some(own)) = (credentials, own) {
        headers.insert(header::AUTHORIZATION, own.clone());
    }
    credentials
}

/// [`apply_authorization_counted`], except that the proxy's own token is not put in:
/// with [`Credentials::Proxy`] the request is to get `own` (when logged in) as it is
/// sent, and whatever `Authorization` the client sent has been removed. The request
/// path adds it only then ([`crate::proxy::layer::Routed::own_token`]): an exactly sized
/// header map (hyper's, for a client's request) would be reallocated by an insert, and
/// the lean path writes the field straight into the request head instead.
pub fn authorize_on_send_counted(
    headers: &mut HeaderMap,
    census: Census,
    policy: ClientAuth,
    own: Option<&HeaderValue>,
) -> Credentials {
    let sent = census.has(Field::Authorization);
    let replace = policy == ClientAuth::Replace && own.is_some();
    if sent && !replace {
        let rewritten = match headers
            .get(header::AUTHORIZATION)
            .map(|v| classify(v.as_bytes()))
        {
            Some(Presented::TokenForm) => return Credentials::Client,
            Some(Presented::Bearer(jwt)) => {
                let mut value = Vec::with_capacity(TOKEN_PREFIX.len() + jwt.len());
                value.extend_from_slice(TOKEN_PREFIX.as_bytes());
                value.extend_from_slice(jwt);
                // Bytes of a header value minus its prefix are always a valid value.
                HeaderValue::from_bytes(&value).ok().map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
            }
            Some(Presented::Other) | None => None,
        };
        if let Some(v) = rewritten {
            set_in_place(headers, header::AUTHORIZATION, v);
            return Credentials::Client;
        }
    }
    if sent {
        headers.remove(header::AUTHORIZATION);
    }
    Credentials::Proxy
}

/// Make `value` the one value of `name`, returning the first one there was. A single
/// value is replaced in place: an insert (even of a field already there) into a full
/// header map, as hyper sizes a request's, reallocates it. Several values are all
/// replaced by `value`; none, and it is added.
pub fn set_in_place(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: HeaderValue,
) -> Option<HeaderValue> {
    if headers.get_all(&name).iter().nth(1).is_none() {
        if let Some(slot) = headers.get_mut(&name) {
            return Some(std::mem::replace(slot, value));
        }
    }
    headers.insert(name, value)
}

/// Whose credentials a forwarded request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// The proxy's own token (or none, when not logged in): a 401 may mean the proxy's
    /// token is stale, so a re-read and retry can help.
    Proxy,
    /// The client's own token: a 401 is about the client's token and is passed on.
    Client,
}

/// What a client's `Authorization` header holds.
enum Presented<'a> {
    /// Already `token=…`.
    TokenForm,
    /// `Bearer <credentials>`, credentials trimmed and non-empty.
    Bearer(&'a [u8]),
    /// Anything else: another scheme, an empty `Bearer`, garbage.
    Other,
}

fn classify(value: &[u8]) -> Presented<'_> {
    if value.starts_with(TOKEN_PREFIX.as_bytes()) && value.len() > TOKEN_PREFIX.len() {
        return Presented::TokenForm;
    }
    const BEARER: &[u8] = b"bearer ";
    if value.len() > BEARER.len() && value[..BEARER.len()].eq_ignore_ascii_case(BEARER) {
        let cred = value[BEARER.len()..].trim_ascii();
        if !cred.is_empty() {
            return Presented::Bearer(cred);
        }
    }
    Presented::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn auth_after(policy: ClientAuth, own: Option<&str>, sent: Option<&str>) -> Option<String> {
        let mut h = HeaderMap::new();
        if let Some(s) = sent {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(s).unwrap());
        }
        let own = own.map(|o| HeaderValue::from_str(o).unwrap());
        apply_authorization(&mut h, policy, own.as_ref());
        h.get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn keep_policy() {
        use ClientAuth::Keep;
        let own = Some("token=OWN");
        assert_eq!(auth_after(Keep, own, None).as_deref(), Some("token=OWN"));
        assert_eq!(
            auth_after(Keep, own, Some("Bearer abc")).as_deref(),
            Some("token=abc")
        );
        assert_eq!(
            auth_after(Keep, own, Some("bEaReR   abc  ")).as_deref(),
            Some("token=abc")
        );
        assert_eq!(
            auth_after(Keep, own, Some("token=mine")).as_deref(),
            Some("token=mine")
        );
        assert_eq!(
            auth_after(Keep, own, Some("Basic dXNlcg==")).as_deref(),
            Some("token=OWN")
        );
        assert_eq!(
            auth_after(Keep, own, Some("Bearer ")).as_deref(),
            Some("token=OWN")
        );
        assert_eq!(
            auth_after(Keep, own, Some("token=")).as_deref(),
            Some("token=OWN")
        );
        assert_eq!(
            auth_after(Keep, own, Some("Bearerabc")).as_deref(),
            Some("token=OWN")
        );
        // Not logged in: nothing is injected, other schemes are dropped.
        assert_eq!(auth_after(Keep, None, None), None);
        assert_eq!(auth_after(Keep, None, Some("Basic x")), None);
        assert_eq!(
            auth_after(Keep, None, Some("Bearer b")).as_deref(),
            Some("token=b")
        );
    }

    #[test]
    fn replace_policy() {
        use ClientAuth::Replace;
        let own = Some("token=OWN");
        for sent in [None, Some("Bearer x"), Some("token=x"), Some("Basic x")] {
            assert_eq!(auth_after(Replace, own, sent).as_deref(), Some("token=OWN"));
        }
        assert_eq!(
            auth_after(Replace, None, Some("Bearer x")).as_deref(),
            Some("token=x")
        );
    }

    #[test]
    fn says_whose_credentials_went_to_the_master() {
        let own = HeaderValue::from_static("token=OWN");
        let whose = |policy, own: Option<&HeaderValue>, sent: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(s) = sent {
                h.insert(header::AUTHORIZATION, HeaderValue::from_str(s).unwrap());
            }
            apply_authorization(&mut h, policy, own)
        };
        use ClientAuth::{Keep, Replace};
        use Credentials::{Client, Proxy};
        assert_eq!(whose(Keep, Some(&own), None), Proxy);
        assert_eq!(whose(Keep, Some(&own), Some("Basic x")), Proxy);
        assert_eq!(whose(Keep, None, None), Proxy);
        assert_eq!(whose(Keep, Some(&own), Some("token=mine")), Client);
        assert_eq!(whose(Keep, Some(&own), Some("Bearer mine")), Client);
        assert_eq!(whose(Replace, Some(&own), Some("token=mine")), Proxy);
        assert_eq!(whose(Replace, None, Some("Bearer mine")), Client);
    }

    #[test]
    fn rewritten_bearer_is_sensitive() {
        let mut h = map(&[("authorization", "Bearer abc")]);
        apply_authorization(&mut h, ClientAuth::Keep, None);
        assert!(h.get(header::AUTHORIZATION).unwrap().is_sensitive());
    }

    #[test]
    fn hop_by_hop_and_connection_listed_fields_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x-other"),
            ("x-secret-hop", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-keep", "yes"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["set-cookie", "x-keep"]);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn each_hop_by_hop_field_goes_on_its_own() {
        for hop in &HOP_BY_HOP {
            let mut h = map(&[(hop.as_str(), "x"), ("x-keep", "yes")]);
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(hop), "{hop} was kept");
            assert_eq!(h.len(), 1, "{hop}");
        }
        // `close` and the fixed names need no removal of their own; a listed name does,
        // in any letter case, and an unlisted field stays.
        let mut h = map(&[
            ("connection", "Close, , KEEP-ALIVE,x-Listed"),
            ("x-listed", "1"),
            ("close", "not a hop-by-hop field unless listed"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["close", "x-keep"]);
    }

    #[test]
    fn upgrade_detection() {
        let h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_request(&h).unwrap(), "websocket");
        assert!(upgrade_request(&map(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_request(&map(&[("connection", "upgrade")])).is_none());
    }
}
