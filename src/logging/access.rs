//! The access-log line, written cheaply. Every proxied request logs one event with the
//! target [`ACCESS_TARGET`]; formatting it through `tracing-subscriber`'s general
//! formatter cost about 10,000 instructions (a `nu_ansi_term` style around every field
//! name and `=` even with colour off, `f64` `Debug` for the two latencies, `fmt`
//! machinery for every integer), a sixth of everything the proxy does per request.
//! [`AccessFormat`] writes those events itself, byte for byte as the general formatter
//! would (text with or without colour, or the flattened JSON object), and hands every
//! other event, and an access event it cannot copy exactly (one inside a span, one with
//! an error field), to the general formatter it wraps.
//!
//! Once `logging::init` has installed the process's subscriber, the request path skips
//! even the event: [`AccessLine::write`] puts the same bytes straight into the log
//! buffer (`logging::access`), sparing the event's dispatch, a visitor call per field
//! and the `fmt` machinery for the two `Display` values: the line cost about 3,660
//! instructions per request as an event and about 1,900 written directly
//! (`scripts/ir-per-request` with `IR_LOG=1` against without).

use std::cell::RefCell;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::clock::CachedSystemTime;

/// The target of the one-line-per-request access log. Filters name it
/// (`RUST_LOG=dcos_token_proxy::access=off`), and [`AccessFormat`] recognises the
/// access event by it.
pub const ACCESS_TARGET: &str = "dcos_token_proxy::access";

/// Floats below this many tenths are written as `{tenths / 10}.{tenths % 10}`: far
/// below 2^53, so every such tenth is an exact `f64` and the text is the one `Debug`
/// and `serde_json` write.
const TENTHS_LIMIT: f64 = 1e14;

/// Colour codes the general text formatter writes (`nu_ansi_term`), as constants.
mod colour {
    /// Dimmed, for the timestamp and `=`.
    pub const DIMMED: &str = "\x1b[2m";
    /// Italic, for field names.
    pub const ITALIC: &str = "\x1b[3m";
    /// Back to plain.
    pub const RESET: &str = "\x1b[0m";
    /// The INFO level, green and right-aligned to five columns, then a space.
    pub const INFO: &str = "\x1b[32m INFO\x1b[0m ";
}

/// Which of the two log formats a line is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `tracing-subscriber`'s default text format without the target.
    Text,
    /// `tracing-subscriber`'s JSON format with the event's fields flattened.
    Json,
}

/// One access-log line's values, with the types and in the order the line has them.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request path (never the query).
    pub path: &'a str,
    /// The response status.
    pub status: u16,
    /// Milliseconds until the response headers were ready, rounded to a tenth.
    pub latency_ms: f64,
    /// Milliseconds until the response body ended, rounded to a tenth.
    pub duration_ms: f64,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// How the response ended (`complete`, `client_closed`, …).
    pub outcome: &'static str,
}

impl AccessLine<'_> {
    /// Log the line as a tracing event: what any subscriber sees.
    pub fn trace(&self) {
        tracing::info!(
            target: ACCESS_TARGET,
            method = %self.method,
            path = %self.path,
            status = self.status,
            latency_ms = self.latency_ms,
            duration_ms = self.duration_ms,
            bytes = self.bytes,
            outcome = self.outcome,
            "request"
        );
    }

    /// Write the line in `style` into `line` (cleared first), byte for byte as
    /// [`AccessFormat`] writes the event [`Self::trace`] logs outside any span. False
    /// if it could not (the clock could not be written as JSON): then only the event
    /// logs it right.
    pub(super) fn write(&self, line: &mut String, style: Style, ansi: bool) -> bool {
        line.clear();
        match style {
            Style::Text => {
                text_start(line, ansi);
                line.push_str("request");
                // ` name=`, in one piece without colour (a file, a pipe, journald: the
                // common case).
                let name = |line: &mut String, plain: &'static str| {
                    if ansi {
                        let name = &plain[1..plain.len() - 1];
                        line.push(' ');
                        push_coloured_name(line, name);
                    } else {
                        line.push_str(plain);
                    }
                };
                name(line, " method=");
                line.push_str(self.method);
                name(line, " path=");
                line.push_str(self.path);
                name(line, " status=");
                push_u64(line, u64::from(self.status));
                name(line, " latency_ms=");
                push_f64(line, self.latency_ms);
                name(line, " duration_ms=");
                push_f64(line, self.duration_ms);
                name(line, " bytes=");
                push_u64(line, self.bytes);
                name(line, " outcome=");
                push_debug_str(line, self.outcome);
                line.push('\n');
                true
            }
            Style::Json => {
                if !json_start(line) {
                    return false;
                }
                line.push_str(",\"message\":\"request\",\"method\":\"");
                push_json_escaped(line, self.method);
                line.push_str("\",\"path\":\"");
                push_json_escaped(line, self.path);
                line.push_str("\",\"status\":");
                push_u64(line, u64::from(self.status));
                line.push_str(",\"latency_ms\":");
                let mut complete = push_json_f64(line, self.latency_ms);
                line.push_str(",\"duration_ms\":");
                complete &= push_json_f64(line, self.duration_ms);
                line.push_str(",\"bytes\":");
                push_u64(line, self.bytes);
                line.push_str(",\"outcome\":\"");
                push_json_escaped(line, self.outcome);
                line.push('"');
                json_end(line, ACCESS_TARGET);
                complete
            }
        }
    }
}

