//! Property tests over the pure functions that see outside input: the `Authorization`
//! rewriting, the DC/OS CLI's TOML parsing and overrides, the guard's path handling and
//! the request-head scanner. They must never panic, and no error message may carry a
//! token.
//!
//! 256 cases per property by default; `PROPTEST_CASES=N` runs more, e.g. a long run:
//! `PROPTEST_CASES=2000000 cargo test --release --test fuzz`.

use std::path::{Path, PathBuf};

use dcos_token_proxy::dcos::config::{
    ConfigSource, DcosFile, DiscoverOptions, FileToken, apply_overrides, parse_file,
};
use dcos_token_proxy::env::Env;
use dcos_token_proxy::framing::Scanner;
use dcos_token_proxy::guard::{
    DenyPaths, Guard, Policy, Refusal, has_control_character, normalize_path, servlet_path,
};
use dcos_token_proxy::proxy::headers::{Credentials, apply_authorization};
use dcos_token_proxy::types::ClientAuth;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Authorization rewriting
// ---------------------------------------------------------------------------------------

/// Bytes a header value may hold (visible ASCII, space, tab, obs-text).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop_oneof![
        Just(b"Bearer ".to_vec()),
        Just(b"bearer".to_vec()),
        Just(b"BEARER  ".to_vec()),
        Just(b"token=".to_vec()),
        Just(b"Token=".to_vec()),
        Just(b"Basic ".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"eyJhbGciOiJIUzI1NiJ9.eyJ1aWQiOiJ4In0.c2ln".to_vec()),
        prop::collection::vec(prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff], 0..12),
    ];
    prop::collection::vec(interesting, 0..5).prop_map(|parts| parts.concat())
}

fn policy() -> impl Strategy<Value = ClientAuth> {
    prop_oneof![Just(ClientAuth::Keep), Just(ClientAuth::Replace)]
}

