use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Currency, OrderId, Quantity, Sku, UnitPrice, Violation};

pub const MAX_ITEMS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: UnitPrice,
}

/// Where an order is in its life. Read from text (queries, bodies, storage) only as one of its
/// lower-case names, with [`OrderStatus::EXPECTED`] as the one message for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum OrderStatus {
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        Self::Pending,
        Self::Paid,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    /// What a status must be, for error details.
    pub const EXPECTED: &'static str =
        "must be one of pending, paid, shipped, delivered, cancelled";

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// pending → paid → shipped → delivered, and pending | paid → cancelled. Staying in the
    /// same status is allowed, so repeating a PATCH is harmless.
    pub fn can_become(self, next: Self) -> bool {
        use OrderStatus::*;
        self == next
            || matches!(
                (self, next),
                (Pending, Paid)
                    | (Paid, Shipped)
                    | (Shipped, Delivered)
                    | (Pending | Paid, Cancelled)
            )
    }
}

impl TryFrom<String> for OrderStatus {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or(Self::EXPECTED)
    }
}

/// A validated request to create an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub items: Vec<LineItem>,
    pub currency: Currency,
}

/// Raw line item fields as received, before validation.
pub struct ItemInput<'a> {
    pub sku: &'a str,
    pub quantity: i64,
    pub unit_price: &'a str,
}

impl NewOrder {
    /// Validates everything at once so the client sees every problem in one answer.
    pub fn parse(items: &[ItemInput<'_>], currency: &str) -> Result<Self, Vec<Violation>> {
        let mut violations = Vec::new();
        let items = parse_items(items, &mut violations);
        let currency = Currency::parse(currency)
            .map_err(|m| violations.push(Violation::new("currency", m)))
            .ok();
        match (items, currency) {
            (Some(items), Some(currency)) if violations.is_empty() => Ok(Self { items, currency }),
            _ => Err(violations),
        }
    }
}

pub fn parse_items(
    inputs: &[ItemInput<'_>],
    violations: &mut Vec<Violation>,
) -> Option<Vec<LineItem>> {
    if inputs.is_empty() {
        violations.push(Violation::new("items", "must contain at least one item"));
        return None;
    }
    if inputs.len() > MAX_ITEMS {
        violations.push(Violation::new(
            "items",
            format!("must contain at most {MAX_ITEMS} items"),
        ));
        return None;
    }
    let before = violations.len();
    let mut items = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let sku = Sku::parse(input.sku)
            .map_err(|m| violations.push(Violation::new(format!("items[{i}].sku"), m)));
        let quantity = Quantity::parse(input.quantity)
            .map_err(|m| violations.push(Violation::new(format!("items[{i}].quantity"), m)));
        let unit_price = UnitPrice::parse(input.unit_price)
            .map_err(|m| violations.push(Violation::new(format!("items[{i}].unitPrice"), m)));
        if let (Ok(sku), Ok(quantity), Ok(unit_price)) = (sku, quantity, unit_price) {
            items.push(LineItem {
                sku,
                quantity,
                unit_price,
            });
        }
    }
    (violations.len() == before).then_some(items)
}

/// A stored order. `etag` is the store's version token, opaque to everyone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: OrderId,
    pub owner: String,
    pub items: Vec<LineItem>,
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    pub status: OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub etag: String,
}

impl Order {
    pub fn create(owner: &str, new: NewOrder, now: OffsetDateTime) -> Self {
        let total = total_of(&new.items);
        Self {
            id: OrderId::generate(),
            owner: owner.to_owned(),
            items: new.items,
            currency: new.currency,
            total,
            status: OrderStatus::Pending,
            created_at: now,
            updated_at: now,
            etag: String::new(),
        }
    }

    /// Applies a change, or says why it is not allowed. Items and currency may change only
    /// while the order is pending; status moves only along the allowed transitions.
    pub fn apply(&self, change: OrderChange, now: OffsetDateTime) -> Result<Self, TransitionError> {
        let mut next = self.clone();
        let edits_lines = change.items.is_some() || change.currency.is_some();
        if edits_lines && self.status != OrderStatus::Pending {
            return Err(TransitionError::ItemsLocked {
                status: self.status,
            });
        }
        if let Some(items) = change.items {
            next.total = total_of(&items);
            next.items = items;
        }
        if let Some(currency) = change.currency {
            next.currency = currency;
        }
        if let Some(status) = change.status {
            if !self.status.can_become(status) {
                return Err(TransitionError::Status {
                    from: self.status,
                    to: status,
                });
            }
            next.status = status;
        }
        if next != *self {
            next.updated_at = now;
        }
        Ok(next)
    }
}

fn total_of(items: &[LineItem]) -> Decimal {
    // At most 100 items × 10 000 × 1e9 stays far inside Decimal's 28 digits. The scale of the
    // prices is kept ("1.00" × 1 is "1.00"), as a client writing cents expects cents back.
    items
        .iter()
        .map(|item| item.unit_price.amount() * Decimal::from(item.quantity.get()))
        .sum::<Decimal>()
}

/// A validated partial update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderChange {
    pub status: Option<OrderStatus>,
    pub items: Option<Vec<LineItem>>,
    pub currency: Option<Currency>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("An order cannot go from '{}' to '{}'.", from.as_str(), to.as_str())]
    Status { from: OrderStatus, to: OrderStatus },
    #[error("Items and currency can only change while the order is pending; it is '{}'.", status.as_str())]
    ItemsLocked { status: OrderStatus },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_order() -> NewOrder {
        NewOrder::parse(
            &[
                ItemInput {
                    sku: "A-1",
                    quantity: 2,
                    unit_price: "9.99",
                },
                ItemInput {
                    sku: "B-2",
                    quantity: 3,
                    unit_price: "0.10",
                },
            ],
            "EUR",
        )
        .unwrap()
    }

    #[test]
    fn total_is_exact() {
        let order = Order::create("alice", new_order(), OffsetDateTime::UNIX_EPOCH);
        assert_eq!(order.total.to_string(), "20.28");
        assert_eq!(order.status, OrderStatus::Pending);
    }

    #[test]
    fn every_violation_is_reported() {
        let errors = NewOrder::parse(
            &[ItemInput {
                sku: "bad sku",
                quantity: 0,
                unit_price: "-1",
            }],
            "eur",
        )
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "items[0].sku",
                "items[0].quantity",
                "items[0].unitPrice",
                "currency"
            ]
        );
        assert_eq!(NewOrder::parse(&[], "EUR").unwrap_err()[0].field, "items");
    }

    #[test]
    fn status_machine() {
        use OrderStatus::*;
        let allowed = [
            (Pending, Paid),
            (Paid, Shipped),
            (Shipped, Delivered),
            (Pending, Cancelled),
            (Paid, Cancelled),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let expected = from == to || allowed.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn items_are_locked_after_pending() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let order = Order::create("alice", new_order(), now);
        let paid = order
            .apply(
                OrderChange {
                    status: Some(OrderStatus::Paid),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        let change = OrderChange {
            items: Some(new_order().items),
            ..Default::default()
        };
        assert_eq!(
            paid.apply(change, now).unwrap_err(),
            TransitionError::ItemsLocked {
                status: OrderStatus::Paid
            }
        );
        let back = OrderChange {
            status: Some(OrderStatus::Pending),
            ..Default::default()
        };
        assert!(matches!(
            paid.apply(back, now),
            Err(TransitionError::Status { .. })
        ));
    }
}