/// A [`FormatEvent`] that writes access-log events itself and every other event with
/// `general`, the formatter `logging::init` would otherwise install.
#[derive(Debug)]
pub struct AccessFormat<F> {
    general: F,
    style: Style,
}

impl<F> AccessFormat<F> {
    /// Write access events in `style`, everything else with `general` (which must
    /// write the same `style`, with the [`CachedSystemTime`] timer).
    pub fn new(general: F, style: Style) -> Self {
        Self { general, style }
    }
}

thread_local! {
    /// The line being written; kept per thread so a line allocates nothing.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// `access` written in `style` into this thread's line buffer, then handed to `out`.
/// False (and nothing handed over) if the buffer is busy (a line written while
/// formatting another) or the line could not be written exactly.
pub(super) fn with_access_line(
    access: &AccessLine<'_>,
    style: Style,
    ansi: bool,
    out: impl FnOnce(&str),
) -> bool {
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return false;
        };
        let complete = access.write(&mut line, style, ansi);
        if complete {
            out(&line);
        }
        complete
    })
}

impl<S, N, F> FormatEvent<S, N> for AccessFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // The general formatter writes the spans an event is in; this one does not.
        if meta.target() == ACCESS_TARGET
            && *meta.level() == Level::INFO
            && ctx.event_scope().is_none()
        {
            let ansi = writer.has_ansi_escapes();
            let sanitize = writer.sanitizes_ansi_escapes();
            let written = LINE.with(|line| {
                // Busy only if formatting a field logged again; the general path copes.
                let mut line = line.try_borrow_mut().ok()?;
                line.clear();
                let complete = match self.style {
                    Style::Text => text_line(&mut line, event, ansi, sanitize),
                    Style::Json => json_line(&mut line, event),
                };
                complete.then(|| writer.write_str(&line))
            });
            if let Some(result) = written {
                return result;
            }
        }
        self.general.format_event(ctx, writer, event)
    }
}

/// Write `event` (an INFO event outside any span) as the general text formatter does:
/// `{time}  INFO {message} {name}={value}…`. False if it holds a field only the
/// general formatter writes.
pub(super) fn text_line(line: &mut String, event: &Event<'_>, ansi: bool, sanitize: bool) -> bool {
    text_start(line, ansi);
    let mut fields = TextFields {
        line: &mut *line,
        ansi,
        sanitize,
        first: true,
        complete: true,
    };
    event.record(&mut fields);
    let complete = fields.complete;
    line.push('\n');
    complete
}

/// The text line up to its first field: the time and the INFO level.
fn text_start(line: &mut String, ansi: bool) {
    if ansi {
        line.push_str(colour::DIMMED);
    }
    if CachedSystemTime
        .format_time(&mut Writer::new(&mut *line))
        .is_err()
    {
        line.push_str("<unknown time>");
    }
    if ansi {
        line.push_str(colour::RESET);
        line.push(' ');
        line.push_str(colour::INFO);
    } else {
        line.push_str("  INFO ");
    }
}