proptest! {
    #[test]
    fn authorization_rewriting_never_panics_and_always_sends_the_token_form(
        sent in prop::option::of(header_bytes()),
        own in prop::option::of("[A-Za-z0-9._-]{1,40}"),
        policy in policy(),
        extra in prop::collection::vec(("x-[a-z]{1,8}", "[ -~]{0,16}"), 0..4),
    ) {
        let mut headers = HeaderMap::new();
        for (k, v) in &extra {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let others = headers.clone();
        let sent = sent.and_then(|b| HeaderValue::from_bytes(&b).ok());
        if let Some(v) = &sent {
            headers.insert(header::AUTHORIZATION, v.clone());
        }
        let own = own.map(|t| {
            let mut v = HeaderValue::from_str(&format!("token={t}")).unwrap();
            v.set_sensitive(true);
            v
        });

        let whose = apply_authorization(&mut headers, policy, own.as_ref());

        let after = headers.get(header::AUTHORIZATION).cloned();
        // Nothing else is touched.
        headers.remove(header::AUTHORIZATION);
        prop_assert_eq!(&headers, &others);
        // The client's credentials go out for `token=X` and `Bearer X`, unless the
        // proxy's own token replaces them.
        let client_form = sent.as_ref().is_some_and(|s| {
            let b = s.as_bytes();
            (b.starts_with(b"token=") && b.len() > 6)
                || (b.len() > 7
                    && b[..7].eq_ignore_ascii_case(b"bearer ")
                    && !b[7..].trim_ascii().is_empty())
        });
        let expected = if policy == ClientAuth::Replace && own.is_some() || !client_form {
            Credentials::Proxy
        } else {
            Credentials::Client
        };
        prop_assert_eq!(whose, expected);
        match (policy, &own, &sent, &after) {
            (ClientAuth::Replace, Some(own), _, _) => {
                prop_assert_eq!(after.as_ref(), Some(own));
            }
            (_, _, _, None) => {
                // Removed or never there: only when there is no own token to send.
                prop_assert!(own.is_none());
            }
            (_, _, _, Some(a)) => {
                // Whatever goes out is in the one form every DC/OS version accepts.
                prop_assert!(a.as_bytes().starts_with(b"token="), "{:?}", a);
                prop_assert!(a.as_bytes().len() > b"token=".len());
                if let Some(s) = &sent {
                    let b = s.as_bytes();
                    if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
                        let cred = b[7..].trim_ascii();
                        if !cred.is_empty() {
                            prop_assert_eq!(&a.as_bytes()[6..], cred);
                            prop_assert!(a.is_sensitive());
                        }
                    }
                    if b.starts_with(b"token=") && b.len() > 6 {
                        prop_assert_eq!(a, s);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// DC/OS CLI TOML: parse_file and apply_overrides
// ---------------------------------------------------------------------------------------

/// A token-like secret: long enough that finding it in a message is no coincidence.
fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{12,40}\\.[A-Za-z0-9_-]{12,40}\\.[A-Za-z0-9_-]{8,30}"
}

/// Pieces a `dcos.toml` is made of; `{T}` stands for the token.
fn toml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[core]\n".to_owned()),
        Just("[cluster]\n".to_owned()),
        Just("[core.sub]\n".to_owned()),
        Just("[[core]]\n".to_owned()),
        Just("dcos_acs_token = \"{T}\"\n".to_owned()),
        Just("dcos_acs_token = '{T}'\n".to_owned()),
        Just("dcos_acs_token = \"\"\"{T}\"\"\"\n".to_owned()),
        Just("dcos_acs_token = \"{T}\n".to_owned()),
        Just("dcos_acs_token = {T}\n".to_owned()),
        Just("dcos_acs_token = \"{T}\\n{T}\"\n".to_owned()),
        Just("dcos_acs_token = \"{T}\\q\"\n".to_owned()),
        Just("dcos_acs_token = \"\\u00e9{T}\"\n".to_owned()),
        Just("dcos_acs_token = [\"{T}\"]\n".to_owned()),
        Just("core.dcos_acs_token = \"{T}\"\n".to_owned()),
        Just("core = { dcos_acs_token = \"{T}\" }\n".to_owned()),
        Just("{T} = 1\n".to_owned()),
        Just("\"{T}\" = 1\n".to_owned()),
        Just("dcos_url = \"https://m.example\"\n".to_owned()),
        Just("dcos_url = \"https://user:pw@m.example\"\n".to_owned()),
        Just("dcos_url = \"not a url\"\n".to_owned()),
        Just("dcos_url = 5\n".to_owned()),
        Just("ssl_verify = \"false\"\n".to_owned()),
        Just("ssl_verify = true\n".to_owned()),
        Just("ssl_verify = 3\n".to_owned()),
        Just("timeout = 5\n".to_owned()),
        Just("timeout = -5\n".to_owned()),
        Just("timeout = \"12x\"\n".to_owned()),
        Just("timeout = 1.5\n".to_owned()),
        Just("name = \"prod\"\n".to_owned()),
        Just("name = 7\n".to_owned()),
        Just("# comment {T}\n".to_owned()),
        Just("\n".to_owned()),
        "[ -~]{0,20}\n",
    ]
}

/// Mutations: delete, or insert one of TOML's special characters, at a position.
fn mutations() -> impl Strategy<Value = Vec<(usize, Option<char>)>> {
    let ch = prop_oneof![
        Just('"'),
        Just('\''),
        Just('='),
        Just('['),
        Just(']'),
        Just('{'),
        Just('}'),
        Just('\n'),
        Just('\\'),
        Just('#'),
        Just('.'),
        Just(','),
        Just('\u{0}'),
        Just('é'),
        any::<char>(),
    ];
    prop::collection::vec((any::<usize>(), prop::option::of(ch)), 0..4)
}

fn mutate(text: &str, muts: &[(usize, Option<char>)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, ch) in muts {
        let i = at % (chars.len() + 1);
        match ch {
            Some(c) => chars.insert(i, *c),
            None if i < chars.len() => {
                chars.remove(i);
            }
            None => {}
        }
    }
    chars.into_iter().collect()
}

fn assert_no_token(what: &str, token: &str) -> Result<(), TestCaseError> {
    // Also the parts of the JWT: a message must not carry any of them.
    for part in std::iter::once(token).chain(token.split('.')) {
        prop_assert!(!what.contains(part), "{:?} leaks {:?}", what, part);
    }
    Ok(())
}

fn options(upstream: Option<String>) -> DiscoverOptions {
    DiscoverOptions {
        dcos_dir: None,
        cluster: None,
        upstream,
        home: Some(PathBuf::from("/home/u")),
        cwd: Some(PathBuf::from("/")),
    }
}

proptest! {
    #[test]
    fn dcos_toml_parsing_never_panics_and_never_shows_the_token(
        token in token(),
        pieces in prop::collection::vec(toml_piece(), 0..10),
        muts in mutations(),
        env_url in prop::option::of(prop_oneof![
            Just("https://env.example".to_owned()),
            Just("ftp://x".to_owned()),
            "[ -~]{0,20}",
        ]),
        env_token_junk in prop::option::of(prop_oneof![
            Just("\n".to_owned()),
            Just(" ".to_owned()),
            Just("é".to_owned()),
            Just(String::new()),
        ]),
        flag in prop::option::of(Just("https://flag.example".to_owned())),
    ) {
        let text = mutate(&pieces.concat().replace("{T}", &token), &muts);
        let path = Path::new("/home/u/.dcos/clusters/c1/dcos.toml");
        let parsed = parse_file(path, &text);
        let file = match &parsed {
            Ok(f) => {
                assert_no_token(&format!("{f:?}"), &token)?;
                f.clone()
            }
            Err(e) => {
                assert_no_token(&e.to_string(), &token)?;
                assert_no_token(&format!("{e:?}"), &token)?;
                DcosFile { token: FileToken::NotHeaderSafe, ..DcosFile::default() }
            }
        };
        let mut env = Vec::new();
        if let Some(u) = &env_url {
            env.push(("DCOS_URL", u.clone()));
        }
        if let Some(junk) = &env_token_junk {
            env.push(("DCOS_ACS_TOKEN", format!("{token}{junk}")));
        }
        let env = Env::from_pairs(env);
        let source = ConfigSource::Cluster { id: "c1".into(), file: path.to_owned() };
        match apply_overrides(source, PathBuf::from("/home/u/.dcos"), &file, &options(flag), &env) {
            Ok(cfg) => assert_no_token(&format!("{cfg:?}"), &token)?,
            Err(e) => {
                assert_no_token(&e.to_string(), &token)?;
                assert_no_token(&format!("{e:?}"), &token)?;
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_dcos_toml_parser(text in any::<String>()) {
        let _ = parse_file(Path::new("/x/dcos.toml"), &text);
    }
}

// ---------------------------------------------------------------------------------------
// The guard's path normalisation and the request-head scanner
// ---------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn path_normalisation_never_panics_and_is_idempotent(
        path in "/[a-zA-Z0-9%./_~-]{0,40}",
    ) {
        let once = normalize_path(&path).into_owned();
        prop_assert!(once.starts_with('/'));
        // Normalising twice only decodes what the first pass produced as `%XX`.
        if !once.contains('%') {
            prop_assert_eq!(normalize_path(&once).into_owned(), once.clone());
        }
        prop_assert!(!once.contains("//"));
        prop_assert!(!once.split('/').any(|s| s == ".." || s == "."));
    }

    #[test]
    fn servlet_paths_hold_no_parameters_and_no_dot_segments(
        path in "/[a-zA-Z0-9%./_~;=-]{0,40}",
    ) {
        let once = servlet_path(&path).into_owned();
        prop_assert!(once.starts_with('/'));
        prop_assert!(!once.contains(';'), "{:?} -> {:?}", path, once);
        prop_assert!(!once.contains("//"));
        prop_assert!(!once.split('/').any(|s| s == ".." || s == "."));
        if !once.contains('%') {
            prop_assert_eq!(servlet_path(&once).into_owned(), once.clone());
        }
    }

    #[test]
    fn the_head_scanner_never_panics_and_ignores_how_bytes_are_split(
        pieces in prop::collection::vec(prop_oneof![
            Just(b"POST / HTTP/1.1\r\n".to_vec()),
            Just(b"GET /x HTTP/1.1\r\n".to_vec()),
            Just(b"Content-Length: 3\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Upgrade: websocket\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"3\r\nabc\r\n".to_vec()),
            Just(b"0\r\n\r\n".to_vec()),
            Just(b"ffffffffffffffffffff\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..16),
        ], 0..16),
        splits in prop::collection::vec(1usize..40, 1..8),
    ) {
        let bytes = pieces.concat();
        let mut whole = Scanner::new();
        whole.feed(&bytes);
        let mut split = Scanner::new();
        let mut rest = &bytes[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = splits[i % splits.len()].min(rest.len());
            split.feed(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
        let (a, b) = (whole.findings(), split.findings());
        for index in 0..20 {
            prop_assert_eq!(a.conflict(index), b.conflict(index));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The guard against disguised paths: `;` parameters, dot segments, percent-encoding and
// control characters
// ---------------------------------------------------------------------------------------

/// One way to write a segment that a server behind the proxy reads as `seg`.
fn disguise(seg: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(seg.to_owned()),
        // `;parameters`, as Jetty strips them.
        "[a-z0-9=]{0,6}".prop_map(move |p| format!("{seg};{p}")),
        // A percent-encoded character (either case of hex digit).
        (0..seg.len(), any::<bool>()).prop_map(move |(i, upper)| {
            let b = seg.as_bytes()[i];
            let enc = if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            };
            format!("{}{enc}{}", &seg[..i], &seg[i + 1..])
        }),
        // A detour: a segment, then `..` (maybe with parameters or encoded).
        (
            "[a-z]{1,5}",
            prop_oneof![
                Just(".."),
                Just("..;"),
                Just("..;x"),
                Just("%2e%2e"),
                Just(".%2E"),
            ]
        )
            .prop_map(move |(d, up)| format!("{d}/{up}/{seg}")),
        // An empty or `.` segment before it.
        prop_oneof![Just("/"), Just("./"), Just(".;/"), Just("%2e/")]
            .prop_map(move |pre| format!("{pre}{seg}")),
    ]
}

/// A path for `/mesos/master/<tail>`, each segment disguised.
fn disguised_mesos_path() -> impl Strategy<Value = String> {
    (
        disguise("mesos"),
        disguise("master"),
        "[a-z]{0,6}",
        prop::option::of("[a-z=]{0,4}"),
    )
        .prop_map(|(a, b, tail, params)| match params {
            Some(p) => format!("/{a}/{b}/{tail};{p}"),
            None => format!("/{a}/{b}/{tail}"),
        })
}

/// The `%XX` of a control character.
fn encoded_control() -> impl Strategy<Value = String> {
    prop_oneof![0u8..0x20, Just(0x7f)].prop_map(|b| format!("%{b:02x}"))
}

fn deny_mesos() -> Guard {
    let policy = Policy {
        deny_paths: Some(DenyPaths::new(&["/mesos/.*".to_owned()]).unwrap()),
        ..Policy::default()
    };
    Guard::new(&policy, Some(8079))
}

fn check(guard: &Guard, target: &str) -> Result<(), Refusal> {
    let mut req = http::Request::builder()
        .uri(target)
        .header("host", "localhost")
        .body(())
        .expect("the generated target is a valid request target");
    guard.check(&mut req)
}

proptest! {
    #[test]
    fn disguised_paths_never_slip_past_a_deny_rule(path in disguised_mesos_path()) {
        let guard = deny_mesos();
        let result = check(&guard, &path);
        prop_assert!(
            matches!(result, Err(Refusal::DeniedPath(_))),
            "{:?} -> {:?}", path, result
        );
    }

    #[test]
    fn a_decoded_control_character_is_400_wherever_it_is(
        path in disguised_mesos_path(),
        other in "/[a-z/;.]{0,12}",
        ctl in encoded_control(),
        at in any::<prop::sample::Index>(),
        mesos in any::<bool>(),
    ) {
        let guard = deny_mesos();
        let base = if mesos { path } else { other };
        // Insert at a character boundary after the leading `/`, outside any `%XX`.
        let cuts: Vec<usize> = (1..=base.len())
            .filter(|&i| !base[..i].ends_with('%') && !base[..i.saturating_sub(1)].ends_with('%'))
            .collect();
        let i = cuts[at.index(cuts.len())];
        let target = format!("{}{ctl}{}", &base[..i], &base[i..]);
        prop_assert!(has_control_character(&target));
        let result = check(&guard, &target);
        prop_assert!(
            matches!(result, Err(Refusal::Malformed(m)) if m.contains("control character")),
            "{:?} -> {:?}", target, result
        );
    }
}
