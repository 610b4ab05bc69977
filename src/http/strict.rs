//! Stricter JSON than serde's defaults, for what clients send.
//!
//! - serde's derived structs also read an array of their fields in order, so
//!   `[[["A-1",2,"9.99"]],"EUR"]` was an order. [`ObjectOnly`] reads a struct from an object
//!   only; [`parse`](super::json::parse) applies it to every body, and [`Objects`] to the
//!   elements of an array.
//! - A JSON number goes through `f64` on its way to an integer, so `1.0000000000000000001`
//!   became one. [`whole_number`] reads the number's exact text instead (serde_json's
//!   `RawValue`: the feature is already on, and `arbitrary_precision` would change every number
//!   in every crate that uses serde_json, for this one field). `2.0` stays a valid 2: JSON
//!   Schema's `integer` is any number without a fractional part.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// A deserializer that reads structs from JSON objects only; everything else as `D` does.
pub struct ObjectOnly<D>(pub D);

macro_rules! forward {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method(visitor)
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    forward! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(ObjectVisitor(visitor))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // Passed on with its name: serde_json's RawValue is a newtype struct it recognises.
        self.0.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A struct's visitor that says what the client must send: an object.
struct ObjectVisitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for ObjectVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map)
    }
}

/// A JSON array of objects, each read as a `T`.
#[derive(Debug)]
pub struct Objects<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Objects<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_seq(Elements(PhantomData))
            .map(Objects)
    }
}

impl<T: Serialize> Serialize for Objects<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

struct Elements<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Elements<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // The hint is the client's; the body limit bounds the rest.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(128));
        while let Some(item) = seq.next_element_seed(Element(PhantomData))? {
            items.push(item);
        }
        Ok(items)
    }
}

struct Element<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Element<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize(ObjectOnly(deserializer))
    }
}

/// `deserialize_with` for integers: any JSON number whose exact value is whole (`2`, `2.0`,
/// `2e0`, `20E-1`); a fractional part however small is an error, never rounded away. Whole
/// numbers beyond `i64` saturate, for range checks to refuse.
pub fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    exact_whole_number(raw.get()).map_err(serde::de::Error::custom)
}

fn exact_whole_number(text: &str) -> Result<i64, String> {
    let Some(number) = NumberText::parse(text) else {
        // Not a number at all: serde_json says what it is, as it always did.
        return match serde_json::from_str::<serde_json::Number>(text) {
            Ok(_) => Err(format!("invalid value: {text}, expected a whole number")),
            Err(error) => Err(super::json::without_position(&error.to_string())),
        };
    };
    number.whole().ok_or_else(|| {
        format!(
            "invalid value: {}, expected a whole number",
            crate::error::quoted(text)
        )
    })
}

/// A JSON number as written: `-? int (. frac)? ([eE] [+-]? exp)?`.
struct NumberText<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
    exponent: i64,
}

impl<'a> NumberText<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => {
                let digits = &rest[at + 1..];
                let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                // Beyond any digit count a body can hold: clamp rather than overflow.
                let magnitude = unsigned.parse::<i64>().unwrap_or(i64::MAX / 2).min(1 << 40);
                let exponent = if digits.starts_with('-') {
                    -magnitude
                } else {
                    magnitude
                };
                (&rest[..at], exponent)
            }
            None => (rest, 0),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((int, frac)) if !frac.is_empty() => (int, frac),
            Some(_) => return None,
            None => (mantissa, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let valid_int = !int.is_empty() && digits(int) && (int == "0" || !int.starts_with('0'));
        (valid_int && digits(frac)).then_some(Self {
            negative,
            int,
            frac,
            exponent,
        })
    }

    /// The value when it is whole, saturated to `i64`.
    fn whole(&self) -> Option<i64> {
        let digits: Vec<u8> = self.int.bytes().chain(self.frac.bytes()).collect();
        // Where the decimal point falls among the digits once the exponent is applied.
        let point = i64::try_from(self.int.len())
            .ok()?
            .saturating_add(self.exponent);
        let split = usize::try_from(point.max(0)).unwrap_or(usize::MAX);
        if digits.iter().skip(split).any(|&d| d != b'0') {
            return None;
        }
        let mut value: i64 = 0;
        for &digit in digits.iter().take(split) {
            value = value
                .saturating_mul(10)
                .saturating_add(i64::from(digit - b'0'));
        }
        // Zeros the exponent adds past the written digits: twenty saturate any non-zero value.
        for _ in 0..split.saturating_sub(digits.len()).min(20) {
            value = value.saturating_mul(10);
        }
        Some(if self.negative { -value } else { value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_by_their_exact_text() {
        for (text, expected) in [
            ("2", 2),
            ("2.0", 2),
            ("2.000", 2),
            ("2e0", 2),
            ("20E-1", 2),
            ("0.2e1", 2),
            ("-3", -3),
            ("0", 0),
            ("1e3", 1000),
            ("1e400", i64::MAX),
            ("-1e30", -i64::MAX),
            ("0e999999999999", 0),
        ] {
            assert_eq!(exact_whole_number(text), Ok(expected), "{text}");
        }
        for text in [
            "1.0000000000000000001",
            "1.5",
            "2.5e0",
            "0.5",
            "1e-400",
            "10000.000000000000000000000000000000001",
        ] {
            let error = exact_whole_number(text).unwrap_err();
            assert!(error.contains("expected a whole number"), "{text}: {error}");
        }
    }

    #[test]
    fn other_values_keep_serde_json_s_message() {
        assert_eq!(
            exact_whole_number("\"two\"").unwrap_err(),
            "invalid type: string \"two\", expected a JSON number"
        );
        assert!(
            exact_whole_number("[1]")
                .unwrap_err()
                .starts_with("invalid type")
        );
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Pair {
        a: u32,
        b: Objects<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        c: u32,
    }

    fn read(text: &str) -> Result<Pair, serde_json::Error> {
        Pair::deserialize(ObjectOnly(&mut serde_json::Deserializer::from_str(text)))
    }

    #[test]
    fn structs_are_objects_only() {
        assert!(read(r#"{"a": 1, "b": [{"c": 2}]}"#).is_ok());
        let top = read(r#"[1, [{"c": 2}]]"#).unwrap_err().to_string();
        assert!(top.contains("expected a JSON object"), "{top}");
        let inner = read(r#"{"a": 1, "b": [[2]]}"#).unwrap_err().to_string();
        assert!(inner.contains("expected a JSON object"), "{inner}");
    }
}
