//! The in-memory stores: the development default, and the reference the Azure stores are
//! tested against. They keep the same promises: fresh ETags on every write, atomic conditional
//! writes, at-least-once delivery with a visibility timeout.

mod exports;
mod keys;
mod orders;

pub use exports::{MemoryExportStore, MemoryJobQueue};
pub use orders::MemoryOrderStore;
