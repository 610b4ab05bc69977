//! The business of orders: what an order is, what makes one valid, and how its status may
//! change. Nothing here knows about HTTP or storage.

mod export;
mod order;
mod values;

pub use export::{
    ExportFailure, ExportFormat, ExportId, ExportJob, ExportStatus, render as render_export,
};

pub use order::{
    ItemInput, LineItem, MAX_ITEMS, NewOrder, Order, OrderChange, OrderStatus, TransitionError,
    parse_items,
};
pub use values::{Currency, OrderId, PageSize, Quantity, Sku, UnitPrice};

/// One problem found while validating input, named by the path of the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
