//! How log lines are written, in both formats, so that what a client sent can never forge or
//! break one.
//!
//! - Text ([`EscapedFields`]): every field, the message included, has its control characters
//!   (and the Unicode line separators and bidirectional overrides, which can hide or reorder
//!   text on a screen) written as escapes: a `%0d%0a` in a path stays on its line.
//! - JSON ([`JsonLines`]): one object per line, always. serde_json escapes C0 controls in
//!   strings; the characters it leaves raw (DEL, C1, separators, overrides) are escaped too, and
//!   a field name that would repeat a key (`message` twice, a field called `level`) is written
//!   as `<name>.<n>` instead of producing a second key with the same name.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether `c` must not reach a log line as it is.
fn is_hazardous(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}'                          // line and paragraph separators
            | '\u{061c}' | '\u{200e}' | '\u{200f}'           // direction marks
            | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') // bidirectional overrides
}

/// `text` with hazardous characters written as Rust-style escapes (`\n`, `\u{1b}`).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hazardous) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_hazardous(c) => {
                // infallible: writing to a String.
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Field formatting for text logs: `message name=value ...` like tracing's default, with every
/// value escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'writer> {
    writer: Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl TextVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{}", escape(value))
        } else {
            write!(self.writer, "{separator}{}={}", field.name(), escape(value))
        };
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            // Quoted, as tracing writes strings: where a value ends stays visible.
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

/// Event formatting for JSON logs (with tracing-subscriber's `JsonFields` for spans):
/// `timestamp`, `level`, the event's fields (the message first), `target`, and the spans it
/// happened in (`span`, the innermost, and `spans`), as one object with unique keys on one line.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Line::default();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.push("timestamp", Value::from(now));
        line.push("level", Value::from(meta.level().as_str()));
        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        // The message first, where a reader looks for it.
        fields.0.sort_by_key(|(name, _)| *name != "message");
        for (name, value) in fields.0 {
            line.push(name, value);
        }
        line.push("target", Value::from(meta.target()));
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let mut object = span
                        .extensions()
                        .get::<FormattedFields<N>>()
                        .and_then(|f| serde_json::from_str::<serde_json::Map<_, _>>(f).ok())
                        .unwrap_or_default();
                    object.insert("name".to_owned(), Value::from(span.name()));
                    Value::Object(object)
                })
                .collect();
            if let Some(innermost) = spans.last() {
                line.push("span", innermost.clone());
            }
            line.push("spans", Value::Array(spans));
        }
        writeln!(writer, "{}", line.finish())
    }
}

/// A JSON object being written, which never repeats a key.
#[derive(Default)]
struct Line {
    members: Vec<(String, Value)>,
    names: HashSet<String>,
}

impl Line {
    fn push(&mut self, name: &str, value: Value) {
        let mut key = name.to_owned();
        let mut n = 1;
        while self.names.contains(&key) {
            n += 1;
            key = format!("{name}.{n}");
        }
        self.names.insert(key.clone());
        self.members.push((key, value));
    }

    fn finish(self) -> String {
        let mut text = String::from("{");
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            // infallible: strings and JSON values always serialise.
            text.push_str(&serde_json::to_string(key).unwrap_or_default());
            text.push(':');
            text.push_str(&serde_json::to_string(value).unwrap_or_default());
        }
        text.push('}');
        // What serde_json leaves raw can only be inside strings, where a \u escape means the
        // same character.
        if text.chars().any(is_hazardous) {
            text = text
                .chars()
                .map(|c| {
                    if is_hazardous(c) {
                        format!("\\u{:04x}", u32::from(c))
                    } else {
                        c.to_string()
                    }
                })
                .collect();
        }
        text
    }
}

/// An event's fields as JSON values, in the order they were recorded.
#[derive(Default)]
struct JsonVisitor(Vec<(&'static str, Value)>);

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .push((field.name(), Value::from(format!("{value:?}"))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_invisible_reorderings_are_escaped() {
        assert_eq!(escape("plain text: ok"), "plain text: ok");
        assert_eq!(
            escape("x\r\nINFO forged line\u{1b}[2J"),
            "x\\r\\nINFO forged line\\u{1b}[2J"
        );
        assert_eq!(
            escape("a\u{2028}b\u{202e}c\u{85}"),
            "a\\u{2028}b\\u{202e}c\\u{85}"
        );
    }

    #[test]
    fn json_lines_never_repeat_a_key_and_escape_what_serde_json_leaves() {
        let mut line = Line::default();
        line.push("message", Value::from("request rejected"));
        line.push("message", Value::from("Order 'x\r\n\u{85}' was not found."));
        line.push("level", Value::from("DEBUG"));
        line.push("message", Value::from("third"));
        let text = line.finish();
        assert_eq!(
            text,
            r#"{"message":"request rejected","message.2":"Order 'x\r\n\u0085' was not found.","level":"DEBUG","message.3":"third"}"#
        );
        assert!(serde_json::from_str::<Value>(&text).is_ok());
    }
}
