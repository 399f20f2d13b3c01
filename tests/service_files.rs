//! The service files in `config/` (a systemd user unit and a launchd agent) parse, start
//! the `dcos-token-proxy` binary, and pass it flags the real command-line definitions
//! accept, so they cannot rot as flags change.

use std::path::Path;

use dcos_token_proxy::cli::Cli;
use dcos_token_proxy::types::LogFormat;

fn shipped(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("config/{name}: {e}"))
}

/// The flags after the program, parsed as the binary would; the program must be the
/// installed `dcos-token-proxy`.
fn check_command_line(args: &[String]) -> Cli {
    let (program, flags) = args.split_first().expect("a program");
    assert!(
        program.ends_with("/.cargo/bin/dcos-token-proxy"),
        "runs {program:?}, not the binary `cargo install` puts in ~/.cargo/bin"
    );
    let cli = dcos_token_proxy::cli::command()
        .try_get_matches_from(
            std::iter::once("dcos-token-proxy").chain(flags.iter().map(String::as_str)),
        )
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
        .unwrap_or_else(|e| panic!("flags {flags:?} are refused: {e}"));
    assert!(cli.command.is_none(), "a service serves the proxy");
    assert_eq!(cli.listen.as_deref(), Some("127.0.0.1:8079"));
    assert!(matches!(cli.log_format, Some(LogFormat::Json)));
    cli
}

/// A systemd unit: `[Section]` headers, `Key=Value` lines, `#`/`;` comments.
fn parse_unit(text: &str) -> Vec<(String, String, String)> {
    let mut section = None;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not Key=Value: {line}", n + 1));
        let section = section
            .clone()
            .unwrap_or_else(|| panic!("line {}: entry before any [Section]", n + 1));
        entries.push((section, key.trim().to_owned(), value.trim().to_owned()));
    }
    entries
}

#[test]
fn systemd_user_unit_parses_and_runs_the_binary_with_valid_flags() {
    let entries = parse_unit(&shipped("dcos-token-proxy.service"));
    let get = |section: &str, key: &str| {
        entries
            .iter()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key} in [{section}]"))
    };
    for (section, _, _) in &entries {
        assert!(
            ["Unit", "Service", "Install"].contains(&section.as_str()),
            "[{section}]"
        );
    }
    let exec = get("Service", "ExecStart");
    let args: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    assert!(
        args[0].starts_with("%h/"),
        "a user unit uses %h for the home: {exec}"
    );
    check_command_line(&args);
    assert_eq!(get("Install", "WantedBy"), "default.target");
    assert_eq!(get("Service", "Restart"), "on-failure");
    // Longer than the default 30 s grace, so systemd does not SIGKILL a drain.
    assert_eq!(get("Service", "TimeoutStopSec"), "35s");
}

/// One XML item of a plist.
#[derive(Debug, Clone, PartialEq)]
enum Plist {
    Dict(Vec<(String, Plist)>),
    Array(Vec<Plist>),
    String(String),
    Integer(i64),
    Bool(bool),
}

/// A minimal, strict reader for the XML plist subset launchd agents use: every tag must
/// close, keys and values alternate in a dict, unknown elements are errors.
struct PlistReader<'a> {
    rest: &'a str,
}

impl<'a> PlistReader<'a> {
    fn skip_space_and_comments(&mut self) {
        loop {
            self.rest = self.rest.trim_start();
            if let Some(r) = self.rest.strip_prefix("<!--") {
                let end = r.find("-->").expect("an unclosed comment");
                self.rest = &r[end + 3..];
            } else {
                return;
            }
        }
    }

    fn tag(&mut self) -> &'a str {
        self.skip_space_and_comments();
        let r = self
            .rest
            .strip_prefix('<')
            .unwrap_or_else(|| panic!("expected a tag at {:.40}", self.rest));
        let end = r.find('>').expect("an unclosed tag");
        self.rest = &r[end + 1..];
        &r[..end]
    }

    fn text_until(&mut self, close: &str) -> String {
        let end = self
            .rest
            .find(close)
            .unwrap_or_else(|| panic!("no {close}"));
        let text = &self.rest[..end];
        assert!(!text.contains('<'), "markup inside a value: {text}");
        self.rest = &self.rest[end + close.len()..];
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    fn value(&mut self) -> Option<Plist> {
        let tag = self.tag();
        Some(match tag {
            "dict" => {
                let mut items = Vec::new();
                loop {
                    match self.tag() {
                        "/dict" => break,
                        "key" => {
                            let key = self.text_until("</key>");
                            let value = self.value().expect("a value after a key");
                            items.push((key, value));
                        }
                        other => panic!("<{other}> where a <key> belongs"),
                    }
                }
                Plist::Dict(items)
            }
            "array" => {
                let mut items = Vec::new();
                while let Some(v) = self.value() {
                    items.push(v);
                }
                Plist::Array(items)
            }
            "/array" => return None,
            "string" => Plist::String(self.text_until("</string>")),
            "integer" => Plist::Integer(
                self.text_until("</integer>")
                    .trim()
                    .parse()
                    .expect("an integer"),
            ),
            "true/" => Plist::Bool(true),
            "false/" => Plist::Bool(false),
            other => panic!("unexpected <{other}>"),
        })
    }

    fn document(text: &'a str) -> Plist {
        let mut r = Self { rest: text };
        assert!(r.tag().starts_with("?xml "), "an XML declaration first");
        assert!(r.tag().starts_with("!DOCTYPE plist"), "the plist DOCTYPE");
        assert_eq!(r.tag(), "plist version=\"1.0\"");
        let root = r.value().expect("a root value");
        assert_eq!(r.tag(), "/plist");
        r.skip_space_and_comments();
        assert!(r.rest.is_empty(), "trailing content: {:.40}", r.rest);
        root
    }
}

#[test]
fn launchd_agent_parses_and_runs_the_binary_with_valid_flags() {
    let Plist::Dict(items) = PlistReader::document(&shipped("dcos-token-proxy.plist")) else {
        panic!("the root is not a dict");
    };
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key}"))
    };
    assert_eq!(
        get("Label"),
        Plist::String("io.github.dcos-token-proxy".into())
    );
    let Plist::Array(args) = get("ProgramArguments") else {
        panic!("ProgramArguments is not an array");
    };
    let args: Vec<String> = args
        .into_iter()
        .map(|a| match a {
            Plist::String(s) => s,
            other => panic!("a non-string argument: {other:?}"),
        })
        .collect();
    check_command_line(&args);
    assert_eq!(get("RunAtLoad"), Plist::Bool(true));
    assert_eq!(get("ExitTimeOut"), Plist::Integer(35));
}

/// The reader is strict enough to catch a broken file.
#[test]
#[should_panic(expected = "where a <key> belongs")]
fn the_plist_reader_refuses_a_dict_without_keys() {
    PlistReader::document(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE plist>\n<plist version=\"1.0\"><dict><string>x</string></dict></plist>",
    );
}
