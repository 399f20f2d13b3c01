//! A census of a header map: which of the fields the proxy's own rules look at are
//! present, found in one pass over the names (usually a handful) instead of one hashed
//! lookup per field, most of which would find nothing.
//!
//! A [`Census`] only says *whether* a field is present; every rule that finds its field
//! present still reads the map as before (all of a repeated field's values, in order), so
//! a census changes no behaviour, only which lookups are skipped. A census taken before
//! fields are *removed* stays usable (a field it calls present may be gone, and the
//! lookup then finds nothing, as it would have anyway); after a field is *inserted*, the
//! census is out of date for that field. Names in a [`HeaderMap`] are lowercase whatever
//! the client sent, so the match is on lowercase names.

use http::HeaderMap;

/// The prefix of the `X-Forwarded-*` family (`-For`, `-Host`, `-Proto`, `-Port`,
/// `-Prefix`, …), lowercase as in a [`HeaderMap`].
pub const X_FORWARDED_PREFIX: &str = "x-forwarded-";
/// `X-Real-IP` (nginx's `real_ip` module), lowercase as in a [`HeaderMap`].
pub const X_REAL_IP: &str = "x-real-ip";

/// A field (or, for [`Field::Forwarding`], a family of fields) the proxy's rules look
/// at. The value is the field's bit in a [`Census`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    /// `Host`.
    Host,
    /// `Origin`.
    Origin,
    /// `Sec-Fetch-Site` (W3C Fetch Metadata).
    SecFetchSite,
    /// `Via`.
    Via,
    /// `Cookie`.
    Cookie,
    /// `Forwarded`, `X-Real-IP` or any `X-Forwarded-*`.
    Forwarding,
    /// `Expect`.
    Expect,
    /// `Authorization`.
    Authorization,
    /// `Content-Length`.
    ContentLength,
    /// `Content-Type`.
    ContentType,
    /// `Location`.
    Location,
    /// `Connection` (hop-by-hop).
    Connection,
    /// `Keep-Alive` (hop-by-hop).
    KeepAlive,
    /// `Proxy-Connection` (hop-by-hop).
    ProxyConnection,
    /// `Proxy-Authorization` (hop-by-hop).
    ProxyAuthorization,
    /// `Proxy-Authenticate` (hop-by-hop).
    ProxyAuthenticate,
    /// `TE` (hop-by-hop).
    Te,
    /// `Trailer` (hop-by-hop).
    Trailer,
    /// `Transfer-Encoding` (hop-by-hop).
    TransferEncoding,
    /// `Upgrade` (hop-by-hop).
    Upgrade,
}

impl Field {
    /// Every field, in bit order.
    pub const ALL: [Field; 20] = [
        Field::Host,
        Field::Origin,
        Field::SecFetchSite,
        Field::Via,
        Field::Cookie,
        Field::Forwarding,
        Field::Expect,
        Field::Authorization,
        Field::ContentLength,
        Field::ContentType,
        Field::Location,
        Field::Connection,
        Field::KeepAlive,
        Field::ProxyConnection,
        Field::ProxyAuthorization,
        Field::ProxyAuthenticate,
        Field::Te,
        Field::Trailer,
        Field::TransferEncoding,
        Field::Upgrade,
    ];

    /// The field a lowercase header name is, if any. Matched on the length first, so
    /// that most names are rejected after one comparison.
    pub fn of(name: &str) -> Option<Field> {
        let field = match name.len() {
            2 if name == "te" => Field::Te,
            3 if name == "via" => Field::Via,
            4 if name == "host" => Field::Host,
            6 => match name {
                "origin" => Field::Origin,
                "cookie" => Field::Cookie,
                "expect" => Field::Expect,
                _ => return None,
            },
            7 => match name {
                "trailer" => Field::Trailer,
                "upgrade" => Field::Upgrade,
                _ => return None,
            },
            8 if name == "location" => Field::Location,
            9 => match name {
                "forwarded" | X_REAL_IP => Field::Forwarding,
                _ => return None,
            },
            10 => match name {
                "connection" => Field::Connection,
                "keep-alive" => Field::KeepAlive,
                _ => return None,
            },
            12 if name == "content-type" => Field::ContentType,
            13 if name == "authorization" => Field::Authorization,
            14 if name == "content-length" => Field::ContentLength,
            14 if name == "sec-fetch-site" => Field::SecFetchSite,
            16 if name == "proxy-connection" => Field::ProxyConnection,
            17 if name == "transfer-encoding" => Field::TransferEncoding,
            18 if name == "proxy-authenticate" => Field::ProxyAuthenticate,
            19 if name == "proxy-authorization" => Field::ProxyAuthorization,
            _ if name.starts_with(X_FORWARDED_PREFIX) => Field::Forwarding,
            _ => return None,
        };
        Some(field)
    }

    /// This field's bit in a [`Census`].
    const fn bit(self) -> u32 {
        1 << self as u8
    }
}

/// The hop-by-hop fields, in the order `proxy::headers` names them.
pub const HOP_BY_HOP_FIELDS: [Field; 9] = [
    Field::Connection,
    Field::KeepAlive,
    Field::ProxyConnection,
    Field::ProxyAuthorization,
    Field::ProxyAuthenticate,
    Field::Te,
    Field::Trailer,
    Field::TransferEncoding,
    Field::Upgrade,
];

/// Which [`Field`]s a header map holds: a bit set, taken by [`Census::of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census(u32);