/// Write `event` (an INFO event outside any span) as the general JSON formatter does
/// with flattened fields: `{"timestamp":…,"level":"INFO",{fields},"target":…}`.
pub(super) fn json_line(line: &mut String, event: &Event<'_>) -> bool {
    if !json_start(line) {
        return false;
    }
    let mut fields = JsonFields {
        line: &mut *line,
        complete: true,
    };
    event.record(&mut fields);
    let complete = fields.complete;
    json_end(line, event.metadata().target());
    complete
}

/// The JSON object up to its first field: the time and the INFO level. False if the
/// time could not be written (the line is then incomplete).
fn json_start(line: &mut String) -> bool {
    line.push_str("{\"timestamp\":\"");
    let mut time = JsonEscaped(&mut *line);
    if CachedSystemTime
        .format_time(&mut Writer::new(&mut time))
        .is_err()
    {
        return false;
    }
    line.push_str("\",\"level\":\"INFO\"");
    true
}

/// The JSON object's end after its fields: the target, and the newline.
fn json_end(line: &mut String, target: &str) {
    line.push_str(",\"target\":\"");
    push_json_escaped(line, target);
    line.push_str("\"}\n");
}

/// Fields as `tracing-subscriber`'s `DefaultVisitor` writes them: space-separated
/// `name=value`, values in their `Debug` form, the message bare.
struct TextFields<'a> {
    line: &'a mut String,
    ansi: bool,
    sanitize: bool,
    first: bool,
    /// False once a field needs the general formatter (an error with its sources).
    complete: bool,
}

impl TextFields<'_> {
    /// Start the field `field`: a separating space and `name=`. False for the fields
    /// the general formatter leaves out (`log.*`, the `log` crate's metadata).
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("log.") {
            return false;
        }
        self.pad();
        let name = name.strip_prefix("r#").unwrap_or(name);
        if self.ansi {
            push_coloured_name(self.line, name);
        } else {
            self.line.push_str(name);
            self.line.push('=');
        }
        true
    }

    fn pad(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.line.push(' ');
        }
    }
}

