//! Value types that can only hold valid values: once parsed, nobody re-checks them.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// `o_` followed by a UUIDv7 in hex: unique, and sorting by id sorts by creation time, which
/// gives listings a stable order in every store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(String);

impl OrderId {
    pub fn generate() -> Self {
        Self(format!("o_{}", uuid::Uuid::now_v7().simple()))
    }

    /// Accepts only ids this service could have issued; anything else cannot name an order.
    pub fn parse(value: &str) -> Option<Self> {
        let hex = value.strip_prefix("o_")?;
        (hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OrderId {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or("an order id is o_ and 32 lower-case hex digits")
    }
}

impl From<OrderId> for String {
    fn from(id: OrderId) -> Self {
        id.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1 to 64 of `A-Z a-z 0-9 - _`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub fn parse(value: &str) -> Result<Self, String> {
        let valid_chars = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if value.is_empty() || value.len() > 64 || !valid_chars {
            return Err("must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'".to_owned());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<Sku> for String {
    fn from(value: Sku) -> Self {
        value.0
    }
}

/// 1 to 10 000 units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 10_000;

    pub fn parse(value: i64) -> Result<Self, String> {
        match u32::try_from(value) {
            Ok(q) if (1..=Self::MAX).contains(&q) => Ok(Self(q)),
            _ => Err(format!("must be between 1 and {}", Self::MAX)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        Self::parse(value)
    }
}

impl From<Quantity> for u32 {
    fn from(value: Quantity) -> Self {
        value.0
    }
}

/// How many orders one page of a listing holds: 1 to 100, 50 unless asked otherwise. Read from
/// a number or from text (a query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u8);

impl PageSize {
    pub const MAX: u8 = 100;
    const EXPECTED: &'static str = "must be a whole number from 1 to 100";

    pub fn get(self) -> usize {
        usize::from(self.0)
    }

    fn new(value: u64) -> Result<Self, &'static str> {
        u8::try_from(value)
            .ok()
            .filter(|n| (1..=Self::MAX).contains(n))
            .map(Self)
            .ok_or(Self::EXPECTED)
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self(50)
    }
}

impl<'de> Deserialize<'de> for PageSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PageSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PageSize::EXPECTED)
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<PageSize, E> {
                PageSize::new(value).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<PageSize, E> {
                let value = u64::try_from(value).map_err(|_| E::custom(PageSize::EXPECTED))?;
                self.visit_u64(value)
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<PageSize, E> {
                let value: u64 = value.parse().map_err(|_| E::custom(PageSize::EXPECTED))?;
                self.visit_u64(value)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// An ISO 4217 alphabetic code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(value.to_owned()))
        } else {
            Err("must be an ISO 4217 code of three upper-case letters, such as EUR".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

/// A non-negative price with at most 4 decimal places, kept exact as a decimal and written as a
/// decimal string (`"9.99"`): money never passes through floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitPrice(Decimal);

impl UnitPrice {
    pub const MAX_SCALE: u32 = 4;

    /// `0` or a whole number without leading zeros of at most 9 digits, then optionally `.` and
    /// 1 to 4 digits: at most 999999999.9999. The OpenAPI pattern says the same.
    pub fn parse(value: &str) -> Result<Self, String> {
        let (whole, fraction) = match value.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (value, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let whole_ok =
            digits(whole) && whole.len() <= 9 && (whole == "0" || !whole.starts_with('0'));
        let fraction_ok = fraction.is_none_or(|f| digits(f) && f.len() <= Self::MAX_SCALE as usize);
        let amount = (whole_ok && fraction_ok)
            .then(|| Decimal::from_str(value).ok())
            .flatten();
        amount.map(Self).ok_or_else(|| {
            "must be a decimal string such as \"9.99\": up to 9 digits without leading zeros, then up to 4 decimal places".to_owned()
        })
    }

    pub fn amount(self) -> Decimal {
        self.0
    }
}

impl TryFrom<String> for UnitPrice {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<UnitPrice> for String {
    fn from(value: UnitPrice) -> Self {
        value.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_round_trip_and_sort_by_creation() {
        let first = OrderId::generate();
        let second = OrderId::generate();
        assert_eq!(OrderId::parse(first.as_str()), Some(first.clone()));
        assert!(first < second);
        assert_eq!(OrderId::parse("o_123"), None);
        assert_eq!(OrderId::parse("../etc/passwd"), None);
    }

    #[test]
    fn skus() {
        assert!(Sku::parse("A-1_b").is_ok());
        assert!(Sku::parse(&"x".repeat(64)).is_ok());
        for bad in ["", "a b", "ä", &"x".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        assert!(Quantity::parse(1).is_ok());
        assert!(Quantity::parse(10_000).is_ok());
        for bad in [0, -1, 10_001, i64::MAX] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currencies() {
        assert!(Currency::parse("EUR").is_ok());
        for bad in ["eur", "EURO", "E1R", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unit_prices_are_exact() {
        assert_eq!(String::from(UnitPrice::parse("9.99").unwrap()), "9.99");
        assert_eq!(String::from(UnitPrice::parse("0").unwrap()), "0");
        assert!(UnitPrice::parse("999999999.9999").is_ok());
        for bad in [
            "-1",
            "1e3",
            "9.99999",
            ".5",
            "5.",
            "1.2.3",
            "NaN",
            "",
            "1000000000",
            "007",
            "+1",
            " 1",
        ] {
            assert!(UnitPrice::parse(bad).is_err(), "{bad}");
        }
    }
}