impl Census {
    /// The hop-by-hop fields (RFC 9110 §7.6.1, with `Keep-Alive`, `Proxy-Connection`
    /// and the proxy credentials of RFC 9110 §11.7).
    pub const HOP_BY_HOP: Census = Census::from_fields(&HOP_BY_HOP_FIELDS);

    /// The fields of `headers`, in one pass over its names.
    pub fn of(headers: &HeaderMap) -> Census {
        let mut bits = 0;
        for name in headers.keys() {
            if let Some(field) = Field::of(name.as_str()) {
                bits |= field.bit();
            }
        }
        Census(bits)
    }

    /// A census that holds exactly `fields`.
    pub const fn from_fields(fields: &[Field]) -> Census {
        let mut bits = 0;
        let mut i = 0;
        while i < fields.len() {
            bits |= fields[i].bit();
            i += 1;
        }
        Census(bits)
    }

    /// Whether `field` is present.
    pub fn has(self, field: Field) -> bool {
        self.0 & field.bit() != 0
    }

    /// Whether any field of `other` is present.
    pub fn any_of(self, other: Census) -> bool {
        self.0 & other.0 != 0
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    /// Each field's name as a client may write it, and one more of its family.
    fn spellings(field: Field) -> &'static [&'static str] {
        match field {
            Field::Host => &["Host", "HOST"],
            Field::Origin => &["Origin", "oRiGiN"],
            Field::SecFetchSite => &["Sec-Fetch-Site", "SEC-FETCH-SITE"],
            Field::Via => &["Via", "VIA"],
            Field::Cookie => &["Cookie", "COOKIE"],
            Field::Forwarding => &[
                "Forwarded",
                "X-Real-IP",
                "X-Forwarded-",
                "X-Forwarded-For",
                "x-forwarded-host",
                "X-FORWARDED-PROTO",
                "X-Forwarded-Port",
                "X-Forwarded-Prefix",
                "x-forwarded-a-rather-long-name-of-its-own",
            ],
            Field::Expect => &["Expect", "EXPECT"],
            Field::Authorization => &["Authorization", "AUTHORIZATION"],
            Field::ContentLength => &["Content-Length", "content-LENGTH"],
            Field::ContentType => &["Content-Type", "CONTENT-type"],
            Field::Location => &["Location", "LOCATION"],
            Field::Connection => &["Connection", "CONNECTION"],
            Field::KeepAlive => &["Keep-Alive", "KEEP-ALIVE"],
            Field::ProxyConnection => &["Proxy-Connection", "PROXY-connection"],
            Field::ProxyAuthorization => &["Proxy-Authorization", "proxy-AUTHORIZATION"],
            Field::ProxyAuthenticate => &["Proxy-Authenticate", "PROXY-AUTHENTICATE"],
            Field::Te => &["TE", "te", "Te"],
            Field::Trailer => &["Trailer", "TRAILER"],
            Field::TransferEncoding => &["Transfer-Encoding", "TRANSFER-ENCODING"],
            Field::Upgrade => &["Upgrade", "UPGRADE"],
        }
    }

    /// Names that are none of the fields, though close to some.
    const DECOYS: &[&str] = &[
        "accept",
        "accept-encoding",
        "user-agent",
        "hosts",
        "x-host",
        "t",
        "tes",
        "vias",
        "origins",
        "cookie2",
        "set-cookie",
        "expects",
        "x-forwarded",
        "x-forwardedfor",
        "forwarded-for",
        "x-real-ip2",
        "x-real",
        "proxy-authorization2",
        "content-lengths",
        "content-typ",
        "sec-fetch-mode",
        "sec-fetch-sitex",
        "connections",
        "keep-alive-x",
        "trailers",
        "transfer-encodings",
        "upgrades",
        "content-location",
        "www-authenticate",
        "date",
        "server",
    ];

    fn map(names: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for n in names {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        h
    }

    #[test]
    fn each_field_is_recognised_in_any_case_alone_and_repeated() {
        for field in Field::ALL {
            for name in spellings(field) {
                let alone = Census::of(&map(&[name]));
                assert_eq!(alone, Census::from_fields(&[field]), "{name}");
                let repeated = Census::of(&map(&[name, "accept", name, name]));
                assert_eq!(repeated, Census::from_fields(&[field]), "{name} repeated");
            }
        }
    }

    #[test]
    fn other_names_are_no_field() {
        for name in DECOYS {
            assert_eq!(Census::of(&map(&[name])), Census::default(), "{name}");
        }
    }

    #[test]
    fn every_field_together_and_each_bit_apart() {
        let mut names: Vec<&str> = DECOYS.to_vec();
        for field in Field::ALL {
            names.push(spellings(field)[0]);
        }
        let census = Census::of(&map(&names));
        assert_eq!(census, Census::from_fields(&Field::ALL));
        for field in Field::ALL {
            assert!(census.has(field), "{field:?}");
            assert!(!Census::default().has(field), "{field:?}");
        }
        // Twenty fields, twenty bits.
        assert_eq!(census.0.count_ones() as usize, Field::ALL.len());
    }

    #[test]
    fn hop_by_hop_set() {
        let hop = [
            Field::Connection,
            Field::KeepAlive,
            Field::ProxyConnection,
            Field::ProxyAuthorization,
            Field::ProxyAuthenticate,
            Field::Te,
            Field::Trailer,
            Field::TransferEncoding,
            Field::Upgrade,
        ];
        for field in Field::ALL {
            let one = Census::from_fields(&[field]);
            assert_eq!(
                one.any_of(Census::HOP_BY_HOP),
                hop.contains(&field),
                "{field:?}"
            );
        }
    }
}