impl Visit for TextFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.name(field) {
            push_f64(self.line, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.name(field) {
            push_i64(self.line, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.name(field) {
            push_u64(self.line, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.name(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if self.name(field) {
            push_debug_str(self.line, value);
        }
    }

    fn record_error(&mut self, _field: &Field, _value: &(dyn std::error::Error + 'static)) {
        // Written with its chain of sources by the general formatter.
        self.complete = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() != "message" {
            if self.name(field) && write!(self.line, "{value:?}").is_err() {
                self.complete = false;
            }
            return;
        }
        self.pad();
        let written = if self.sanitize {
            write!(Sanitized(&mut *self.line), "{value:?}")
        } else {
            write!(self.line, "{value:?}")
        };
        if written.is_err() {
            self.complete = false;
        }
    }
}

/// `name=` as the coloured text formatter writes it: the name in italics, `=` dimmed.
fn push_coloured_name(line: &mut String, name: &str) {
    line.push_str(colour::ITALIC);
    line.push_str(name);
    line.push_str(colour::RESET);
    line.push_str(colour::DIMMED);
    line.push('=');
    line.push_str(colour::RESET);
}

/// Fields as `tracing-serde`'s `SerdeMapVisitor` writes them into the JSON object:
/// `,"name":value`, numbers and booleans as themselves, everything else a string.
struct JsonFields<'a> {
    line: &'a mut String,
    complete: bool,
}

impl JsonFields<'_> {
    fn name(&mut self, field: &Field) {
        self.named(field.name());
    }

    /// Start a field called `name`: `,"name":`.
    fn named(&mut self, name: &str) {
        self.line.push_str(",\"");
        push_json_escaped(self.line, name);
        self.line.push_str("\":");
    }

    /// A string field: its value quoted and escaped.
    fn str_field(&mut self, name: &str, value: &str) {
        self.named(name);
        self.line.push('"');
        push_json_escaped(self.line, value);
        self.line.push('"');
    }

    /// A float field, as `serde_json` writes it.
    fn f64_field(&mut self, name: &str, value: f64) {
        self.named(name);
        if !push_json_f64(self.line, value) {
            self.complete = false;
        }
    }
}

/// `value` as `serde_json` writes it; false if it could not be written.
fn push_json_f64(line: &mut String, value: f64) -> bool {
    if let Some(tenths) = tenths(value) {
        push_tenths(line, tenths);
        return true;
    }
    // What serde_json writes for any other float (`null` if not finite).
    match serde_json::to_string(&value) {
        Ok(text) => {
            line.push_str(&text);
            true
        }
        Err(_) => false,
    }
}

impl Visit for JsonFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.f64_field(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        push_i64(self.line, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        push_u64(self.line, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.str_field(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.name(field);
        self.line.push('"');
        if write!(JsonEscaped(&mut *self.line), "{value:?}").is_err() {
            self.complete = false;
        }
        self.line.push('"');
    }
}

/// `value` in tenths when it is a whole number of tenths the fast path can write
/// (as the access log's latencies are: rounded to a tenth of a millisecond).
fn tenths(value: f64) -> Option<u64> {
    if !(value.is_sign_positive() && value < TENTHS_LIMIT / 10.0) {
        return None;
    }
    let tenths = (value * 10.0).round();
    // Below TENTHS_LIMIT the conversion is exact.
    (tenths / 10.0 == value).then_some(tenths as u64)
}

/// `value` as `f64`'s `Debug` writes it.
fn push_f64(line: &mut String, value: f64) {
    match tenths(value) {
        Some(tenths) => push_tenths(line, tenths),
        None => {
            let _ = write!(line, "{value:?}");
        }
    }
}

fn push_tenths(line: &mut String, tenths: u64) {
    push_u64(line, tenths / 10);
    line.push('.');
    line.push(char::from(b'0' + (tenths % 10) as u8));
}

fn push_u64(line: &mut String, value: u64) {
    // Most significant digit first, straight into the line: no scratch buffer to
    // check for UTF-8 afterwards.
    let mut unit = 1;
    while unit <= value / 10 {
        unit *= 10;
    }
    loop {
        line.push(char::from(b'0' + (value / unit % 10) as u8));
        if unit == 1 {
            break;
        }
        unit /= 10;
    }
}

fn push_i64(line: &mut String, value: i64) {
    if value < 0 {
        line.push('-');
    }
    push_u64(line, value.unsigned_abs());
}

/// `value` as `str`'s `Debug` writes it: quoted, with escapes.
fn push_debug_str(line: &mut String, value: &str) {
    let plain = value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    if plain {
        line.push('"');
        line.push_str(value);
        line.push('"');
    } else {
        let _ = write!(line, "{value:?}");
    }
}

/// `value` escaped for the inside of a JSON string exactly as `serde_json` escapes it:
/// `"`, `\` and the control characters below U+0020, nothing else.
fn push_json_escaped(line: &mut String, value: &str) {
    let mut plain_from = 0;
    for (at, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        line.push_str(&value[plain_from..at]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            line.push_str("\\u00");
            line.push(char::from(HEX[usize::from(byte >> 4)]));
            line.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            line.push_str(escape);
        }
        plain_from = at + 1;
    }
    line.push_str(&value[plain_from..]);
}

/// A [`fmt::Write`] that escapes what it is given for the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut String);

impl Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_json_escaped(self.0, s);
        Ok(())
    }
}

/// A [`fmt::Write`] that escapes terminal control characters as `tracing-subscriber`
/// does in messages (`\x1b`, `\u{9b}`), so a message cannot drive the terminal.
struct Sanitized<'a>(&'a mut String);

impl Write for Sanitized<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let harmless = s
            .bytes()
            .all(|b| b < 0x80 && !matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f));
        if harmless {
            self.0.push_str(s);
            return Ok(());
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.push_str("\\x1b"),
                '\x07' => self.0.push_str("\\x07"),
                '\x08' => self.0.push_str("\\x08"),
                '\x0c' => self.0.push_str("\\x0c"),
                '\x7f' => self.0.push_str("\\x7f"),
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(ch))?,
                _ => self.0.push(ch),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use http::{Method, StatusCode, Uri};
    use proptest::prelude::*;
    use tracing_subscriber::fmt::format::{Format, Json, JsonFields};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::proxy::body::{AccessLog, millis};

    /// What a formatter wrote.
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Out {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The fast path alone, no fallback: an event it cannot write is an error (and the
    /// line is missing from its output).
    struct FastOnly(Style);

    impl<S, N> FormatEvent<S, N> for FastOnly
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            _: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let mut line = String::new();
            let complete = match self.0 {
                Style::Text => text_line(
                    &mut line,
                    event,
                    writer.has_ansi_escapes(),
                    writer.sanitizes_ansi_escapes(),
                ),
                Style::Json => json_line(&mut line, event),
            };
            if !complete {
                return Err(fmt::Error);
            }
            writer.write_str(&line)
        }
    }

    /// The formatter `logging::init` installed before [`AccessFormat`] existed.
    fn general_text() -> Format {
        tracing_subscriber::fmt::format().with_target(false)
    }

    fn general_json() -> Format<Json> {
        tracing_subscriber::fmt::format().json().flatten_event(true)
    }

    /// What each of three formatters wrote for the events `log` emits: the general one
    /// as `init` used to set it up, [`AccessFormat`] as `init` sets it up now, and the
    /// fast path alone.
    struct Written {
        general: String,
        access: String,
        fast: String,
    }

    fn written(style: Style, ansi: bool, log: impl FnOnce()) -> Written {
        let (general, access, fast) = (Out::default(), Out::default(), Out::default());
        let writer = |out: &Out| {
            let out = out.clone();
            move || out.clone()
        };
        match style {
            Style::Text => {
                let subscriber = tracing_subscriber::registry()
                    .with(
                        tracing_subscriber::fmt::layer()
                            .with_ansi(ansi)
                            .event_format(general_text())
                            .with_writer(writer(&general)),
                    )
                    .with(
                        tracing_subscriber::fmt::layer()
                            .with_ansi(ansi)
                            .event_format(AccessFormat::new(
                                general_text().with_timer(CachedSystemTime),
                                Style::Text,
                            ))
                            .with_writer(writer(&access)),
                    )
                    .with(
                        tracing_subscriber::fmt::layer()
                            .with_ansi(ansi)
                            .event_format(FastOnly(Style::Text))
                            .with_writer(writer(&fast)),
                    );
                tracing::subscriber::with_default(subscriber, log);
            }
            Style::Json => {
                let subscriber = tracing_subscriber::registry()
                    .with(
                        tracing_subscriber::fmt::layer()
                            .with_ansi(ansi)
                            .fmt_fields(JsonFields::new())
                            .event_format(general_json())
                            .with_writer(writer(&general)),
                    )
                    .with(
                        tracing_subscriber::fmt::layer()
                            .with_ansi(ansi)
                            .fmt_fields(JsonFields::new())
                            .event_format(AccessFormat::new(
                                general_json().with_timer(CachedSystemTime),
                                Style::Json,
                            ))
                            .with_writer(writer(&access)),
                    )
                    .with(
                        tracing_subscriber::fmt::layer()
                            .with_ansi(ansi)
                            .fmt_fields(JsonFields::new())
                            .event_format(FastOnly(Style::Json))
                            .with_writer(writer(&fast)),
                    );
                tracing::subscriber::with_default(subscriber, log);
            }
        }
        Written {
            general: general.text(),
            access: access.text(),
            fast: fast.text(),
        }
    }

    /// `text` with each line's timestamp (the three formatters read the clock
    /// microseconds apart) replaced by `TIME`, after checking its shape.
    fn timeless(text: &str) -> String {
        let mut out = String::new();
        for line in text.lines() {
            let at = line
                .find("Z")
                .unwrap_or_else(|| panic!("no time in {line:?}"));
            let time = &line[at - 26..=at];
            let shape: String = time
                .chars()
                .map(|c| if c.is_ascii_digit() { '9' } else { c })
                .collect();
            assert_eq!(shape, "9999-99-99T99:99:99.999999Z", "{line:?}");
            out.push_str(&line[..at - 26]);
            out.push_str("TIME");
            out.push_str(&line[at + 1..]);
            out.push('\n');
        }
        out
    }

    fn access_log(path: &str, latency: Duration) -> AccessLog {
        AccessLog {
            method: Method::GET,
            target: Uri::try_from(path).unwrap(),
            status: StatusCode::NOT_FOUND,
            started: Instant::now(),
            latency,
        }
    }

    /// An access event with fixed values and the fields `AccessLog::emit` records, in
    /// its order and with its types.
    fn fixed_access_event(path: &str, latency_ms: f64, outcome: &'static str) {
        tracing::info!(
            target: ACCESS_TARGET,
            method = %Method::GET,
            path = %path,
            status = 200u16,
            latency_ms,
            duration_ms = 12.0,
            bytes = 4u64,
            outcome,
            "request"
        );
    }

    #[test]
    fn access_lines_are_byte_for_byte_the_general_formatters() {
        let paths = [
            "/x",
            "/q\"uote",
            "/back\\slash",
            "/%7Bbraces%7D",
            "/caf\u{e9}",
            "/",
        ];
        for style in [Style::Text, Style::Json] {
            for ansi in [false, true] {
                let out = written(style, ansi, || {
                    for path in paths {
                        let log = access_log(&format!("{path}?token=secret"), Duration::ZERO);
                        log.emit(0, "complete");
                        let slow = Duration::from_micros(1_234_567);
                        access_log(path, slow).emit(u64::MAX, "client_closed");
                    }
                });
                let (general, access, fast) = (
                    timeless(&out.general),
                    timeless(&out.access),
                    timeless(&out.fast),
                );
                assert_eq!(general.lines().count(), 2 * paths.len(), "{general}");
                assert_eq!(access, general, "{style:?}, ansi {ansi}");
                assert_eq!(fast, general, "{style:?}, ansi {ansi}");
                assert!(!general.contains("secret"), "{general}");
            }
        }
    }

    /// What [`AccessLine::write`] puts into the log buffer without an event is what the
    /// general formatter writes for the event [`AccessLine::trace`] logs.
    #[test]
    fn direct_lines_are_byte_for_byte_the_general_formatters() {
        let line = |path, latency_ms, duration_ms, bytes, outcome| AccessLine {
            method: "GET",
            path,
            status: 200,
            latency_ms,
            duration_ms,
            bytes,
            outcome,
        };
        let lines = [
            line("/x", 0.0, 0.1, 4, "complete"),
            line("/q\"uote\\", 12.5, 1234.5, u64::MAX, "client_closed"),
            AccessLine {
                method: "PROPFIND",
                status: 599,
                ..line("/caf\u{e9}/%7Bx%7D", 1e20, 0.25, 0, "upstream_error")
            },
            line("/", -1.5, f64::NAN, 1, "tab\there \u{1b}[31m"),
            line("/inf", f64::INFINITY, 1e-7, 2, "complete"),
        ];
        for style in [Style::Text, Style::Json] {
            for ansi in [false, true] {
                let out = written(style, ansi, || lines.iter().for_each(AccessLine::trace));
                let general = timeless(&out.general);
                assert_eq!(general.lines().count(), lines.len(), "{general}");
                let mut direct = String::new();
                for access in &lines {
                    let mut text = String::new();
                    assert!(access.write(&mut text, style, ansi), "{access:?}");
                    direct.push_str(&text);
                }
                assert_eq!(timeless(&direct), general, "{style:?}, ansi {ansi}");
            }
        }
    }

    #[test]
    fn the_text_access_line_reads_as_pinned() {
        let out = written(Style::Text, false, || {
            fixed_access_event("/q\"uote\\", 0.3, "complete")
        });
        let expected = "TIME  INFO request method=GET path=/q\"uote\\ status=200 \
                        latency_ms=0.3 duration_ms=12.0 bytes=4 outcome=\"complete\"\n";
        assert_eq!(timeless(&out.fast), expected);
        assert_eq!(timeless(&out.access), expected);
        assert_eq!(timeless(&out.general), expected);
    }

    #[test]
    fn the_coloured_access_line_reads_as_pinned() {
        let out = written(Style::Text, true, || {
            fixed_access_event("/x", 12.5, "complete")
        });
        let field = |name: &str, value: &str| format!("\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m{value}");
        let expected = format!(
            "\x1b[2mTIME\x1b[0m \x1b[32m INFO\x1b[0m request {} {} {} {} {} {} {}\n",
            field("method", "GET"),
            field("path", "/x"),
            field("status", "200"),
            field("latency_ms", "12.5"),
            field("duration_ms", "12.0"),
            field("bytes", "4"),
            field("outcome", "\"complete\""),
        );
        assert_eq!(timeless(&out.fast), expected);
        assert_eq!(timeless(&out.general), expected);
    }

    #[test]
    fn the_json_access_line_reads_as_pinned_and_parses() {
        let out = written(Style::Json, false, || {
            fixed_access_event("/q\"uote\\", 0.3, "complete")
        });
        let expected = "{\"timestamp\":\"TIME\",\"level\":\"INFO\",\"message\":\"request\",\
                        \"method\":\"GET\",\"path\":\"/q\\\"uote\\\\\",\"status\":200,\
                        \"latency_ms\":0.3,\"duration_ms\":12.0,\"bytes\":4,\
                        \"outcome\":\"complete\",\"target\":\"dcos_token_proxy::access\"}\n";
        assert_eq!(timeless(&out.fast), expected);
        assert_eq!(timeless(&out.general), expected);
        let parsed: serde_json::Value = serde_json::from_str(out.fast.trim()).unwrap();
        assert_eq!(parsed["path"], "/q\"uote\\");
        assert_eq!(parsed["latency_ms"], 0.3);
    }

    #[test]
    fn odd_values_are_written_as_the_general_formatter_writes_them() {
        for style in [Style::Text, Style::Json] {
            for ansi in [false, true] {
                let out = written(style, ansi, || {
                    // Floats that are not whole tenths, or not numbers at all.
                    for latency in [0.25, -0.0, -1.5, 1e20, 1e-7, f64::NAN, f64::INFINITY] {
                        fixed_access_event("/x", latency, "complete");
                    }
                    // Escapes in strings and in the message.
                    fixed_access_event("/x", 0.1, "tab\there \"quoted\" \u{1b}[31m");
                    tracing::info!(target: ACCESS_TARGET, n = -42i64, yes = true, "red \u{1b}[31m \u{9b}");
                    tracing::info!(target: ACCESS_TARGET, big = u128::MAX, bytes = &b"\x01"[..]);
                });
                let general = timeless(&out.general);
                assert_eq!(general.lines().count(), 10, "{general}");
                assert_eq!(timeless(&out.fast), general, "{style:?}, ansi {ansi}");
                assert_eq!(timeless(&out.access), general, "{style:?}, ansi {ansi}");
            }
        }
    }

    #[test]
    fn other_events_and_access_events_in_spans_or_with_errors_take_the_general_path() {
        let error = std::io::Error::other("outer");
        for style in [Style::Text, Style::Json] {
            for ansi in [false, true] {
                let out = written(style, ansi, || {
                    tracing::info!(listen = "127.0.0.1:1", "proxy ready");
                    tracing::warn!(target: ACCESS_TARGET, "not at INFO");
                    tracing::info!(target: ACCESS_TARGET, error = &error as &(dyn std::error::Error + 'static), "with an error");
                    let span = tracing::info_span!("conn", peer = "127.0.0.1:2");
                    let _entered = span.enter();
                    fixed_access_event("/in-a-span", 0.3, "complete");
                });
                let general = timeless(&out.general);
                assert_eq!(general.lines().count(), 4, "{general}");
                assert_eq!(timeless(&out.access), general, "{style:?}, ansi {ansi}");
                // The fast path alone cannot write an error's sources (text) and knows
                // nothing of spans: these lines need the general formatter.
                assert_ne!(timeless(&out.fast), general, "{style:?}, ansi {ansi}");
                assert!(
                    general.contains("in-a-span") && general.contains("conn"),
                    "{general}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn latencies_are_written_as_debug_and_serde_json_write_them(nanos in 0u64..10_000_000_000_000_000) {
            let ms = millis(Duration::from_nanos(nanos));
            let mut text = String::new();
            push_f64(&mut text, ms);
            prop_assert!(tenths(ms).is_some(), "{ms} took the slow path");
            prop_assert_eq!(&text, &format!("{ms:?}"));
            prop_assert_eq!(&text, &serde_json::to_string(&ms).unwrap());
        }

        #[test]
        fn integers_are_written_as_display_writes_them(n in any::<u64>(), i in any::<i64>()) {
            let mut text = String::new();
            push_u64(&mut text, n);
            prop_assert_eq!(text, n.to_string());
            let mut text = String::new();
            push_i64(&mut text, i);
            prop_assert_eq!(text, i.to_string());
        }

        #[test]
        fn strings_are_escaped_as_debug_and_serde_json_escape_them(s in any::<String>()) {
            let mut debug = String::new();
            push_debug_str(&mut debug, &s);
            prop_assert_eq!(debug, format!("{s:?}"));
            let mut json = String::from("\"");
            push_json_escaped(&mut json, &s);
            json.push('"');
            prop_assert_eq!(json, serde_json::to_string(&s).unwrap());
        }
    }
}
