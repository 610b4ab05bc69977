//! The merge patch (RFC 7396) of an order, read member by member into a domain change.

use crate::domain::{self, ItemInput, OrderChange, OrderStatus};
use crate::error::{ApiError, FieldError};

use super::representations::{ItemRequest, item_input};

/// Interprets a merge patch: the members `status`, `items` and `currency`; `null` (removal) is
/// not allowed for any of them and other members are read-only or unknown.
pub(super) fn parse_patch(patch: &serde_json::Value) -> Result<OrderChange, ApiError> {
    let serde_json::Value::Object(members) = patch else {
        return Err(ApiError::validation(vec![FieldError::new(
            "$",
            "a merge patch must be a JSON object",
        )]));
    };
    let mut problems = Vec::new();
    let mut change = OrderChange::default();
    for (name, value) in members {
        if value.is_null() {
            problems.push(FieldError::new(name.as_str(), "cannot be removed"));
            continue;
        }
        match name.as_str() {
            "status" => match value.as_str().and_then(OrderStatus::parse) {
                Some(status) => change.status = Some(status),
                None => problems.push(FieldError::new("status", OrderStatus::EXPECTED)),
            },
            "currency" => match value.as_str().map(domain::Currency::parse) {
                Some(Ok(currency)) => change.currency = Some(currency),
                Some(Err(message)) => problems.push(FieldError::new("currency", message)),
                None => problems.push(FieldError::new("currency", "must be a string")),
            },
            "items" => {
                let parsed: Result<Vec<ItemRequest>, _> = serde_path_to_error::deserialize(value);
                match parsed {
                    Ok(items) => {
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
                            error.into_inner().to_string(),
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
