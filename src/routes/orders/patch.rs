//! The merge patch (RFC 7396) of an order, read member by member into a domain change.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::domain::{self, ItemInput, OrderChange, OrderStatus};
use crate::error::{ApiError, FieldError};
use crate::http::json::without_position;
use crate::http::strict::Objects;

use super::representations::{ItemRequest, item_input};

/// Interprets a merge patch: the members `status`, `items` and `currency`; `null` (removal) is
/// not allowed for any of them and other members are read-only or unknown. Members are read
/// from their exact text, so numbers keep every digit the client wrote.
pub(super) fn parse_patch(patch: &RawValue) -> Result<OrderChange, ApiError> {
    let Ok(members) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(patch.get()) else {
        return Err(ApiError::validation(vec![FieldError::new(
            "$",
            "a merge patch must be a JSON object",
        )]));
    };
    let mut problems = Vec::new();
    let mut change = OrderChange::default();
    for (name, value) in &members {
        if value.get() == "null" {
            problems.push(FieldError::new(name.as_str(), "cannot be removed"));
            continue;
        }
        let text = || serde_json::from_str::<String>(value.get()).ok();
        match name.as_str() {
            "status" => match text().as_deref().and_then(OrderStatus::parse) {
                Some(status) => change.status = Some(status),
                None => problems.push(FieldError::new("status", OrderStatus::EXPECTED)),
            },
            "currency" => match text().as_deref().map(domain::Currency::parse) {
                Some(Ok(currency)) => change.currency = Some(currency),
                Some(Err(message)) => problems.push(FieldError::new("currency", message)),
                None => problems.push(FieldError::new("currency", "must be a string")),
            },
            "items" => {
                let mut reader = serde_json::Deserializer::from_str(value.get());
                let parsed: Result<Objects<ItemRequest>, _> =
                    serde_path_to_error::deserialize(&mut reader);
                match parsed {
                    Ok(Objects(items)) => {
                        let inputs: Vec<ItemInput<'_>> = items.iter().map(item_input).collect();
                        let mut violations = Vec::new();
                        match domain::parse_items(&inputs, &mut violations) {
                            Some(items) => change.items = Some(items),
                            None => problems.extend(
                                violations
                                    .into_iter()
                                    .map(|v| FieldError::new(v.field, v.message)),
                            ),
                        }
                    }
                    Err(error) => {
                        let path = error.path().to_string();
                        problems.push(FieldError::new(
                            format!(
                                "items{}",
                                if path == "." {
                                    String::new()
                                } else {
                                    format!(
                                        "{}{path}",
                                        if path.starts_with('[') { "" } else { "." }
                                    )
                                }
                            ),
                            without_position(&error.into_inner().to_string()),
                        ));
                    }
                }
            }
            "id" | "total" | "createdAt" | "updatedAt" => {
                problems.push(FieldError::new(name.as_str(), "is read-only"));
            }
            _ => problems.push(FieldError::new(
                name.as_str(),
                "is not a member of an order",
            )),
        }
    }
    if problems.is_empty() {
        Ok(change)
    } else {
        Err(ApiError::validation(problems))
    }
}
