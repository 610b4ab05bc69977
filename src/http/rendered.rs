//! Response bodies already rendered, for representations that change only with their version
//! (an order and its ETag): an order read again and again is serialized once per version, not
//! once per read.
//!
//! Keyed by the resource's id, holding the body of one version: a newer version replaces it, so a
//! stale body is never served. Whoever asks has already been authorised for the resource, and
//! its representation does not depend on who asks. Bounded by the bytes it holds; when full it
//! starts over, which costs each resource one more rendering.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

pub struct Rendered {
    max_bytes: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<Box<str>, (Box<str>, Bytes)>,
    bytes: usize,
}

impl Rendered {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The body of resource `id` at `version`: as rendered before, or `render`ed now and kept.
    pub fn get_or_render<E>(
        &self,
        id: &str,
        version: &str,
        render: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Bytes, E> {
        if let Some((kept, body)) = self.lock().by_id.get(id)
            && **kept == *version
        {
            return Ok(body.clone());
        }
        // Rendered outside the lock: concurrent readers of other resources do not wait for it.
        let body = Bytes::from(render()?);
        let mut entries = self.lock();
        if entries.bytes + body.len() > self.max_bytes {
            *entries = Entries::default();
        }
        if body.len() <= self.max_bytes {
            entries.bytes += body.len();
            let replaced = entries
                .by_id
                .insert(id.into(), (version.into(), body.clone()));
            if let Some((_, old)) = replaced {
                entries.bytes -= old.len();
            }
        }
        Ok(body)
    }

    /// Bodies held, in bytes.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Each change under the lock leaves the map and its byte count consistent before any
        // code that could panic runs, so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> impl FnOnce() -> Result<Vec<u8>, ()> + '_ {
        move || Ok(text.as_bytes().to_vec())
    }

    #[test]
    fn a_version_is_rendered_once_and_a_new_one_replaces_it() {
        let rendered = Rendered::new(1024);
        assert_eq!(
            rendered.get_or_render("o1", "v1", render("one")).unwrap(),
            "one"
        );
        let again = rendered.get_or_render("o1", "v1", || -> Result<Vec<u8>, ()> {
            panic!("rendered twice")
        });
        assert_eq!(again.unwrap(), "one");
        assert_eq!(
            rendered.get_or_render("o1", "v2", render("two!")).unwrap(),
            "two!"
        );
        assert_eq!(rendered.bytes(), 4, "the old version's body is gone");
        assert_eq!(
            rendered.get_or_render("o2", "v1", render("x")),
            Ok(Bytes::from("x"))
        );
        assert!(
            rendered
                .get_or_render("o3", "v1", || Err::<Vec<u8>, _>("no"))
                .is_err()
        );
    }

    #[test]
    fn the_bytes_held_are_bounded() {
        let rendered = Rendered::new(10);
        for i in 0..100 {
            let id = format!("o{i}");
            rendered.get_or_render(&id, "v", render("abcd")).unwrap();
            assert!(rendered.bytes() <= 10);
        }
        // Larger than the bound: served, not kept.
        let big = "x".repeat(11);
        assert_eq!(
            rendered.get_or_render("big", "v", render(&big)).unwrap(),
            big
        );
        assert!(rendered.bytes() <= 10);
    }
}
